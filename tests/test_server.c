/*
 * test_server.c — integration tests of kvd: each case starts the real
 * daemon ($KVD, default build/kvd) on a temp directory and socket, talks
 * the wire protocol with raw sockets and the generated kv.pb-c code, and
 * always stops it by pid in the cmocka teardown (even after a failed
 * assertion). Every loop is bounded in count and time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sys/mount.h>

#include "kv_test_daemon.h"
#include "kvclient.h"

#define ST_OK 0
#define ST_INVALID_ARGUMENT 3
#define ST_NOT_FOUND 5
#define ST_RESOURCE_EXHAUSTED 8
#define ST_UNIMPLEMENTED 12
#define ST_UNAVAILABLE 14

struct ctx {
	struct kvtd d, d2;
	char mnt[256]; /* a tmpfs mounted by the test, unmounted by teardown */
	struct kvt_conns conns;
	int plain_io; /* start kvd with --io-uring no (setup_plain) */
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof *c);
	if (!c)
		return -1;
	*state = c;
	return 0;
}

/* The same tests on kvd's other I/O path: one system call per read and
 * write instead of io_uring batches (kvd uses the batches by default). */
static int setup_plain(void **state)
{
	int rc = setup(state);
	if (rc == 0)
		((struct ctx *)*state)->plain_io = 1;
	return rc;
}

/* Stops both daemons and checks their runs (kvtd_stop_and_check). */
static int teardown(void **state)
{
	struct ctx *c = *state;
	kvt_conns_close_all(&c->conns);
	if (c->mnt[0]) { /* its daemon may fail its last sync: exit code is the test's */
		kvtd_stop(&c->d);
		umount(c->mnt);
	}
	int rc = kvtd_teardown(&c->d, &c->d2);
	free(c);
	return rc;
}

static void start(struct ctx *c, const char *tag, const char *const *extra)
{
	const char *args[16];
	size_t n = 0;
	if (c->plain_io) {
		args[n++] = "--io-uring";
		args[n++] = "no";
	}
	for (size_t i = 0; extra && extra[i] && n < 15; i++)
		args[n++] = extra[i];
	args[n] = NULL;
	int rc = kvtd_start(&c->d, tag, args);
	if (rc < 0)
		fail_msg("kvd did not start (log %s)", c->d.log);
}

/* ---- request helpers -------------------------------------------------------------- */

static void buf_put(struct kvt_buf *b, uint64_t id, const void *k, size_t kl, const void *v,
		    size_t vl, uint32_t ttl, int sync)
{
	Kv__PutRequest rq = KV__PUT_REQUEST__INIT;
	rq.key.data = (uint8_t *)k;
	rq.key.len = kl;
	rq.value.data = (uint8_t *)v;
	rq.value.len = vl;
	rq.ttl_seconds = ttl;
	rq.sync = sync;
	kvt_buf_frame(b, id, "Put", &rq.base);
}

static void buf_get(struct kvt_buf *b, uint64_t id, const void *k, size_t kl)
{
	Kv__GetRequest rq = KV__GET_REQUEST__INIT;
	rq.key.data = (uint8_t *)k;
	rq.key.len = kl;
	kvt_buf_frame(b, id, "Get", &rq.base);
}

static void send_buf(int fd, struct kvt_buf *b)
{
	assert_int_equal(kvt_write_all(fd, b->p, b->len), 0);
	kvt_buf_free(b);
}

/* Receive one reply; fail the test when none arrives. */
static Kv__Envelope *recv_ok(int fd)
{
	Kv__Envelope *e = kvt_recv(fd);
	if (!e)
		fail_msg("no reply from kvd");
	return e;
}

static uint32_t put_s(int fd, uint64_t id, const char *k, const void *v, size_t vl, int sync)
{
	struct kvt_buf b = { 0 };
	buf_put(&b, id, k, strlen(k), v, vl, 0, sync);
	send_buf(fd, &b);
	Kv__Envelope *e = recv_ok(fd);
	assert_int_equal(e->id, id);
	assert_string_equal(e->method, "Put");
	assert_true(e->end_of_stream);
	uint32_t st = e->status_code;
	kv__envelope__free_unpacked(e, NULL);
	return st;
}

/* Get k: returns the status; on OK, *val (malloc'ed, caller frees) and *vl. */
static uint32_t get_s(int fd, uint64_t id, const void *k, size_t kl, uint8_t **val, size_t *vl,
		      uint64_t *expires)
{
	struct kvt_buf b = { 0 };
	buf_get(&b, id, k, kl);
	send_buf(fd, &b);
	Kv__Envelope *e = recv_ok(fd);
	assert_int_equal(e->id, id);
	uint32_t st = e->status_code;
	if (val)
		*val = NULL;
	if (st == ST_OK) {
		Kv__GetReply *r = kv__get_reply__unpack(NULL, e->payload.len, e->payload.data);
		assert_non_null(r);
		if (val) {
			*val = malloc(r->value.len + 1);
			if (r->value.len)
				memcpy(*val, r->value.data, r->value.len);
			*vl = r->value.len;
		}
		if (expires)
			*expires = r->expires_at;
		kv__get_reply__free_unpacked(r, NULL);
	} else {
		assert_true(e->status_message && *e->status_message);
	}
	kv__envelope__free_unpacked(e, NULL);
	return st;
}

static void assert_get_eq(int fd, uint64_t id, const char *k, const void *v, size_t vl)
{
	uint8_t *got = NULL;
	size_t gl = 0;
	uint32_t st = get_s(fd, id, k, strlen(k), &got, &gl, NULL);
	if (st != ST_OK)
		fail_msg("Get %s: status %u", k, st);
	assert_int_equal(gl, vl);
	if (vl)
		assert_memory_equal(got, v, vl);
	free(got);
}

static Kv__StatsReply *stats(int fd, uint64_t id)
{
	Kv__StatsRequest rq = KV__STATS_REQUEST__INIT;
	Kv__Envelope *e = kvt_call(fd, id, "Stats", &rq.base);
	assert_non_null(e);
	assert_int_equal(e->status_code, ST_OK);
	Kv__StatsReply *r = kv__stats_reply__unpack(NULL, e->payload.len, e->payload.data);
	assert_non_null(r);
	kv__envelope__free_unpacked(e, NULL);
	return r;
}

static void ping_ok(int fd, uint64_t id)
{
	Kv__PingRequest rq = KV__PING_REQUEST__INIT;
	Kv__Envelope *e = kvt_call(fd, id, "Ping", &rq.base);
	if (!e)
		fail_msg("Ping %llu: no reply", (unsigned long long)id);
	assert_int_equal(e->id, id);
	assert_int_equal(e->status_code, ST_OK);
	Kv__PingReply *r = kv__ping_reply__unpack(NULL, e->payload.len, e->payload.data);
	assert_non_null(r);
	assert_string_equal(r->version, "0.1.0");
	kv__ping_reply__free_unpacked(r, NULL);
	kv__envelope__free_unpacked(e, NULL);
}

/* A fresh connection answers Ping and the process is alive. */
static void daemon_alive(struct ctx *c)
{
	assert_true(c->d.pid > 0);
	assert_int_equal(kill(c->d.pid, 0), 0);
	int fd = kvt_conn(&c->conns, c->d.sock);
	ping_ok(fd, 4242);
	kvt_conns_close(&c->conns, fd);
}

/* Read Scan replies for id until end_of_stream; counts items into *n and
 * messages into *msgs; calls seen(key) for each. Returns the final status. */
static uint32_t scan_collect(int fd, uint64_t id, size_t *n, size_t *msgs, char **keys,
			     size_t maxkeys, int expect_values)
{
	*n = 0;
	*msgs = 0;
	for (int guard = 0; guard < 100000; guard++) {
		Kv__Envelope *e = recv_ok(fd);
		assert_int_equal(e->id, id);
		assert_string_equal(e->method, "Scan");
		(*msgs)++;
		if (e->status_code != ST_OK) {
			uint32_t st = e->status_code;
			assert_true(e->end_of_stream);
			kv__envelope__free_unpacked(e, NULL);
			return st;
		}
		Kv__ScanReply *r = kv__scan_reply__unpack(NULL, e->payload.len, e->payload.data);
		assert_non_null(r);
		assert_true(r->n_items <= 256);
		for (size_t i = 0; i < r->n_items; i++) {
			if (keys && *n < maxkeys) {
				keys[*n] = malloc(r->items[i]->key.len + 1);
				memcpy(keys[*n], r->items[i]->key.data, r->items[i]->key.len);
				keys[*n][r->items[i]->key.len] = '\0';
			}
			if (expect_values)
				assert_true(r->items[i]->value.len > 0);
			else
				assert_int_equal(r->items[i]->value.len, 0);
			(*n)++;
		}
		kv__scan_reply__free_unpacked(r, NULL);
		int eos = e->end_of_stream;
		kv__envelope__free_unpacked(e, NULL);
		if (eos)
			return ST_OK;
	}
	fail_msg("scan did not end");
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- every method ------------------------------------------------------------------ */

/* Ping, Put/Get (TTL, empty value, NOT_FOUND), Delete, Batch (atomic, bad
 * op, empty), key limits. */
static void test_methods(void **state)
{
	struct ctx *c = *state;
	start(c, "methods", NULL);
	int fd = kvt_conn(&c->conns, c->d.sock);

	ping_ok(fd, 1);

	/* Put / Get / TTL / NOT_FOUND */
	assert_int_equal(put_s(fd, 2, "k1", "v1", 2, 0), ST_OK);
	assert_get_eq(fd, 3, "k1", "v1", 2);
	assert_int_equal(put_s(fd, 4, "empty", "", 0, 0), ST_OK);
	assert_get_eq(fd, 5, "empty", "", 0);
	{
		struct kvt_buf b = { 0 };
		buf_put(&b, 6, "ttl", 3, "t", 1, 100, 0);
		send_buf(fd, &b);
		Kv__Envelope *e = recv_ok(fd);
		assert_int_equal(e->status_code, ST_OK);
		kv__envelope__free_unpacked(e, NULL);
		uint64_t exp = 0;
		uint8_t *v = NULL;
		size_t vl = 0;
		assert_int_equal(get_s(fd, 7, "ttl", 3, &v, &vl, &exp), ST_OK);
		free(v);
		uint64_t now = (uint64_t)time(NULL);
		assert_true(exp >= now + 90 && exp <= now + 110);
	}
	assert_int_equal(get_s(fd, 8, "nosuch", 6, NULL, NULL, NULL), ST_NOT_FOUND);

	/* Delete */
	{
		Kv__DeleteRequest rq = KV__DELETE_REQUEST__INIT;
		rq.key.data = (uint8_t *)"k1";
		rq.key.len = 2;
		Kv__Envelope *e = kvt_call(fd, 9, "Delete", &rq.base);
		assert_non_null(e);
		assert_int_equal(e->status_code, ST_OK);
		kv__envelope__free_unpacked(e, NULL);
		assert_int_equal(get_s(fd, 10, "k1", 2, NULL, NULL, NULL), ST_NOT_FOUND);
		e = kvt_call(fd, 11, "Delete", &rq.base);
		assert_non_null(e);
		assert_int_equal(e->status_code, ST_NOT_FOUND);
		kv__envelope__free_unpacked(e, NULL);
	}

	/* Batch: atomic puts and deletes, absent delete is fine */
	{
		Kv__BatchOp o[4];
		Kv__BatchOp *op[4];
		const char *keys[4] = { "b1", "b2", "ttl", "nosuch" };
		for (int i = 0; i < 4; i++) {
			kv__batch_op__init(&o[i]);
			o[i].op = i < 2 ? KV__BATCH_OP__OP__PUT : KV__BATCH_OP__OP__DELETE;
			o[i].key.data = (uint8_t *)keys[i];
			o[i].key.len = strlen(keys[i]);
			if (i < 2) {
				o[i].value.data = (uint8_t *)"bv";
				o[i].value.len = 2;
			}
			op[i] = &o[i];
		}
		Kv__BatchRequest rq = KV__BATCH_REQUEST__INIT;
		rq.n_ops = 4;
		rq.ops = op;
		Kv__Envelope *e = kvt_call(fd, 12, "Batch", &rq.base);
		assert_non_null(e);
		assert_int_equal(e->status_code, ST_OK);
		Kv__BatchReply *r = kv__batch_reply__unpack(NULL, e->payload.len, e->payload.data);
		assert_non_null(r);
		assert_int_equal(r->applied, 4);
		kv__batch_reply__free_unpacked(r, NULL);
		kv__envelope__free_unpacked(e, NULL);
		assert_get_eq(fd, 13, "b1", "bv", 2);
		assert_int_equal(get_s(fd, 14, "ttl", 3, NULL, NULL, NULL), ST_NOT_FOUND);

		/* a bad op rejects the whole batch */
		o[0].key.data = (uint8_t *)"b3";
		o[0].key.len = 2;
		o[1].op = (Kv__BatchOp__Op)7;
		rq.n_ops = 2;
		e = kvt_call(fd, 15, "Batch", &rq.base);
		assert_non_null(e);
		assert_int_equal(e->status_code, ST_INVALID_ARGUMENT);
		assert_non_null(strstr(e->status_message, "op 1"));
		kv__envelope__free_unpacked(e, NULL);
		assert_int_equal(get_s(fd, 16, "b3", 2, NULL, NULL, NULL), ST_NOT_FOUND);

		rq.n_ops = 0;
		e = kvt_call(fd, 17, "Batch", &rq.base);
		assert_non_null(e);
		assert_int_equal(e->status_code, ST_OK);
		kv__envelope__free_unpacked(e, NULL);
	}

	/* Key and value limits */
	{
		assert_int_equal(put_s(fd, 18, "", "x", 1, 0), ST_INVALID_ARGUMENT);
		size_t kl = 70000;
		char *big = malloc(kl);
		memset(big, 'k', kl);
		struct kvt_buf b = { 0 };
		buf_put(&b, 19, big, kl, "v", 1, 0, 0);
		send_buf(fd, &b);
		Kv__Envelope *e = recv_ok(fd);
		assert_int_equal(e->status_code, ST_RESOURCE_EXHAUSTED);
		assert_non_null(strstr(e->status_message, "key too large (70000 bytes, max 65536)"));
		kv__envelope__free_unpacked(e, NULL);
		free(big);
	}

}

/* Scan (streamed, pipelined with a later request, limit, keys_only, empty),
 * Stats, Merge, Sync, and a malformed payload. */
static void test_methods_scan_stats(void **state)
{
	struct ctx *c = *state;
	start(c, "methods2", NULL);
	int fd = kvt_conn(&c->conns, c->d.sock);
	char k[32], v[32];
	assert_int_equal(put_s(fd, 1, "x1", "1", 1, 0), ST_OK);
	assert_int_equal(put_s(fd, 2, "x2", "2", 1, 0), ST_OK);

	/* Scan: 600 keys under s/ → several messages, each key once */
	{
		struct kvt_buf b = { 0 };
		for (int i = 0; i < 600; i++) {
			snprintf(k, sizeof k, "s/%04d", i);
			snprintf(v, sizeof v, "val%d", i);
			buf_put(&b, 1000 + (uint64_t)i, k, strlen(k), v, strlen(v), 0, 0);
		}
		send_buf(fd, &b);
		for (int i = 0; i < 600; i++) {
			Kv__Envelope *e = recv_ok(fd);
			assert_int_equal(e->id, 1000 + (uint64_t)i);
			assert_int_equal(e->status_code, ST_OK);
			kv__envelope__free_unpacked(e, NULL);
		}
		Kv__ScanRequest rq = KV__SCAN_REQUEST__INIT;
		rq.prefix.data = (uint8_t *)"s/";
		rq.prefix.len = 2;
		/* pipelined: Scan then Ping; the Ping reply must come after the stream */
		kvt_buf_frame(&b, 2000, "Scan", &rq.base);
		Kv__PingRequest pr = KV__PING_REQUEST__INIT;
		kvt_buf_frame(&b, 2001, "Ping", &pr.base);
		send_buf(fd, &b);
		char *keys[600];
		size_t n = 0, msgs = 0;
		assert_int_equal(scan_collect(fd, 2000, &n, &msgs, keys, 600, 1), ST_OK);
		assert_int_equal(n, 600);
		assert_true(msgs >= 3);
		qsort(keys, 600, sizeof keys[0], cmp_str);
		for (int i = 0; i < 600; i++) {
			snprintf(k, sizeof k, "s/%04d", i);
			assert_string_equal(keys[i], k);
			free(keys[i]);
		}
		Kv__Envelope *e = recv_ok(fd);
		assert_int_equal(e->id, 2001);
		assert_string_equal(e->method, "Ping");
		kv__envelope__free_unpacked(e, NULL);

		rq.limit = 10;
		assert_int_equal(kvt_send(fd, 2002, "Scan", &rq.base), 0);
		assert_int_equal(scan_collect(fd, 2002, &n, &msgs, NULL, 0, 1), ST_OK);
		assert_int_equal(n, 10);
		rq.limit = 0;
		rq.keys_only = 1;
		assert_int_equal(kvt_send(fd, 2003, "Scan", &rq.base), 0);
		assert_int_equal(scan_collect(fd, 2003, &n, &msgs, NULL, 0, 0), ST_OK);
		assert_int_equal(n, 600);
		rq.prefix.data = (uint8_t *)"zzz";
		rq.prefix.len = 3;
		assert_int_equal(kvt_send(fd, 2004, "Scan", &rq.base), 0);
		assert_int_equal(scan_collect(fd, 2004, &n, &msgs, NULL, 0, 1), ST_OK);
		assert_int_equal(n, 0);
		assert_int_equal(msgs, 1);
	}

	/* Stats */
	{
		Kv__StatsReply *r = stats(fd, 3000);
		assert_string_equal(r->version, "0.1.0");
		assert_int_equal(r->keys, 2 + 600);
		assert_string_equal(r->sync_mode, "interval:1000");
		assert_true(r->connections >= 1);
		assert_true(r->requests >= 600);
		assert_false(r->read_only);
		assert_true(r->segments >= 1);
		assert_int_equal(r->n_segment, r->segments);
		kv__stats_reply__free_unpacked(r, NULL);
	}

	/* Merge (no overwrite yet: nothing to merge; see test_service.c for
	 * the rest); Sync works */
	{
		Kv__MergeRequest rq = KV__MERGE_REQUEST__INIT;
		Kv__Envelope *e = kvt_call(fd, 3001, "Merge", &rq.base);
		assert_non_null(e);
		assert_int_equal(e->status_code, ST_OK);
		assert_string_equal(e->method, "Merge");
		Kv__MergeReply *mr = kv__merge_reply__unpack(NULL, e->payload.len, e->payload.data);
		assert_non_null(mr);
		assert_string_equal(mr->state, "nothing to merge");
		kv__merge_reply__free_unpacked(mr, NULL);
		kv__envelope__free_unpacked(e, NULL);
		Kv__SyncRequest sq = KV__SYNC_REQUEST__INIT;
		e = kvt_call(fd, 3002, "Sync", &sq.base);
		assert_non_null(e);
		assert_int_equal(e->status_code, ST_OK);
		assert_string_equal(e->method, "Sync");
		kv__envelope__free_unpacked(e, NULL);
	}

	/* A malformed payload is INVALID_ARGUMENT and the connection stays. */
	{
		static const uint8_t junk[] = { 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f };
		Kv__Envelope env = KV__ENVELOPE__INIT;
		env.id = 3003;
		env.method = (char *)"Get";
		env.payload.data = (uint8_t *)junk;
		env.payload.len = sizeof junk;
		uint8_t buf[64];
		size_t n = kv__envelope__pack(&env, buf + 4);
		buf[0] = buf[1] = 0;
		buf[2] = (uint8_t)(n >> 8);
		buf[3] = (uint8_t)n;
		assert_int_equal(kvt_write_all(fd, buf, n + 4), 0);
		Kv__Envelope *e = recv_ok(fd);
		assert_int_equal(e->id, 3003);
		assert_int_equal(e->status_code, ST_INVALID_ARGUMENT);
		kv__envelope__free_unpacked(e, NULL);
		ping_ok(fd, 3004);
	}
}

/* The largest value (64 MiB) round-trips; one byte more is refused. */
static void test_max_value(void **state)
{
	struct ctx *c = *state;
	start(c, "maxval", NULL);
	int fd = kvt_conn(&c->conns, c->d.sock);
	size_t n = 64u * 1024u * 1024u;
	uint8_t *v = malloc(n + 1);
	assert_non_null(v);
	for (size_t i = 0; i < n + 1; i++)
		v[i] = (uint8_t)(i * 2654435761u >> 13);
	assert_int_equal(put_s(fd, 1, "big", v, n, 0), ST_OK);
	assert_get_eq(fd, 2, "big", v, n);
	struct kvt_buf b = { 0 };
	buf_put(&b, 3, "big2", 4, v, n + 1, 0, 0);
	send_buf(fd, &b);
	Kv__Envelope *e = recv_ok(fd);
	assert_int_equal(e->status_code, ST_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(e->status_message, "value too large (67108865 bytes"));
	kv__envelope__free_unpacked(e, NULL);
	free(v);
	ping_ok(fd, 4);
}

/* ---- pipelining and concurrency -------------------------------------------------------- */

static void test_pipeline_10k(void **state)
{
	struct ctx *c = *state;
	start(c, "pipe", NULL);
	int fd = kvt_conn(&c->conns, c->d.sock);
	enum { N = 10000 };
	struct kvt_buf b = { 0 };
	char k[32], v[32];
	for (int i = 0; i < N; i++) {
		uint64_t id = (uint64_t)i * 7919u + 3u; /* not sequential */
		if (i % 2 == 0) {
			snprintf(k, sizeof k, "p/%d", i);
			snprintf(v, sizeof v, "v%d", i);
			buf_put(&b, id, k, strlen(k), v, strlen(v), 0, 0);
		} else {
			snprintf(k, sizeof k, "p/%d", i - 1);
			buf_get(&b, id, k, strlen(k));
		}
	}
	uint64_t t0 = kvt_now_ms();
	send_buf(fd, &b);
	for (int i = 0; i < N; i++) {
		Kv__Envelope *e = recv_ok(fd);
		uint64_t id = (uint64_t)i * 7919u + 3u;
		if (e->id != id)
			fail_msg("reply %d: id %llu, want %llu", i, (unsigned long long)e->id,
				 (unsigned long long)id);
		assert_int_equal(e->status_code, ST_OK);
		assert_string_equal(e->method, i % 2 ? "Get" : "Put");
		if (i % 2) {
			Kv__GetReply *r = kv__get_reply__unpack(NULL, e->payload.len, e->payload.data);
			assert_non_null(r);
			snprintf(v, sizeof v, "v%d", i - 1);
			assert_int_equal(r->value.len, strlen(v));
			assert_memory_equal(r->value.data, v, strlen(v));
			kv__get_reply__free_unpacked(r, NULL);
		}
		kv__envelope__free_unpacked(e, NULL);
	}
	uint64_t dt = kvt_now_ms() - t0;
	print_message("pipelined: %d requests in %llu ms\n", N, (unsigned long long)dt);
}

static void test_100_clients(void **state)
{
	struct ctx *c = *state;
	start(c, "many", NULL);
	enum { C = 100, R = 100 };
	int fds[C];
	for (int i = 0; i < C; i++)
		fds[i] = kvt_conn(&c->conns, c->d.sock);
	char k[32], v[32];
	for (int r = 0; r < R; r++) { /* every client has one request in flight */
		for (int i = 0; i < C; i++) {
			struct kvt_buf b = { 0 };
			snprintf(k, sizeof k, "c%d/%d", i, r);
			snprintf(v, sizeof v, "v%d.%d", i, r);
			buf_put(&b, (uint64_t)r, k, strlen(k), v, strlen(v), 0, 0);
			send_buf(fds[i], &b);
		}
		for (int i = 0; i < C; i++) {
			Kv__Envelope *e = recv_ok(fds[i]);
			assert_int_equal(e->id, (uint64_t)r);
			assert_int_equal(e->status_code, ST_OK);
			kv__envelope__free_unpacked(e, NULL);
		}
	}
	for (int r = 0; r < R; r++) {
		for (int i = 0; i < C; i++) {
			struct kvt_buf b = { 0 };
			snprintf(k, sizeof k, "c%d/%d", (i + 1) % C, r); /* another client's key */
			buf_get(&b, 100000 + (uint64_t)r, k, strlen(k));
			send_buf(fds[i], &b);
		}
		for (int i = 0; i < C; i++) {
			Kv__Envelope *e = recv_ok(fds[i]);
			assert_int_equal(e->id, 100000 + (uint64_t)r);
			assert_int_equal(e->status_code, ST_OK);
			Kv__GetReply *g = kv__get_reply__unpack(NULL, e->payload.len, e->payload.data);
			assert_non_null(g);
			snprintf(v, sizeof v, "v%d.%d", (i + 1) % C, r);
			assert_int_equal(g->value.len, strlen(v));
			assert_memory_equal(g->value.data, v, strlen(v));
			kv__get_reply__free_unpacked(g, NULL);
			kv__envelope__free_unpacked(e, NULL);
		}
	}
	Kv__StatsReply *st = stats(fds[0], 1);
	assert_int_equal(st->keys, C * R);
	assert_int_equal(st->connections, C);
	/* Batched I/O: 100 clients sending at once give passes of many reads
	 * and writes. Without io_uring (--io-uring no, or a kernel that
	 * refuses it) nothing is batched. */
	if (c->plain_io || !st->io_uring) {
		if (!c->plain_io)
			print_message("note: io_uring not available here; the plain path was tested\n");
		assert_false(st->io_uring);
		assert_int_equal(st->io_batches, 0);
		assert_int_equal(st->io_batched_ops, 0);
	} else {
		assert_true(st->io_batches > 0);
		assert_true(st->io_batched_ops >= 2 * st->io_batches); /* at least 2 per batch */
	}
	kv__stats_reply__free_unpacked(st, NULL);
}

/* ---- persistence, shutdown ------------------------------------------------------------------ */

static void test_restart(void **state)
{
	struct ctx *c = *state;
	start(c, "restart", NULL);
	int fd = kvt_conn(&c->conns, c->d.sock);
	struct kvt_buf b = { 0 };
	char k[32], v[64];
	for (int i = 0; i < 500; i++) {
		snprintf(k, sizeof k, "r/%d", i);
		snprintf(v, sizeof v, "value-%d-%d", i, i * i);
		buf_put(&b, (uint64_t)i, k, strlen(k), v, strlen(v), 0, i % 50 == 0);
	}
	for (int i = 0; i < 500; i += 10) {
		Kv__DeleteRequest rq = KV__DELETE_REQUEST__INIT;
		snprintf(k, sizeof k, "r/%d", i);
		rq.key.data = (uint8_t *)k;
		rq.key.len = strlen(k);
		kvt_buf_frame(&b, 10000 + (uint64_t)i, "Delete", &rq.base);
	}
	send_buf(fd, &b);
	for (int i = 0; i < 550; i++) {
		Kv__Envelope *e = recv_ok(fd);
		assert_int_equal(e->status_code, ST_OK);
		kv__envelope__free_unpacked(e, NULL);
	}
	kvt_conns_close(&c->conns, fd);
	assert_int_equal(kvtd_stop(&c->d), 0);
	struct stat sst;
	assert_int_equal(stat(c->d.sock, &sst), -1); /* socket removed */
	assert_int_equal(kvtd_start_again(&c->d, NULL), 0);
	fd = kvt_conn(&c->conns, c->d.sock);
	for (int i = 0; i < 500; i++) {
		snprintf(k, sizeof k, "r/%d", i);
		if (i % 10 == 0) {
			assert_int_equal(get_s(fd, (uint64_t)i, k, strlen(k), NULL, NULL, NULL),
					 ST_NOT_FOUND);
		} else {
			snprintf(v, sizeof v, "value-%d-%d", i, i * i);
			assert_get_eq(fd, (uint64_t)i, k, v, strlen(v));
		}
	}
	Kv__StatsReply *st = stats(fd, 9999);
	assert_int_equal(st->keys, 450);
	kv__stats_reply__free_unpacked(st, NULL);
}

/* SIGTERM with requests in flight: every reply that arrives is OK and in
 * order, the connection then closes, kvd exits 0 and removes its socket, and
 * every acknowledged Put is there after a restart. */
static void test_sigterm_inflight(void **state)
{
	struct ctx *c = *state;
	start(c, "term", NULL);
	enum { C = 4, N = 3000 };
	int fds[C];
	char k[48], v[48];
	for (int i = 0; i < C; i++) {
		fds[i] = kvt_conn(&c->conns, c->d.sock);
		struct kvt_buf b = { 0 };
		for (int j = 0; j < N; j++) {
			snprintf(k, sizeof k, "t/%d/%d", i, j);
			snprintf(v, sizeof v, "tv%d", j);
			buf_put(&b, (uint64_t)j, k, strlen(k), v, strlen(v), 0, 0);
		}
		send_buf(fds[i], &b);
	}
	kill(c->d.pid, SIGTERM);
	int acked[C];
	for (int i = 0; i < C; i++) {
		acked[i] = 0;
		for (int j = 0; j < N; j++) {
			Kv__Envelope *e = kvt_recv(fds[i]);
			if (!e)
				break;
			if (e->status_code == ST_UNAVAILABLE) { /* refused while shutting down */
				kv__envelope__free_unpacked(e, NULL);
				continue;
			}
			assert_int_equal(e->status_code, ST_OK);
			assert_int_equal(e->id, (uint64_t)j);
			acked[i] = j + 1;
			kv__envelope__free_unpacked(e, NULL);
		}
		assert_int_equal(kvt_wait_closed(fds[i], 10000, NULL), 1);
	}
	assert_int_equal(kvtd_wait_exit(&c->d, 10000), 0);
	assert_int_equal(kvtd_exit_code(&c->d), 0);
	struct stat sst;
	assert_int_equal(stat(c->d.sock, &sst), -1);
	print_message("acknowledged before exit: %d %d %d %d of %d\n", acked[0], acked[1],
		      acked[2], acked[3], N);
	assert_int_equal(kvtd_start_again(&c->d, NULL), 0);
	int fd = kvt_conn(&c->conns, c->d.sock);
	for (int i = 0; i < C; i++)
		for (int j = 0; j < acked[i]; j++) {
			snprintf(k, sizeof k, "t/%d/%d", i, j);
			snprintf(v, sizeof v, "tv%d", j);
			assert_get_eq(fd, 1, k, v, strlen(v));
		}
	assert_true(kvt_file_contains(c->d.log, "SIGTERM: shutting down"));
}

/* ---- hostile input ------------------------------------------------------------------------------------ */

static void test_huge_length(void **state)
{
	struct ctx *c = *state;
	start(c, "huge", NULL);
	int fd = kvt_conn(&c->conns, c->d.sock);
	ping_ok(fd, 1);
	long rss0 = kvt_rss_kb(c->d.pid);
	static const uint8_t claim[] = { 0xff, 0xff, 0xff, 0xff, 'a', 'b', 'c' };
	assert_int_equal(kvt_write_all(fd, claim, sizeof claim), 0);
	Kv__Envelope *e = recv_ok(fd);
	assert_int_equal(e->id, 0);
	assert_int_equal(e->status_code, ST_RESOURCE_EXHAUSTED);
	assert_true(e->end_of_stream);
	assert_non_null(strstr(e->status_message, "4294967295"));
	kv__envelope__free_unpacked(e, NULL);
	assert_int_equal(kvt_wait_closed(fd, 5000, NULL), 1);
	long rss1 = kvt_rss_kb(c->d.pid);
	print_message("RSS %ld kB -> %ld kB\n", rss0, rss1);
	assert_true(rss1 - rss0 < 8192);

	/* just above the limit: refused too */
	fd = kvt_conn(&c->conns, c->d.sock);
	uint32_t n = 64u * 1024u * 1024u + 1024u * 1024u + 1u;
	uint8_t h[4] = { (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n };
	assert_int_equal(kvt_write_all(fd, h, 4), 0);
	e = recv_ok(fd);
	assert_int_equal(e->status_code, ST_RESOURCE_EXHAUSTED);
	kv__envelope__free_unpacked(e, NULL);
	assert_int_equal(kvt_wait_closed(fd, 5000, NULL), 1);
	daemon_alive(c);
}

static void test_random_bytes(void **state)
{
	struct ctx *c = *state;
	start(c, "random", NULL);
	uint8_t buf[8192];
	for (unsigned seed = 1; seed <= 40; seed++) {
		int fd = kvt_conn(&c->conns, c->d.sock);
		srand(seed);
		size_t n = 16 + (size_t)(rand() % (int)(sizeof buf - 16));
		for (size_t i = 0; i < n; i++)
			buf[i] = (uint8_t)rand();
		if (seed % 4 == 0) { /* a small length, so the body is parsed */
			buf[0] = buf[1] = 0;
			buf[2] = (uint8_t)((n - 4) >> 8);
			buf[3] = (uint8_t)(n - 4);
		}
		(void)kvt_write_all(fd, buf, n); /* kvd may close before all is written */
		shutdown(fd, SHUT_WR);
		if (!kvt_wait_closed(fd, 5000, NULL))
			fail_msg("seed %u: kvd kept the connection open", seed);
		kvt_conns_close(&c->conns, fd);
	}
	/* A malformed envelope: INVALID_ARGUMENT (id 0), then close. */
	int fd = kvt_conn(&c->conns, c->d.sock);
	static const uint8_t bad[] = { 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff };
	assert_int_equal(kvt_write_all(fd, bad, sizeof bad), 0);
	Kv__Envelope *e = recv_ok(fd);
	assert_int_equal(e->id, 0);
	assert_int_equal(e->status_code, ST_INVALID_ARGUMENT);
	kv__envelope__free_unpacked(e, NULL);
	assert_int_equal(kvt_wait_closed(fd, 5000, NULL), 1);
	daemon_alive(c);
}

static void test_truncated_frames(void **state)
{
	struct ctx *c = *state;
	start(c, "trunc", NULL);
	/* length says 100, 10 bytes come, then close */
	int fd = kvt_conn(&c->conns, c->d.sock);
	static const uint8_t part[] = { 0, 0, 0, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };
	assert_int_equal(kvt_write_all(fd, part, sizeof part), 0);
	kvt_conns_close(&c->conns, fd);
	/* half a length prefix, then close */
	fd = kvt_conn(&c->conns, c->d.sock);
	assert_int_equal(kvt_write_all(fd, part, 2), 0);
	kvt_conns_close(&c->conns, fd);
	/* a partial frame then half-close: kvd closes without a reply */
	fd = kvt_conn(&c->conns, c->d.sock);
	assert_int_equal(kvt_write_all(fd, part, sizeof part), 0);
	shutdown(fd, SHUT_WR);
	size_t drained = 99;
	assert_int_equal(kvt_wait_closed(fd, 5000, &drained), 1);
	assert_int_equal(drained, 0);
	kvt_conns_close(&c->conns, fd);
	/* a frame split over writes with pauses is reassembled */
	fd = kvt_conn(&c->conns, c->d.sock);
	struct kvt_buf b = { 0 };
	Kv__PingRequest pr = KV__PING_REQUEST__INIT;
	kvt_buf_frame(&b, 77, "Ping", &pr.base);
	for (size_t i = 0; i < b.len; i++) {
		assert_int_equal(kvt_write_all(fd, b.p + i, 1), 0);
		kvt_sleep_ms(5);
	}
	kvt_buf_free(&b);
	Kv__Envelope *e = recv_ok(fd);
	assert_int_equal(e->id, 77);
	assert_int_equal(e->status_code, ST_OK);
	kv__envelope__free_unpacked(e, NULL);
	/* complete requests before a half-close are answered */
	Kv__PingRequest p2 = KV__PING_REQUEST__INIT;
	kvt_buf_frame(&b, 78, "Ping", &p2.base);
	kvt_buf_frame(&b, 79, "Ping", &p2.base);
	send_buf(fd, &b);
	shutdown(fd, SHUT_WR);
	for (uint64_t id = 78; id <= 79; id++) {
		e = recv_ok(fd);
		assert_int_equal(e->id, id);
		kv__envelope__free_unpacked(e, NULL);
	}
	assert_int_equal(kvt_wait_closed(fd, 5000, NULL), 1);
	daemon_alive(c);
}

static void test_unknown_method(void **state)
{
	struct ctx *c = *state;
	start(c, "unknown", NULL);
	int fd = kvt_conn(&c->conns, c->d.sock);
	Kv__PingRequest pr = KV__PING_REQUEST__INIT;
	Kv__Envelope *e = kvt_call(fd, 31, "Frobnicate", &pr.base);
	assert_non_null(e);
	assert_int_equal(e->id, 31);
	assert_int_equal(e->status_code, ST_UNIMPLEMENTED);
	assert_non_null(strstr(e->status_message, "Frobnicate"));
	assert_true(e->end_of_stream);
	kv__envelope__free_unpacked(e, NULL);
	e = kvt_call(fd, 32, "", NULL);
	assert_non_null(e);
	assert_int_equal(e->status_code, ST_UNIMPLEMENTED);
	kv__envelope__free_unpacked(e, NULL);
	e = kvt_call(fd, 33, "ping", NULL); /* names are case-sensitive */
	assert_non_null(e);
	assert_int_equal(e->status_code, ST_UNIMPLEMENTED);
	kv__envelope__free_unpacked(e, NULL);
	ping_ok(fd, 34); /* the connection stays */
}

/* A client that pipelines many 1 MiB Gets and never reads: kvd keeps
 * serving others, its memory stays bounded, and it drops that client. */
static void test_slow_reader(void **state)
{
	struct ctx *c = *state;
	const char *args[] = { "--write-timeout-ms", "2000", NULL };
	start(c, "slow", args);
	int fa = kvt_conn(&c->conns, c->d.sock);
	int fb = kvt_conn(&c->conns, c->d.sock);
	size_t vl = 1024u * 1024u;
	uint8_t *v = malloc(vl);
	memset(v, 'x', vl);
	assert_int_equal(put_s(fa, 1, "big", v, vl, 0), ST_OK);
	free(v);
	ping_ok(fb, 1);
	long rss0 = kvt_rss_kb(c->d.pid);
	struct kvt_buf b = { 0 };
	for (int i = 0; i < 300; i++) /* 300 MiB of replies */
		buf_get(&b, 10 + (uint64_t)i, "big", 3);
	send_buf(fa, &b);
	long rss_max = rss0;
	uint64_t worst = 0;
	uint64_t end = kvt_now_ms() + 3000;
	for (int i = 0; kvt_now_ms() < end && i < 1000; i++) {
		uint64_t t = kvt_now_ms();
		ping_ok(fb, 100 + (uint64_t)i);
		uint64_t dt = kvt_now_ms() - t;
		if (dt > worst)
			worst = dt;
		long r = kvt_rss_kb(c->d.pid);
		if (r > rss_max)
			rss_max = r;
		kvt_sleep_ms(50);
	}
	print_message("slow reader: worst ping %llu ms, RSS %ld -> max %ld kB\n",
		      (unsigned long long)worst, rss0, rss_max);
	assert_true(worst < 1000);
	assert_true(rss_max - rss0 < 48 * 1024);
	size_t drained = 0;
	assert_int_equal(kvt_wait_closed(fa, 10000, &drained), 1);
	assert_true(drained < 300u * 1024u * 1024u);
	assert_true(kvt_file_contains(c->d.log, "has not read its replies"));
	ping_ok(fb, 5000);
}

static void test_max_connections(void **state)
{
	struct ctx *c = *state;
	const char *args[] = { "--max-connections", "4", NULL };
	start(c, "maxconn", args);
	int fds[4];
	for (int i = 0; i < 4; i++) {
		fds[i] = kvt_conn(&c->conns, c->d.sock);
		ping_ok(fds[i], (uint64_t)i);
	}
	int fx = kvt_conn(&c->conns, c->d.sock);
	Kv__Envelope *e = recv_ok(fx);
	assert_int_equal(e->id, 0);
	assert_int_equal(e->status_code, ST_UNAVAILABLE);
	assert_non_null(strstr(e->status_message, "too many connections"));
	kv__envelope__free_unpacked(e, NULL);
	assert_int_equal(kvt_wait_closed(fx, 5000, NULL), 1);
	kvt_conns_close(&c->conns, fx);
	/* a freed slot is usable again (kvd notices the close within a moment) */
	kvt_conns_close(&c->conns, fds[0]);
	int ok = 0;
	for (int tries = 0; tries < 50 && !ok; tries++) {
		kvt_sleep_ms(20);
		int fd = kvt_conn(&c->conns, c->d.sock);
		Kv__PingRequest pr = KV__PING_REQUEST__INIT;
		e = kvt_call(fd, 9, "Ping", &pr.base);
		ok = e && e->status_code == ST_OK;
		if (e)
			kv__envelope__free_unpacked(e, NULL);
		if (!ok)
			kvt_conns_close(&c->conns, fd);
	}
	assert_true(ok);
	for (int i = 1; i < 4; i++)
		ping_ok(fds[i], 10 + (uint64_t)i);
}

static void test_frame_timeout(void **state)
{
	struct ctx *c = *state;
	const char *args[] = { "--frame-timeout-ms", "300", NULL };
	start(c, "ftimeout", args);
	int idle = kvt_conn(&c->conns, c->d.sock);
	int fd = kvt_conn(&c->conns, c->d.sock);
	static const uint8_t part[] = { 0, 0, 0, 100, 1, 2, 3 };
	uint64_t t0 = kvt_now_ms();
	assert_int_equal(kvt_write_all(fd, part, sizeof part), 0);
	assert_int_equal(kvt_wait_closed(fd, 5000, NULL), 1);
	uint64_t dt = kvt_now_ms() - t0;
	print_message("partial frame dropped after %llu ms\n", (unsigned long long)dt);
	assert_true(dt >= 250 && dt < 3000);
	kvt_sleep_ms(400);
	ping_ok(idle, 1); /* an idle connection is fine */
	assert_true(kvt_file_contains(c->d.log, "frame not completed within 300 ms"));
}

/* libkvclient's blocking calls: a peer that accepts and never answers
 * times them out on time, also when the timeout changes between calls
 * (shorter, then longer). */
static void test_client_timeout(void **state)
{
	struct ctx *c = *state;
	assert_int_equal(kvtd_init(&c->d2, "mute"), 0);
	int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(l >= 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	assert_true(strlen(c->d2.sock) < sizeof sa.sun_path);
	memcpy(sa.sun_path, c->d2.sock, strlen(c->d2.sock) + 1);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(l, 8), 0);
	kvc_client *cl = NULL;
	assert_int_equal(kvc_connect(c->d2.sock, 400, &cl, NULL, 0), KVC_OK);
	const int tmo[3] = { 400, 150, 700 };
	for (int i = 0; i < 3; i++) {
		kvc_set_timeout(cl, tmo[i]);
		uint64_t t0 = kvt_now_ms();
		assert_int_equal(kvc_ping(cl, NULL), KVC_ETIMEOUT);
		uint64_t dt = kvt_now_ms() - t0;
		print_message("timeout %d ms: ping gave up after %llu ms\n", tmo[i],
			      (unsigned long long)dt);
		assert_true(dt + 5 >= (uint64_t)tmo[i] && dt < (uint64_t)tmo[i] + 1000);
	}
	kvc_close(cl);
	close(l);
}

/* ---- start-up errors ------------------------------------------------------------------------------------- */

static void test_second_daemon_socket(void **state)
{
	struct ctx *c = *state;
	start(c, "dup1", NULL);
	assert_int_equal(kvtd_init(&c->d2, "dup2"), 0);
	snprintf(c->d2.sock, sizeof c->d2.sock, "%s", c->d.sock);
	assert_int_equal(kvtd_spawn(&c->d2, NULL), 0);
	assert_int_equal(kvtd_wait_exit(&c->d2, 10000), 0);
	assert_true(kvtd_exit_code(&c->d2) != 0);
	assert_true(kvt_file_contains(c->d2.log, "already serving"));
	daemon_alive(c);
}

static void test_second_daemon_datadir(void **state)
{
	struct ctx *c = *state;
	start(c, "lock1", NULL);
	assert_int_equal(kvtd_init(&c->d2, "lock2"), 0);
	snprintf(c->d2.data, sizeof c->d2.data, "%s", c->d.data);
	assert_int_equal(kvtd_spawn(&c->d2, NULL), 0);
	assert_int_equal(kvtd_wait_exit(&c->d2, 10000), 0);
	assert_true(kvtd_exit_code(&c->d2) != 0);
	assert_true(kvt_file_contains(c->d2.log, "locked"));
	struct stat st;
	assert_int_equal(stat(c->d2.sock, &st), -1); /* it left no socket behind */
	daemon_alive(c);
}

static void run_expect_exit(struct ctx *c, const char *const *args, int code, const char *msg)
{
	kvtd_cleanup(&c->d2);
	assert_int_equal(kvtd_init(&c->d2, "flags"), 0);
	assert_int_equal(kvtd_spawn(&c->d2, args), 0);
	assert_int_equal(kvtd_wait_exit(&c->d2, 10000), 0);
	if (kvtd_exit_code(&c->d2) != code)
		fail_msg("%s: exit %d, want %d", args[0], kvtd_exit_code(&c->d2), code);
	if (!kvt_file_contains(c->d2.log, msg))
		fail_msg("%s: output lacks \"%s\"", args[0], msg);
}

static void test_flags(void **state)
{
	struct ctx *c = *state;
	const char *a1[] = { "--sync", "sometimes", NULL };
	run_expect_exit(c, a1, 2, "bad --sync 'sometimes'");
	const char *a2[] = { "--max-segment-size", "12X", NULL };
	run_expect_exit(c, a2, 2, "bad --max-segment-size");
	const char *a3[] = { "--bogus", NULL };
	run_expect_exit(c, a3, 2, "unknown option '--bogus'");
	const char *a4[] = { "--version", NULL };
	run_expect_exit(c, a4, 0, "kvd 0.1.0");
	const char *a5[] = { "--help", NULL };
	run_expect_exit(c, a5, 0, "--max-connections");
	const char *a6[] = { "--log-level", "loud", NULL };
	run_expect_exit(c, a6, 2, "bad --log-level");
	const char *a7[] = { "--socket-mode", "999", NULL };
	run_expect_exit(c, a7, 2, "bad --socket-mode");
	/* a socket path longer than sun_path */
	char longp[200];
	memset(longp, 'a', sizeof longp - 1);
	longp[0] = '/';
	longp[sizeof longp - 1] = '\0';
	const char *a8[] = { "--socket", longp, NULL };
	run_expect_exit(c, a8, 1, "socket path too long");
	/* a data directory that cannot be created */
	const char *a9[] = { "--data-dir", "/proc/nonexistent/kvd", NULL };
	run_expect_exit(c, a9, 1, "cannot open /proc/nonexistent/kvd");
}

/* The socket gets --socket-mode; a stale socket file is replaced; SIGHUP
 * (no configuration file) reloads nothing and is harmless. */
static void test_socket_setup(void **state)
{
	struct ctx *c = *state;
	assert_int_equal(kvtd_init(&c->d, "sock"), 0);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa;
	assert_int_equal(kvt_sockaddr(&sa, c->d.sock), 0);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
	close(s); /* a stale socket file: nobody listens */
	const char *args[] = { "--socket-mode", "0600", NULL };
	assert_int_equal(kvtd_start_again(&c->d, args), 0);
	struct stat st;
	assert_int_equal(stat(c->d.sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_true(kvt_file_contains(c->d.log, "removed stale socket"));
	kill(c->d.pid, SIGHUP);
	int fd = kvt_conn(&c->conns, c->d.sock);
	ping_ok(fd, 1);
	int seen = 0;
	for (int i = 0; i < 100 && !seen; i++) {
		seen = kvt_file_contains(c->d.log, "SIGHUP: reloaded /etc/kvd/kvd.conf: 0 change(s) "
						   "applied, 0 need a restart");
		if (!seen)
			kvt_sleep_ms(20);
	}
	assert_true(seen);
	assert_int_equal(kvtd_stop(&c->d), 0);
}

/* ---- durability modes ------------------------------------------------------------------------------------- */

static void test_sync_always_group_commit(void **state)
{
	struct ctx *c = *state;
	const char *args[] = { "--sync", "always", NULL };
	start(c, "always", args);
	int fd = kvt_conn(&c->conns, c->d.sock);
	char k[32];
	for (int i = 0; i < 10; i++) {
		snprintf(k, sizeof k, "a/%d", i);
		assert_int_equal(put_s(fd, (uint64_t)i, k, "v", 1, 0), ST_OK);
	}
	Kv__StatsReply *s1 = stats(fd, 100);
	assert_string_equal(s1->sync_mode, "always");
	assert_true(s1->syncs > 0);
	assert_true(s1->synced_writes >= 10);

	/* read-your-write order with held replies: Put, Get, Put, Get pipelined */
	struct kvt_buf b = { 0 };
	buf_put(&b, 200, "o", 1, "1", 1, 0, 0);
	buf_get(&b, 201, "o", 1);
	buf_put(&b, 202, "o", 1, "2", 1, 0, 0);
	buf_get(&b, 203, "o", 1);
	send_buf(fd, &b);
	for (uint64_t id = 200; id <= 203; id++) {
		Kv__Envelope *e = recv_ok(fd);
		assert_int_equal(e->id, id);
		assert_int_equal(e->status_code, ST_OK);
		if (id % 2) {
			Kv__GetReply *g = kv__get_reply__unpack(NULL, e->payload.len, e->payload.data);
			assert_non_null(g);
			assert_int_equal(g->value.len, 1);
			assert_int_equal(g->value.data[0], id == 201 ? '1' : '2');
			kv__get_reply__free_unpacked(g, NULL);
		}
		kv__envelope__free_unpacked(e, NULL);
	}

	enum { C = 20, R = 25 };
	int fds[C];
	for (int i = 0; i < C; i++)
		fds[i] = kvt_conn(&c->conns, c->d.sock);
	Kv__StatsReply *s2 = stats(fd, 101);
	for (int r = 0; r < R; r++) {
		for (int i = 0; i < C; i++) {
			snprintf(k, sizeof k, "g/%d/%d", i, r);
			b.len = 0;
			buf_put(&b, (uint64_t)r, k, strlen(k), "v", 1, 0, 0);
			assert_int_equal(kvt_write_all(fds[i], b.p, b.len), 0);
		}
		for (int i = 0; i < C; i++) {
			Kv__Envelope *e = recv_ok(fds[i]);
			assert_int_equal(e->status_code, ST_OK);
			kv__envelope__free_unpacked(e, NULL);
		}
	}
	kvt_buf_free(&b);
	Kv__StatsReply *s3 = stats(fd, 102);
	uint64_t syncs = s3->syncs - s2->syncs;
	uint64_t writes = s3->synced_writes - s2->synced_writes;
	print_message("--sync always, %d clients: %llu writes in %llu syncs (%.1f per sync)\n", C,
		      (unsigned long long)writes, (unsigned long long)syncs,
		      syncs ? (double)writes / (double)syncs : 0.0);
	assert_int_equal(writes, C * R);
	assert_true(syncs > 0);
	assert_true(syncs < writes);
	/* time in fdatasync: counted, and no more than the wall time (a
	 * second sync thread would be a bug) */
	uint64_t sync_us = s3->sync_time_us - s2->sync_time_us;
	print_message("%.1f us per fdatasync\n", (double)sync_us / (double)syncs);
	assert_true(sync_us > 0);
	assert_true(sync_us <= (s3->uptime_ms - s2->uptime_ms + 10) * 1000u);
	kv__stats_reply__free_unpacked(s1, NULL);
	kv__stats_reply__free_unpacked(s2, NULL);
	kv__stats_reply__free_unpacked(s3, NULL);
}

/* interval mode: a Put with sync=true and a Sync request each cause a
 * sync; the timer syncs on its own within its interval. */
static void test_sync_interval(void **state)
{
	struct ctx *c = *state;
	const char *args[] = { "--sync", "interval:200", NULL };
	start(c, "interval", args);
	int fd = kvt_conn(&c->conns, c->d.sock);
	Kv__StatsReply *s0 = stats(fd, 1);
	assert_string_equal(s0->sync_mode, "interval:200");
	assert_int_equal(put_s(fd, 2, "a", "1", 1, 1), ST_OK); /* sync=true */
	Kv__StatsReply *s1 = stats(fd, 3);
	assert_int_equal(s1->syncs, s0->syncs + 1);
	assert_int_equal(s1->synced_writes, s0->synced_writes + 1);
	assert_int_equal(put_s(fd, 4, "b", "2", 1, 0), ST_OK);
	Kv__SyncRequest sq = KV__SYNC_REQUEST__INIT;
	Kv__Envelope *e = kvt_call(fd, 5, "Sync", &sq.base);
	assert_non_null(e);
	assert_int_equal(e->status_code, ST_OK);
	kv__envelope__free_unpacked(e, NULL);
	Kv__StatsReply *s2 = stats(fd, 6);
	assert_int_equal(s2->syncs, s1->syncs + 1);
	assert_int_equal(put_s(fd, 7, "c", "3", 1, 0), ST_OK);
	kvt_sleep_ms(600); /* the timer covers it */
	Kv__StatsReply *s3 = stats(fd, 8);
	assert_true(s3->syncs >= s2->syncs + 1);
	assert_int_equal(s3->synced_writes, s2->synced_writes + 1);
	kv__stats_reply__free_unpacked(s0, NULL);
	kv__stats_reply__free_unpacked(s1, NULL);
	kv__stats_reply__free_unpacked(s2, NULL);
	kv__stats_reply__free_unpacked(s3, NULL);
}


/* Fail-stop on a real ENOSPC (a 4 MiB tmpfs; skipped where mounting is not
 * allowed): the write that hits it is not acknowledged, later writes get
 * UNAVAILABLE "read-only after I/O error", reads keep working, the cause
 * is logged once, Stats says read-only. */
static void test_enospc_fail_stop(void **state)
{
	struct ctx *c = *state;
	assert_int_equal(kvtd_init(&c->d, "enospc"), 0);
	size_t dl = strlen(c->d.dir);
	assert_true(dl + 5 < sizeof c->mnt);
	memcpy(c->mnt, c->d.dir, dl);
	memcpy(c->mnt + dl, "/mnt", 5);
	assert_int_equal(mkdir(c->mnt, 0755), 0);
	if (mount("tmpfs", c->mnt, "tmpfs", 0, "size=4m") < 0) {
		print_message("cannot mount a tmpfs (%s): skipped\n", strerror(errno));
		c->mnt[0] = '\0';
		skip();
	}
	assert_true(strlen(c->mnt) + 6 < sizeof c->d.data);
	memcpy(c->d.data, c->mnt, strlen(c->mnt));
	memcpy(c->d.data + strlen(c->mnt), "/data", 6);
	assert_int_equal(kvtd_start_again(&c->d, NULL), 0);
	int fd = kvt_conn(&c->conns, c->d.sock);
	size_t vl = 256u * 1024u;
	uint8_t *v = malloc(vl);
	memset(v, 'e', vl);
	char k[32];
	int acked = 0;
	uint32_t st = ST_OK;
	char msg[256] = "";
	for (int i = 0; i < 64 && st == ST_OK; i++) {
		struct kvt_buf b = { 0 };
		snprintf(k, sizeof k, "e/%d", i);
		buf_put(&b, (uint64_t)i, k, strlen(k), v, vl, 0, 0);
		send_buf(fd, &b);
		Kv__Envelope *e = recv_ok(fd);
		st = e->status_code;
		if (st == ST_OK)
			acked++;
		else
			snprintf(msg, sizeof msg, "%s", e->status_message);
		kv__envelope__free_unpacked(e, NULL);
	}
	print_message("ENOSPC after %d acknowledged puts: status %u \"%s\"\n", acked, st, msg);
	assert_true(acked > 0 && acked < 64);
	assert_int_equal(st, ST_UNAVAILABLE);
	assert_non_null(strstr(msg, "read-only after I/O error"));
	/* later writes: UNAVAILABLE with the reason; reads still work */
	assert_int_equal(put_s(fd, 100, "after", "x", 1, 0), ST_UNAVAILABLE);
	for (int i = 0; i < acked; i++) {
		snprintf(k, sizeof k, "e/%d", i);
		assert_get_eq(fd, 200 + (uint64_t)i, k, v, vl);
	}
	Kv__StatsReply *r = stats(fd, 300);
	assert_true(r->read_only);
	assert_true(strlen(r->read_only_reason) > 0);
	kv__stats_reply__free_unpacked(r, NULL);
	free(v);
	assert_true(kvt_file_contains(c->d.log, "kvd is read-only until restart"));
}

/* The disk dies under group commit by the sync thread (several clients,
 * --sync always; tests/faultshim.c fails every fdatasync after the 40th):
 * no write whose fdatasync failed is acknowledged, kvd turns read-only and
 * stays so, and every acknowledged write is there after a restart. */
static void test_fdatasync_eio_sync_thread(void **state)
{
	struct ctx *c = *state;
	char shim[PATH_MAX];
	const char *kvd = kvt_kvd_path();
	const char *slash = strrchr(kvd, '/');
	snprintf(shim, sizeof shim, "%.*s/libfaultshim.so", slash ? (int)(slash - kvd) : 1,
		 slash ? kvd : ".");
	if (access(shim, R_OK) != 0) {
		print_message("%s is missing (make test builds it): skipped\n", shim);
		skip();
	}
	const char *asan = getenv("ASAN_OPTIONS");
	char asan_opts[512];
	snprintf(asan_opts, sizeof asan_opts, "%s%sverify_asan_link_order=0", asan ? asan : "",
		 asan && *asan ? ":" : "");
	char *asan_saved = asan ? strdup(asan) : NULL;
	setenv("ASAN_OPTIONS", asan_opts, 1);
	setenv("LD_PRELOAD", shim, 1);
	setenv("KVT_FAIL_FDATASYNC_AFTER", "40", 1);
	const char *extra[] = { "--sync", "always", NULL };
	int rc = kvtd_start(&c->d, "fsynceio", extra);
	unsetenv("LD_PRELOAD");
	unsetenv("KVT_FAIL_FDATASYNC_AFTER");
	if (asan_saved)
		setenv("ASAN_OPTIONS", asan_saved, 1);
	else
		unsetenv("ASAN_OPTIONS");
	free(asan_saved);
	assert_int_equal(rc, 0);
	enum { NC = 4, ROUNDS = 150 };
	int fds[NC];
	static uint8_t ok[NC][ROUNDS];
	int failed_at[NC];
	for (int i = 0; i < NC; i++) {
		fds[i] = kvt_conn(&c->conns, c->d.sock);
		failed_at[i] = -1;
	}
	char k[32], v[32], msg[256] = "";
	int acked = 0, refused = 0;
	for (int r = 0; r < ROUNDS; r++) {
		for (int i = 0; i < NC; i++) { /* one put in flight per connection */
			struct kvt_buf b = { 0 };
			snprintf(k, sizeof k, "f/%d/%d", i, r);
			snprintf(v, sizeof v, "v-%d-%d", i, r);
			buf_put(&b, (uint64_t)r, k, strlen(k), v, strlen(v), 0, 0);
			send_buf(fds[i], &b);
		}
		for (int i = 0; i < NC; i++) {
			Kv__Envelope *e = recv_ok(fds[i]);
			assert_int_equal(e->id, (uint64_t)r);
			if (e->status_code == ST_OK) {
				/* fail-stop: never an OK after a refusal */
				assert_int_equal(failed_at[i], -1);
				ok[i][r] = 1;
				acked++;
			} else {
				assert_int_equal(e->status_code, ST_UNAVAILABLE);
				if (failed_at[i] < 0)
					failed_at[i] = r;
				snprintf(msg, sizeof msg, "%s", e->status_message);
				refused++;
			}
			kv__envelope__free_unpacked(e, NULL);
		}
	}
	print_message("fdatasync EIO: %d puts acknowledged, %d refused (\"%s\")\n", acked, refused,
		      msg);
	assert_true(acked > 0 && refused > 0);
	assert_non_null(strstr(msg, "read-only after I/O error"));
	assert_non_null(strstr(msg, "fdatasync"));
	Kv__StatsReply *st = stats(fds[0], 1000);
	assert_true(st->read_only);
	assert_true(st->syncs > 1);
	kv__stats_reply__free_unpacked(st, NULL);
	assert_true(kvt_file_contains(c->d.log, "kvd is read-only until restart"));
	kvt_conns_close_all(&c->conns);
	assert_int_equal(kvtd_stop(&c->d), 0);
	/* the disk is back: every acknowledged write is there */
	assert_int_equal(kvtd_start_again(&c->d, extra), 0);
	int fd = kvt_conn(&c->conns, c->d.sock);
	uint64_t id = 2000;
	for (int i = 0; i < NC; i++)
		for (int r = 0; r < ROUNDS; r++) {
			if (!ok[i][r])
				continue;
			snprintf(k, sizeof k, "f/%d/%d", i, r);
			snprintf(v, sizeof v, "v-%d-%d", i, r);
			assert_get_eq(fd, id++, k, v, strlen(v));
		}
}

/* A Scan of ~40 MiB is streamed as the client reads: while the client does
 * not read, kvd buffers only a slice (RSS stays flat) and serves others;
 * then every key arrives exactly once. */
static void test_scan_stream(void **state)
{
	struct ctx *c = *state;
	start(c, "scan", NULL);
	int fd = kvt_conn(&c->conns, c->d.sock);
	int other = kvt_conn(&c->conns, c->d.sock);
	enum { N = 20000 };
	size_t vl = 2048;
	uint8_t *v = malloc(vl);
	memset(v, 'q', vl);
	char k[32];
	for (int base = 0; base < N; base += 1000) {
		struct kvt_buf b = { 0 };
		for (int i = base; i < base + 1000; i++) {
			snprintf(k, sizeof k, "q/%05d", i);
			buf_put(&b, (uint64_t)i, k, strlen(k), v, vl, 0, 0);
		}
		send_buf(fd, &b);
		for (int i = base; i < base + 1000; i++) {
			Kv__Envelope *e = recv_ok(fd);
			assert_int_equal(e->status_code, ST_OK);
			kv__envelope__free_unpacked(e, NULL);
		}
	}
	free(v);
	ping_ok(other, 1);
	long rss0 = kvt_rss_kb(c->d.pid);
	long anon0 = kvt_anon_kb(c->d.pid);
	Kv__ScanRequest rq = KV__SCAN_REQUEST__INIT;
	rq.prefix.data = (uint8_t *)"q/";
	rq.prefix.len = 2;
	assert_int_equal(kvt_send(fd, 7, "Scan", &rq.base), 0);
	kvt_sleep_ms(300);
	for (int i = 0; i < 5; i++) {
		uint64_t t = kvt_now_ms();
		ping_ok(other, 10 + (uint64_t)i);
		assert_true(kvt_now_ms() - t < 1000);
	}
	long rss1 = kvt_rss_kb(c->d.pid);
	long anon1 = kvt_anon_kb(c->d.pid);
	print_message("scan of %d x 2 KiB, client not reading: RSS %ld -> %ld kB, anon %ld -> %ld kB\n",
		      N, rss0, rss1, anon0, anon1);
	assert_true(anon1 - anon0 < 16 * 1024); /* vs 40 MiB if it were buffered */
	size_t n = 0, msgs = 0;
	assert_int_equal(scan_collect(fd, 7, &n, &msgs, NULL, 0, 1), ST_OK);
	assert_int_equal(n, N);
	assert_true(msgs >= N / 256);
	ping_ok(fd, 8);
}

/* Two Scans streaming at once: both connections have megabytes queued in
 * many pieces, so the loop's batched writes (more than RING_IOV pieces per
 * connection, partial sends, full sockets) carry them; every frame must
 * arrive whole and every key once per stream. */
static void test_concurrent_scans(void **state)
{
	struct ctx *c = *state;
	start(c, "scan2", NULL);
	int fa = kvt_conn(&c->conns, c->d.sock);
	int fb = kvt_conn(&c->conns, c->d.sock);
	enum { N = 3000 };
	size_t vl = 2048;
	uint8_t *v = malloc(vl);
	memset(v, 'z', vl);
	char k[32];
	struct kvt_buf b = { 0 };
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof k, "z/%05d", i);
		buf_put(&b, (uint64_t)i + 1, k, strlen(k), v, vl, 0, 0);
	}
	free(v);
	send_buf(fa, &b);
	for (int i = 0; i < N; i++) {
		Kv__Envelope *e = recv_ok(fa);
		assert_int_equal(e->status_code, ST_OK);
		kv__envelope__free_unpacked(e, NULL);
	}
	Kv__ScanRequest rq = KV__SCAN_REQUEST__INIT;
	rq.prefix.data = (uint8_t *)"z/";
	rq.prefix.len = 2;
	assert_int_equal(kvt_send(fa, 71, "Scan", &rq.base), 0);
	assert_int_equal(kvt_send(fb, 72, "Scan", &rq.base), 0);
	kvt_sleep_ms(200); /* both fill their sockets and pause */
	size_t na = 0, nb = 0, ma = 0, mb = 0;
	assert_int_equal(scan_collect(fa, 71, &na, &ma, NULL, 0, 1), ST_OK);
	assert_int_equal(scan_collect(fb, 72, &nb, &mb, NULL, 0, 1), ST_OK);
	assert_int_equal(na, N);
	assert_int_equal(nb, N);
	ping_ok(fa, 73);
	ping_ok(fb, 74);
}

/* kvd's CPU time so far (utime + stime), in clock ticks; -1 on failure. */
static long cpu_ticks(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
	unsigned long ut, st;
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (long)(ut + st);
}

/* Adaptive polling (--poll-us): a client taking turns with kvd is served
 * by polling (Stats counts the hits, the window stays within the bound),
 * and once idle kvd polls at most one window, then sleeps. */
static void test_poll_single_client(void **state)
{
	struct ctx *c = *state;
	const char *extra[] = { "--poll-us", "10000", NULL };
	start(c, "poll", extra);
	int fd = kvt_conn(&c->conns, c->d.sock);
	for (uint64_t i = 1; i <= 500; i++)
		ping_ok(fd, i);
	Kv__StatsReply *s = stats(fd, 1000);
	/* any turn of the client under 10 ms grows the window until polls catch it */
	if (s->poll_hits < 250)
		fail_msg("%llu of 500 requests caught by polling",
			 (unsigned long long)s->poll_hits);
	assert_true(s->poll_window_us > 0 && s->poll_window_us <= 10000);
	assert_true(s->poll_time_us > 0);
	uint64_t spent = s->poll_time_us, misses = s->poll_misses;
	kv__stats_reply__free_unpacked(s, NULL);

	kvt_sleep_ms(100);
	long t0 = cpu_ticks(c->d.pid);
	kvt_sleep_ms(1000);
	long t1 = cpu_ticks(c->d.pid);
	assert_true(t0 >= 0 && t1 >= t0);
	long hz = sysconf(_SC_CLK_TCK);
	if ((t1 - t0) * 1000 / hz > 200) /* a polling loop would use the whole second */
		fail_msg("idle kvd used %ld ms of CPU in 1 s", (t1 - t0) * 1000 / hz);
	s = stats(fd, 1001);
	/* one poll after the last reply, cut short by the window (plus one pass) */
	assert_int_equal(s->poll_misses, misses + 1);
	if (s->poll_time_us - spent > 10000 + 5000)
		fail_msg("idle kvd polled %llu us", (unsigned long long)(s->poll_time_us - spent));
	kv__stats_reply__free_unpacked(s, NULL);
}

/* --poll-us 0: the loop always sleeps; Stats shows no polling. */
/* The ring fails in the middle of a busy run (the test hook of kv_ring.h,
 * as if io_uring_enter had failed): kvd logs it once, redoes every read
 * and write the failed batch held with plain system calls and goes on
 * without io_uring; no request is lost or answered twice. */
static void test_ring_failure_fallback(void **state)
{
	struct ctx *c = *state;
	setenv("KVD_RING_FAIL_AFTER", "20", 1);
	start(c, "ringfail", NULL);
	unsetenv("KVD_RING_FAIL_AFTER");
	enum { C = 40, R = 30 };
	int fds[C];
	for (int i = 0; i < C; i++)
		fds[i] = kvt_conn(&c->conns, c->d.sock);
	for (int r = 0; r < R; r++) {
		for (int i = 0; i < C; i++) {
			char k[32], v[32];
			struct kvt_buf b = { 0 };
			snprintf(k, sizeof k, "k%d", i);
			snprintf(v, sizeof v, "v%d.%d", i, r);
			buf_put(&b, (uint64_t)r + 1, k, strlen(k), v, strlen(v), 0, 0);
			send_buf(fds[i], &b);
		}
		for (int i = 0; i < C; i++) {
			Kv__Envelope *e = recv_ok(fds[i]);
			assert_int_equal(e->id, (uint64_t)r + 1);
			assert_int_equal(e->status_code, ST_OK);
			kv__envelope__free_unpacked(e, NULL);
		}
	}
	Kv__StatsReply *st = stats(fds[0], 999);
	assert_int_equal(st->keys, C);
	if (st->io_batches > 0) { /* io_uring was there: it failed, and was left */
		assert_false(st->io_uring);
		assert_int_equal(st->io_batches, 20);
		assert_true(kvt_file_contains(c->d.log, "io_uring failed (Input/output error): one "
							"system call per read and write from now on"));
	}
	kv__stats_reply__free_unpacked(st, NULL);
}

static void test_poll_off(void **state)
{
	struct ctx *c = *state;
	const char *extra[] = { "--poll-us", "0", NULL };
	start(c, "nopoll", extra);
	int fd = kvt_conn(&c->conns, c->d.sock);
	for (uint64_t i = 1; i <= 200; i++)
		ping_ok(fd, i);
	Kv__StatsReply *s = stats(fd, 1000);
	assert_int_equal(s->poll_time_us, 0);
	assert_int_equal(s->poll_hits, 0);
	assert_int_equal(s->poll_misses, 0);
	assert_int_equal(s->poll_window_us, 0);
	kv__stats_reply__free_unpacked(s, NULL);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
#define T_PLAIN(f) { #f " (--io-uring no)", f, setup_plain, teardown, NULL }

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		T(test_methods),
		T(test_methods_scan_stats),
		T(test_max_value),
		T(test_scan_stream),
		T(test_pipeline_10k),
		T(test_100_clients),
		T(test_restart),
		T(test_sigterm_inflight),
		T(test_huge_length),
		T(test_random_bytes),
		T(test_truncated_frames),
		T(test_unknown_method),
		T(test_slow_reader),
		T(test_max_connections),
		T(test_frame_timeout),
		T(test_client_timeout),
		T(test_second_daemon_socket),
		T(test_second_daemon_datadir),
		T(test_flags),
		T(test_socket_setup),
		T(test_sync_always_group_commit),
		T(test_sync_interval),
		T(test_enospc_fail_stop),
		T(test_fdatasync_eio_sync_thread),
		T(test_poll_single_client),
		T(test_poll_off),
		T(test_ring_failure_fallback),
		T(test_concurrent_scans),
		T_PLAIN(test_concurrent_scans),
		T_PLAIN(test_max_value),
		T_PLAIN(test_pipeline_10k),
		T_PLAIN(test_100_clients),
		T_PLAIN(test_random_bytes),
		T_PLAIN(test_slow_reader),
		T_PLAIN(test_truncated_frames),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
