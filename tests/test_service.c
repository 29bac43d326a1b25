/*
 * test_service.c — integration tests of kvd as a service: merges driven by
 * the daemon (Merge RPC, scheduling, automatic trigger, back-off, clients
 * served during a merge, kill -9 mid-merge), the configuration file and
 * SIGHUP, the peer allow-list, and the systemd notification protocol on a
 * fake $NOTIFY_SOCKET.
 *
 * Each case starts the real daemon ($KVD, default build/kvd) on a temp
 * directory and socket and talks the wire protocol with raw sockets
 * (kv_test_daemon.h). The cmocka teardown always stops kvd by pid (and
 * checks a clean exit and no sanitizer report). Every loop is bounded in
 * count and time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>

#include "kv_test_daemon.h"

#define ST_OK 0
#define ST_PERMISSION_DENIED 7
#define ST_INTERNAL 13
#define ST_UNAVAILABLE 14

/* The merge tests' store: NKEYS keys written ROUNDS times, VLEN-byte
 * values, 1 MiB segments: ~15 MB on disk, 2/3 dead. A merge of it takes a
 * few hundred ms, long enough to watch clients being served meanwhile. */
#define NKEYS 40000
#define ROUNDS 3
#define VLEN 100

struct ctx {
	struct kvtd d, d2;
	struct kvt_conns conns;
	int notify_fd;
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof *c);
	if (!c)
		return -1;
	c->notify_fd = -1;
	*state = c;
	return 0;
}

/* Stops both daemons: each must exit 0, with no sanitizer report in its
 * log (kvtd_stop_and_check). */
static int teardown(void **state)
{
	struct ctx *c = *state;
	kvt_conns_close_all(&c->conns);
	if (c->notify_fd >= 0)
		close(c->notify_fd);
	int rc = kvtd_teardown(&c->d, &c->d2);
	free(c);
	return rc;
}

static void start(struct ctx *c, const char *tag, const char *const *extra)
{
	if (kvtd_start(&c->d, tag, extra) < 0)
		fail_msg("kvd did not start (log %s)", c->d.log);
}

static void restart(struct kvtd *d, const char *const *extra)
{
	if (kvtd_start_again(d, extra) < 0)
		fail_msg("kvd did not restart (log %s)", d->log);
}

static void ping_ok(int fd, uint64_t id)
{
	Kv__PingRequest rq = KV__PING_REQUEST__INIT;
	Kv__Envelope *e = kvt_call(fd, id, "Ping", &rq.base);
	assert_non_null(e);
	assert_int_equal(e->id, id);
	assert_int_equal(e->status_code, ST_OK);
	kv__envelope__free_unpacked(e, NULL);
}

static Kv__StatsReply *stats(int fd, uint64_t id)
{
	Kv__StatsReply *r = kvt_stats(fd, id);
	if (!r)
		fail_msg("no Stats reply");
	return r;
}

static uint64_t stat_merges(int fd)
{
	Kv__StatsReply *r = stats(fd, 77);
	uint64_t m = r->merges;
	kv__stats_reply__free_unpacked(r, NULL);
	return m;
}

/* merge_state != "idle"? */
static int merge_busy(int fd)
{
	Kv__StatsReply *r = stats(fd, 78);
	int busy = strcmp(r->merge_state, "idle") != 0;
	kv__stats_reply__free_unpacked(r, NULL);
	return busy;
}

/* ---- the store ------------------------------------------------------------------------ */

static void key_of(char *k, size_t n, int i)
{
	snprintf(k, n, "key%06d", i);
}

/* The value of key i written in round r: VLEN bytes. */
static void value_of(char *v, int r, int i)
{
	int n = snprintf(v, VLEN + 1, "v-%d-%06d-", r, i);
	memset(v + n, 'a' + (i % 26), (size_t)(VLEN - n));
	v[VLEN] = '\0';
}

/* Write keys [0, nkeys) rounds times, pipelined 1000 at a time; every
 * reply must be OK. */
static void fill(int fd, int nkeys, int rounds)
{
	char k[32], v[VLEN + 1];
	for (int r = 0; r < rounds; r++) {
		for (int base = 0; base < nkeys; base += 1000) {
			int n = nkeys - base < 1000 ? nkeys - base : 1000;
			struct kvt_buf b = { 0 };
			for (int i = base; i < base + n; i++) {
				Kv__PutRequest rq = KV__PUT_REQUEST__INIT;
				key_of(k, sizeof k, i);
				value_of(v, r, i);
				rq.key.data = (uint8_t *)k;
				rq.key.len = strlen(k);
				rq.value.data = (uint8_t *)v;
				rq.value.len = VLEN;
				kvt_buf_frame(&b, (uint64_t)i + 1, "Put", &rq.base);
			}
			assert_int_equal(kvt_write_all(fd, b.p, b.len), 0);
			kvt_buf_free(&b);
			for (int i = 0; i < n; i++) {
				Kv__Envelope *e = kvt_recv(fd);
				assert_non_null(e);
				assert_int_equal(e->status_code, ST_OK);
				kv__envelope__free_unpacked(e, NULL);
			}
		}
	}
}

/* Every key [0, nkeys) holds its round-r value (pipelined Gets). */
static void check_all(int fd, int nkeys, int r)
{
	char k[32], v[VLEN + 1];
	for (int base = 0; base < nkeys; base += 1000) {
		int n = nkeys - base < 1000 ? nkeys - base : 1000;
		struct kvt_buf b = { 0 };
		for (int i = base; i < base + n; i++) {
			Kv__GetRequest rq = KV__GET_REQUEST__INIT;
			key_of(k, sizeof k, i);
			rq.key.data = (uint8_t *)k;
			rq.key.len = strlen(k);
			kvt_buf_frame(&b, (uint64_t)i + 1, "Get", &rq.base);
		}
		assert_int_equal(kvt_write_all(fd, b.p, b.len), 0);
		kvt_buf_free(&b);
		for (int i = base; i < base + n; i++) {
			Kv__Envelope *e = kvt_recv(fd);
			assert_non_null(e);
			assert_int_equal(e->id, (uint64_t)i + 1);
			if (e->status_code != ST_OK)
				fail_msg("key %d: status %u (%s)", i, e->status_code, e->status_message);
			Kv__GetReply *g = kv__get_reply__unpack(NULL, e->payload.len, e->payload.data);
			assert_non_null(g);
			value_of(v, r, i);
			if (g->value.len != VLEN || memcmp(g->value.data, v, VLEN) != 0)
				fail_msg("key %d: wrong value", i);
			kv__get_reply__free_unpacked(g, NULL);
			kv__envelope__free_unpacked(e, NULL);
		}
	}
}

static void send_merge(int fd, uint64_t id, int wait)
{
	Kv__MergeRequest rq = KV__MERGE_REQUEST__INIT;
	rq.wait = wait;
	assert_int_equal(kvt_send(fd, id, "Merge", &rq.base), 0);
}

struct mres {
	uint32_t status;
	char state[32];
	char message[256];
	uint64_t reclaimed, duration_ms;
};

/* Receive the Merge reply with this id (within timeout_ms). */
static struct mres recv_merge(int fd, uint64_t id, unsigned timeout_ms)
{
	struct mres m;
	memset(&m, 0, sizeof m);
	Kv__Envelope *e = kvt_recv_t(fd, timeout_ms);
	if (!e)
		fail_msg("no Merge reply (id %llu)", (unsigned long long)id);
	assert_int_equal(e->id, id);
	assert_string_equal(e->method, "Merge");
	assert_true(e->end_of_stream);
	m.status = e->status_code;
	snprintf(m.message, sizeof m.message, "%s", e->status_message ? e->status_message : "");
	if (m.status == ST_OK) {
		Kv__MergeReply *r = kv__merge_reply__unpack(NULL, e->payload.len, e->payload.data);
		assert_non_null(r);
		snprintf(m.state, sizeof m.state, "%s", r->state);
		m.reclaimed = r->reclaimed_bytes;
		m.duration_ms = r->duration_ms;
		kv__merge_reply__free_unpacked(r, NULL);
	}
	kv__envelope__free_unpacked(e, NULL);
	return m;
}

/* Temp files of a merge left in dir? */
static int has_tmp_files(const char *dir)
{
	DIR *d = opendir(dir);
	int found = 0;
	struct dirent *de;
	while (d && (de = readdir(d)) != NULL)
		if (strstr(de->d_name, ".tmp"))
			found = 1;
	if (d)
		closedir(d);
	return found;
}

static const char *const merge_args[] = { "--max-segment-size", "1M", "--merge-auto", "no", NULL };

/* ---- merges ------------------------------------------------------------------------------ */

/* Merge with wait on a store with overwrites: done, space reclaimed, every
 * value intact, before and after a restart. */
static void test_merge_wait_restart(void **state)
{
	struct ctx *c = *state;
	start(c, "mwait", merge_args);
	int fd = kvt_conn(&c->conns, c->d.sock);
	fill(fd, NKEYS, ROUNDS);
	Kv__StatsReply *s0 = stats(fd, 1);
	uint64_t disk0 = s0->disk_bytes;
	assert_true(s0->dead_bytes > 0);
	assert_string_equal(s0->merge_state, "idle");
	assert_int_equal(s0->merges, 0);
	kv__stats_reply__free_unpacked(s0, NULL);

	send_merge(fd, 2, 1);
	struct mres m = recv_merge(fd, 2, 60000);
	assert_int_equal(m.status, ST_OK);
	assert_string_equal(m.state, "done");
	assert_true(m.reclaimed > 0);
	Kv__StatsReply *s1 = stats(fd, 3);
	print_message("merge: %llu -> %llu disk bytes, reclaimed %llu in %llu ms\n",
		      (unsigned long long)disk0, (unsigned long long)s1->disk_bytes,
		      (unsigned long long)m.reclaimed, (unsigned long long)m.duration_ms);
	assert_true(s1->disk_bytes < disk0);
	assert_true(s1->disk_bytes <= disk0 - m.reclaimed + 4096);
	assert_int_equal(s1->merges, 1);
	assert_int_equal(s1->merge_reclaimed_bytes, m.reclaimed);
	assert_int_equal(s1->merge_last_ms, m.duration_ms);
	assert_string_equal(s1->merge_state, "idle");
	assert_int_equal(s1->keys, NKEYS);
	uint64_t disk1 = s1->disk_bytes;
	kv__stats_reply__free_unpacked(s1, NULL);
	check_all(fd, NKEYS, ROUNDS - 1);

	/* nothing left to merge: answered at once, wait or not */
	send_merge(fd, 4, 1);
	m = recv_merge(fd, 4, 10000);
	assert_int_equal(m.status, ST_OK);
	assert_string_equal(m.state, "nothing to merge");

	kvt_conns_close(&c->conns, fd);
	assert_int_equal(kvtd_stop(&c->d), 0);
	restart(&c->d, merge_args);
	fd = kvt_conn(&c->conns, c->d.sock);
	Kv__StatsReply *s2 = stats(fd, 5);
	assert_int_equal(s2->keys, NKEYS);
	assert_true(s2->disk_bytes <= disk1 + 4096); /* + the new active segment */
	kv__stats_reply__free_unpacked(s2, NULL);
	check_all(fd, NKEYS, ROUNDS - 1);
	assert_false(has_tmp_files(c->d.data));
}

/* Pipelined: Merge → "started", Merge → "scheduled" (one runs), a Put that
 * leaves dead bytes for the next one, Merge(wait) → answered "done" only
 * once the scheduled merge ran, then a Ping whose reply comes after it. */
static void test_merge_scheduled(void **state)
{
	struct ctx *c = *state;
	start(c, "msched", merge_args);
	int fd = kvt_conn(&c->conns, c->d.sock);
	fill(fd, NKEYS, ROUNDS);
	struct kvt_buf b = { 0 };
	Kv__MergeRequest mq = KV__MERGE_REQUEST__INIT;
	kvt_buf_frame(&b, 10, "Merge", &mq.base);
	kvt_buf_frame(&b, 11, "Merge", &mq.base);
	Kv__PutRequest pq = KV__PUT_REQUEST__INIT;
	pq.key.data = (uint8_t *)"key000007";
	pq.key.len = 9;
	pq.value.data = (uint8_t *)"newer";
	pq.value.len = 5;
	kvt_buf_frame(&b, 12, "Put", &pq.base);
	mq.wait = 1;
	kvt_buf_frame(&b, 13, "Merge", &mq.base);
	Kv__PingRequest pr = KV__PING_REQUEST__INIT;
	kvt_buf_frame(&b, 14, "Ping", &pr.base);
	assert_int_equal(kvt_write_all(fd, b.p, b.len), 0);
	kvt_buf_free(&b);

	struct mres m = recv_merge(fd, 10, 10000);
	assert_int_equal(m.status, ST_OK);
	assert_string_equal(m.state, "started");
	m = recv_merge(fd, 11, 10000);
	assert_int_equal(m.status, ST_OK);
	assert_string_equal(m.state, "scheduled");
	Kv__Envelope *e = kvt_recv(fd);
	assert_non_null(e);
	assert_int_equal(e->id, 12);
	assert_int_equal(e->status_code, ST_OK);
	kv__envelope__free_unpacked(e, NULL);
	m = recv_merge(fd, 13, 60000);
	assert_int_equal(m.status, ST_OK);
	assert_string_equal(m.state, "done");
	e = kvt_recv(fd);
	assert_non_null(e);
	assert_int_equal(e->id, 14);
	assert_string_equal(e->method, "Ping");
	kv__envelope__free_unpacked(e, NULL);

	int other = kvt_conn(&c->conns, c->d.sock);
	assert_int_equal(stat_merges(other), 2); /* the scheduled one ran after */
	assert_false(merge_busy(other));
	char v[64];
	assert_int_equal(kvt_get(other, 20, "key000007", v, sizeof v), ST_OK);
	assert_string_equal(v, "newer");
	assert_true(kvtd_wait_log(&c->d, "scheduled after it", 1000));
	check_all(other, 7, ROUNDS - 1);
}

/* Another connection's puts and gets are served while a merge runs, each
 * quickly. */
static void test_merge_serves_clients(void **state)
{
	struct ctx *c = *state;
	start(c, "mserve", merge_args);
	int fd = kvt_conn(&c->conns, c->d.sock);
	fill(fd, NKEYS, ROUNDS);
	int other = kvt_conn(&c->conns, c->d.sock);
	send_merge(fd, 100, 1);
	uint64_t t_start = kvt_now_ms() + 10000;
	while (!merge_busy(other) && kvt_now_ms() < t_start)
		kvt_sleep_ms(1);
	int during = 0, ops = 0;
	uint64_t worst = 0, t_end = kvt_now_ms() + 60000;
	char k[32], v[VLEN + 1], want[VLEN + 1];
	for (int i = 0; i < 200000 && kvt_now_ms() < t_end; i++) {
		int before = merge_busy(other);
		uint64_t t0 = kvt_now_ms();
		snprintf(k, sizeof k, "during%d", i);
		assert_int_equal(kvt_put(other, 1000 + (uint64_t)i, k, "x", 1), ST_OK);
		key_of(k, sizeof k, (i * 7919) % NKEYS);
		assert_int_equal(kvt_get(other, 2, k, v, sizeof v), ST_OK);
		value_of(want, ROUNDS - 1, (i * 7919) % NKEYS);
		assert_string_equal(v, want);
		uint64_t dt = kvt_now_ms() - t0;
		worst = dt > worst ? dt : worst;
		ops++;
		int after = merge_busy(other);
		if (before && after)
			during++;
		if (!after && i > 0)
			break;
	}
	struct mres m = recv_merge(fd, 100, 60000);
	assert_int_equal(m.status, ST_OK);
	assert_string_equal(m.state, "done");
	print_message("merge of %llu ms: %d put+get pairs served during it (of %d), worst %llu ms\n",
		      (unsigned long long)m.duration_ms, during, ops, (unsigned long long)worst);
	assert_true(during >= 5);
	assert_true(worst < 1000);
	check_all(fd, NKEYS, ROUNDS - 1);
}

/* A connection that waits for a merge and dies, and one that half-closes:
 * the first is dropped without harm, the second still gets its replies in
 * order, then EOF. */
static void test_merge_waiter_dies(void **state)
{
	struct ctx *c = *state;
	start(c, "mdies", merge_args);
	int fd = kvt_conn(&c->conns, c->d.sock);
	fill(fd, NKEYS, ROUNDS);
	int a = kvt_conn(&c->conns, c->d.sock);
	send_merge(a, 1, 1);
	kvt_conns_close(&c->conns, a);
	uint64_t end = kvt_now_ms() + 60000;
	while (stat_merges(fd) < 1 && kvt_now_ms() < end)
		kvt_sleep_ms(20);
	assert_int_equal(stat_merges(fd), 1);
	ping_ok(fd, 2);

	fill(fd, 2000, 1); /* dead bytes again */
	int h = kvt_conn(&c->conns, c->d.sock);
	struct kvt_buf b = { 0 };
	Kv__MergeRequest mq = KV__MERGE_REQUEST__INIT;
	mq.wait = 1;
	kvt_buf_frame(&b, 5, "Merge", &mq.base);
	Kv__PingRequest pr = KV__PING_REQUEST__INIT;
	kvt_buf_frame(&b, 6, "Ping", &pr.base);
	assert_int_equal(kvt_write_all(h, b.p, b.len), 0);
	kvt_buf_free(&b);
	assert_int_equal(shutdown(h, SHUT_WR), 0);
	struct mres m = recv_merge(h, 5, 60000);
	assert_int_equal(m.status, ST_OK);
	assert_string_equal(m.state, "done");
	Kv__Envelope *e = kvt_recv(h);
	assert_non_null(e);
	assert_int_equal(e->id, 6);
	kv__envelope__free_unpacked(e, NULL);
	assert_true(kvt_wait_closed(h, 5000, NULL));
	assert_int_equal(stat_merges(fd), 2);
}

/* SIGTERM while a Merge waits: it is answered UNAVAILABLE, kvd exits 0,
 * and the data is intact after a restart. */
static void test_merge_wait_sigterm(void **state)
{
	struct ctx *c = *state;
	start(c, "mterm", merge_args);
	int fd = kvt_conn(&c->conns, c->d.sock);
	fill(fd, NKEYS, ROUNDS);
	int other = kvt_conn(&c->conns, c->d.sock);
	send_merge(fd, 9, 1);
	uint64_t end = kvt_now_ms() + 10000;
	while (!merge_busy(other) && kvt_now_ms() < end)
		kvt_sleep_ms(1);
	kill(c->d.pid, SIGTERM);
	struct mres m = recv_merge(fd, 9, 10000);
	if (m.status == ST_OK) { /* the merge beat the signal: still correct */
		assert_string_equal(m.state, "done");
	} else {
		assert_int_equal(m.status, ST_UNAVAILABLE);
		assert_string_equal(m.message, "kvd is shutting down");
	}
	assert_int_equal(kvtd_wait_exit(&c->d, 10000), 0);
	assert_int_equal(kvtd_exit_code(&c->d), 0);
	kvt_conns_close(&c->conns, fd);
	kvt_conns_close(&c->conns, other);
	restart(&c->d, merge_args);
	fd = kvt_conn(&c->conns, c->d.sock);
	check_all(fd, NKEYS, ROUNDS - 1);
	assert_false(has_tmp_files(c->d.data));
}

/* kill -9 of kvd mid-merge: every acknowledged write is there after a
 * restart, and a merge then completes. */
static void test_merge_kill9(void **state)
{
	struct ctx *c = *state;
	start(c, "mkill", merge_args);
	int fd = kvt_conn(&c->conns, c->d.sock);
	fill(fd, NKEYS, ROUNDS);
	send_merge(fd, 1, 0);
	struct mres m = recv_merge(fd, 1, 10000);
	assert_string_equal(m.state, "started");
	char k[32];
	for (int i = 0; i < 200; i++) {
		snprintf(k, sizeof k, "after%d", i);
		assert_int_equal(kvt_put(fd, 10 + (uint64_t)i, k, k, strlen(k)), ST_OK);
	}
	assert_true(merge_busy(fd)); /* still merging: the kill lands mid-merge */
	kill(c->d.pid, SIGKILL);
	assert_int_equal(kvtd_wait_exit(&c->d, 10000), 0);
	kvt_conns_close(&c->conns, fd);
	kvt_sleep_ms(100); /* the worker dies with kvd (PR_SET_PDEATHSIG) */
	restart(&c->d, merge_args);
	fd = kvt_conn(&c->conns, c->d.sock);
	check_all(fd, NKEYS, ROUNDS - 1);
	char v[64];
	for (int i = 0; i < 200; i++) {
		snprintf(k, sizeof k, "after%d", i);
		assert_int_equal(kvt_get(fd, 500, k, v, sizeof v), ST_OK);
		assert_string_equal(v, k);
	}
	Kv__StatsReply *s = stats(fd, 2);
	assert_int_equal(s->keys, NKEYS + 200);
	kv__stats_reply__free_unpacked(s, NULL);
	assert_false(has_tmp_files(c->d.data));
	send_merge(fd, 3, 1);
	m = recv_merge(fd, 3, 60000);
	assert_int_equal(m.status, ST_OK);
	assert_string_equal(m.state, "done");
	check_all(fd, NKEYS, ROUNDS - 1);
}

/* The timer starts a merge once the sealed segments are dead enough; with
 * merge-auto no it does not. */
static void test_merge_auto(void **state)
{
	struct ctx *c = *state;
	const char *args[] = { "--max-segment-size", "64K", "--merge-check-interval-ms", "50",
			       "--merge-min-dead-ratio", "0.3", NULL };
	start(c, "mauto", args);
	int fd = kvt_conn(&c->conns, c->d.sock);
	fill(fd, 2000, 3);
	uint64_t end = kvt_now_ms() + 10000;
	while (stat_merges(fd) < 1 && kvt_now_ms() < end)
		kvt_sleep_ms(20);
	assert_true(stat_merges(fd) >= 1);
	assert_true(kvtd_wait_log(&c->d, "(automatic: ", 1000));
	assert_true(kvt_file_contains(c->d.log, "merge priority idle")); /* the default */
	check_all(fd, 2000, 2);

	const char *off[] = { "--max-segment-size", "64K", "--merge-check-interval-ms", "50",
			      "--merge-min-dead-ratio", "0.3", "--merge-auto", "no", NULL };
	if (kvtd_start(&c->d2, "mauto2", off) < 0)
		fail_msg("kvd did not start");
	int fd2 = kvt_conn(&c->conns, c->d2.sock);
	fill(fd2, 2000, 3);
	kvt_sleep_ms(500);
	assert_int_equal(stat_merges(fd2), 0);
}

/* Failing merges (the worker dies at once): the automatic trigger backs
 * off (logged) instead of retrying every check; a waiting request gets the
 * failure; the data is untouched. */
static void test_merge_backoff(void **state)
{
	struct ctx *c = *state;
	const char *args[] = { "--max-segment-size", "64K", "--merge-check-interval-ms", "50",
			       "--merge-min-dead-ratio", "0.3", NULL };
	setenv("KVD_MERGE_CRASH_AT", "1", 1);
	int rc = kvtd_start(&c->d, "mback", args);
	unsetenv("KVD_MERGE_CRASH_AT");
	if (rc < 0)
		fail_msg("kvd did not start (log %s)", c->d.log);
	int fd = kvt_conn(&c->conns, c->d.sock);
	fill(fd, 2000, 3);
	assert_true(kvtd_wait_log(&c->d, "automatic merges paused for 10 s", 10000));
	send_merge(fd, 5, 1);
	struct mres m = recv_merge(fd, 5, 30000);
	assert_int_equal(m.status, ST_INTERNAL);
	assert_non_null(strstr(m.message, "merge failed: worker killed by signal 9"));
	assert_true(kvtd_wait_log(&c->d, "automatic merges paused for 20 s", 2000));
	kvt_sleep_ms(500); /* ten more checks: none may start a merge */
	assert_int_equal(kvt_file_count(c->d.log, "merge started:"), 2);
	assert_int_equal(stat_merges(fd), 0);
	check_all(fd, 2000, 2);
}

/* ---- configuration ------------------------------------------------------------------------- */

/* Run kvd with args (and the temp dir's data and socket); it must exit
 * with code and log msg. */
static void expect_exit(struct ctx *c, const char *const *args, int code, const char *msg)
{
	kvtd_cleanup(&c->d2);
	assert_int_equal(kvtd_init(&c->d2, "conf"), 0);
	assert_int_equal(kvtd_spawn(&c->d2, args), 0);
	assert_int_equal(kvtd_wait_exit(&c->d2, 10000), 0);
	if (kvtd_exit_code(&c->d2) != code)
		fail_msg("exit %d, want %d (log %s)", kvtd_exit_code(&c->d2), code, c->d2.log);
	if (!kvt_file_contains(c->d2.log, msg))
		fail_msg("log %s lacks \"%s\"", c->d2.log, msg);
}

/* A file with text; the path is written to path. */
static void conf_file(struct ctx *c, char *path, size_t n, const char *text)
{
	snprintf(path, n, "%s/kvd.conf", c->d.dir);
	assert_int_equal(kvt_write_file(path, text), 0);
}

static void test_config_errors(void **state)
{
	struct ctx *c = *state;
	char path[400], msg[600];
	assert_int_equal(kvtd_init(&c->d, "conferr"), 0);
	const char *args[] = { "--config", path, NULL };

	conf_file(c, path, sizeof path, "# kvd\nsync = always\nbogus = 1\n");
	snprintf(msg, sizeof msg, "%s:3: unknown key 'bogus'", path);
	expect_exit(c, args, 2, msg);

	conf_file(c, path, sizeof path, "\nsync = sometimes\n");
	snprintf(msg, sizeof msg, "%s:2: bad value for sync: 'sometimes'", path);
	expect_exit(c, args, 2, msg);

	conf_file(c, path, sizeof path, "log-level = info\nmax-connections = 0\n");
	snprintf(msg, sizeof msg, "%s:2: bad value for max-connections: '0': want 1..1000000",
		 path);
	expect_exit(c, args, 2, msg);

	conf_file(c, path, sizeof path, "sync = never\ndata-dir\n");
	snprintf(msg, sizeof msg, "%s:2: not a `key = value` line", path);
	expect_exit(c, args, 2, msg);

	conf_file(c, path, sizeof path, "[kvd]\nsync = never\n");
	snprintf(msg, sizeof msg, "%s:2: sections are not used ([kvd])", path);
	expect_exit(c, args, 2, msg);

	conf_file(c, path, sizeof path, "allow-uids = 0, no_such_user_kvd\n");
	snprintf(msg, sizeof msg, "%s:1: bad value for allow-uids: '0, no_such_user_kvd': no user "
				  "named 'no_such_user_kvd'",
		 path);
	expect_exit(c, args, 2, msg);

	char longline[400];
	memset(longline, 'x', 300);
	memcpy(longline, "data-dir = /", 12);
	snprintf(longline + 300, sizeof longline - 300, "\n");
	conf_file(c, path, sizeof path, longline);
	snprintf(msg, sizeof msg, "%s:1: line too long", path);
	expect_exit(c, args, 2, msg);

	const char *missing[] = { "--config", "/nonexistent/kvd.conf", NULL };
	expect_exit(c, missing, 2, "cannot read /nonexistent/kvd.conf: No such file or directory");
	const char *ratio[] = { "--merge-min-dead-ratio", "1.5", NULL };
	expect_exit(c, ratio, 2, "bad --merge-min-dead-ratio '1.5': want a ratio from 0 to 1");
	const char *bytes[] = { "--merge-min-dead-bytes", "lots", NULL };
	expect_exit(c, bytes, 2, "bad --merge-min-dead-bytes 'lots'");
	const char *rate[] = { "--merge-rate-limit", "-1", NULL };
	expect_exit(c, rate, 2, "bad --merge-rate-limit '-1': want MiB/s, 0..1048576 (0 = unlimited)");
	const char *prio[] = { "--merge-priority", "high", NULL };
	expect_exit(c, prio, 2, "bad --merge-priority 'high': want idle or low");
	const char *poll[] = { "--poll-us", "20000", NULL };
	expect_exit(c, poll, 2, "bad --poll-us '20000': want microseconds, 0..10000 (0 = never poll)");
	const char *uring[] = { "--io-uring", "maybe", NULL };
	expect_exit(c, uring, 2, "bad --io-uring 'maybe': want yes or no");
	const char *uids[] = { "--allow-gids", "no_such_group_kvd", NULL };
	expect_exit(c, uids, 2, "no group named 'no_such_group_kvd'");
}

/* Values from the file (strings included: copied, not borrowed) apply;
 * flags win over them. */
static void test_config_file_and_flags(void **state)
{
	struct ctx *c = *state;
	char path[400], text[1200], data2[300], sock2[300];
	assert_int_equal(kvtd_init(&c->d, "confok"), 0);
	snprintf(data2, sizeof data2, "%s/data-from-file", c->d.dir);
	snprintf(sock2, sizeof sock2, "%s/file.sock", c->d.dir);
	snprintf(text, sizeof text,
		 "# written by test_service\n"
		 "data-dir = %s\n"
		 "socket = %s\n"
		 "socket-mode = 0600\n"
		 "sync = never\n"
		 "; a comment\n"
		 "max-connections = 7\n"
		 "log-level = debug\n"
		 "merge-auto = no\n"
		 "merge-min-dead-ratio = 0.25\n"
		 "merge-min-dead-bytes = 1G\n"
		 "merge-check-interval-ms = 500\n"
		 "merge-rate-limit = 7\n"
		 "merge-priority = low\n"
		 "allow-uids = \n",
		 data2, sock2);
	conf_file(c, path, sizeof path, text);
	const char *args[] = { "--config", path, "--sync", "always", NULL };
	snprintf(c->d.sock, sizeof c->d.sock, "%s", sock2);
	assert_int_equal(kvtd_spawn_raw(&c->d, args), 0);
	if (kvtd_wait_ready(&c->d, 10000) < 0)
		fail_msg("kvd did not start (log %s)", c->d.log);
	int fd = kvt_conn(&c->conns, sock2);
	assert_int_equal(kvt_put(fd, 1, "k", "v", 1), ST_OK);
	Kv__StatsReply *s = stats(fd, 2);
	assert_string_equal(s->sync_mode, "always"); /* the flag won */
	kv__stats_reply__free_unpacked(s, NULL);
	struct stat st;
	assert_int_equal(stat(sock2, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	char lockf[460];
	snprintf(lockf, sizeof lockf, "%s/LOCK", data2);
	assert_int_equal(stat(lockf, &st), 0);
	assert_true(kvtd_wait_log(&c->d, "event loop started", 2000)); /* debug level */
	assert_true(kvtd_wait_log(&c->d, "merge rate limit 7 MiB/s, merge priority low", 2000));
	/* max-connections 7 from the file: fd + 6 more are served, then refused */
	int refused = 0;
	for (int i = 0; i < 7; i++) {
		int x = kvt_conn(&c->conns, sock2);
		Kv__Envelope *e = kvt_recv_t(x, 300); /* a refusal comes unasked */
		if (e) {
			assert_int_equal(e->id, 0);
			assert_int_equal(e->status_code, ST_UNAVAILABLE);
			kv__envelope__free_unpacked(e, NULL);
			refused++;
		} else {
			ping_ok(x, 10 + (uint64_t)i);
		}
	}
	assert_int_equal(refused, 1); /* 1 + 6 served, the 8th refused */
}

/* daemon/kvd.conf (the example installed as /etc/kvd/kvd.conf) shows every
 * key, commented out with its default: uncommented, kvd accepts it. */
static void test_config_example(void **state)
{
	static const char *const all_keys[] = {
		"data-dir",	    "socket",		    "socket-mode",	    "sync",
		"max-segment-size", "max-connections",	    "log-level",	    "repair",
		"frame-timeout-ms", "write-timeout-ms",	    "merge-auto",	    "merge-min-dead-ratio",
		"merge-min-dead-bytes", "merge-check-interval-ms", "merge-rate-limit", "merge-priority", "poll-us", "io-uring", "allow-uids",	    "allow-gids",
	};
	struct ctx *c = *state;
	assert_int_equal(kvtd_init(&c->d, "confex"), 0);
	FILE *in = fopen("daemon/kvd.conf", "r");
	if (!in)
		fail_msg("daemon/kvd.conf not found (run from the source tree)");
	char path[400], line[512], seen[4096] = " ";
	snprintf(path, sizeof path, "%s/example.conf", c->d.dir);
	FILE *out = fopen(path, "w");
	assert_non_null(out);
	int nkeys = 0;
	for (int n = 0; n < 1000 && fgets(line, sizeof line, in); n++) {
		char key[64], tag[70];
		/* "#key = value": the first one of each key is its default */
		if (line[0] != '#' || sscanf(line + 1, "%63[a-z-] =", key) != 1 || !strchr(line, '='))
			continue;
		snprintf(tag, sizeof tag, " %s ", key);
		if (strstr(seen, tag))
			continue;
		strncat(seen, tag + 1, sizeof seen - strlen(seen) - 1);
		fputs(line + 1, out);
		nkeys++;
	}
	fclose(in);
	assert_int_equal(fclose(out), 0);
	for (size_t i = 0; i < sizeof all_keys / sizeof all_keys[0]; i++) {
		char tag[70];
		snprintf(tag, sizeof tag, " %s ", all_keys[i]);
		if (!strstr(seen, tag))
			fail_msg("daemon/kvd.conf does not show key %s", all_keys[i]);
	}
	assert_int_equal(nkeys, (int)(sizeof all_keys / sizeof all_keys[0]));
	const char *args[] = { "--config", path, NULL }; /* + --data-dir, --socket */
	restart(&c->d, args);
	int fd = kvt_conn(&c->conns, c->d.sock);
	Kv__StatsReply *r = stats(fd, 1);
	assert_string_equal(r->sync_mode, "interval:1000");
	kv__stats_reply__free_unpacked(r, NULL);
}

/* SIGHUP re-reads the file: runtime keys change (log level observable in
 * the log, allow-lists at the next accept), others are reported as needing
 * a restart, flags still win, and a bad file changes nothing. */
static void test_sighup_reload(void **state)
{
	struct ctx *c = *state;
	char path[400];
	assert_int_equal(kvtd_init(&c->d, "hup"), 0);
	conf_file(c, path, sizeof path, "log-level = info\nmerge-auto = no\n");
	const char *args[] = { "--config", path, "--max-connections", "30", NULL };
	restart(&c->d, args);
	int fd = kvt_conn(&c->conns, c->d.sock);
	ping_ok(fd, 1);
	assert_false(kvt_file_contains(c->d.log, "accepted (fd"));

	conf_file(c, path, sizeof path,
		  "log-level = debug\nmerge-auto = yes\nsync = always\nmax-connections = 50\n"
		  "merge-priority = low\npoll-us = 0\n");
	kill(c->d.pid, SIGHUP);
	assert_true(kvtd_wait_log(&c->d, "SIGHUP: reloaded", 5000));
	assert_true(kvt_file_contains(c->d.log, "SIGHUP: log-level: 'info' -> 'debug'"));
	assert_true(kvt_file_contains(c->d.log, "SIGHUP: merge-auto: 'no' -> 'yes'"));
	assert_true(kvt_file_contains(c->d.log, "SIGHUP: merge-priority: 'idle' -> 'low'"));
	assert_true(kvt_file_contains(c->d.log, "SIGHUP: poll-us: '50' -> '0'"));
	assert_true(kvt_file_contains(c->d.log,
				      "SIGHUP: sync: 'interval:1000' -> 'always' needs a restart"));
	assert_false(kvt_file_contains(c->d.log, "max-connections:")); /* the flag wins */
	int fd2 = kvt_conn(&c->conns, c->d.sock);
	ping_ok(fd2, 2);
	assert_true(kvtd_wait_log(&c->d, "accepted (fd", 2000)); /* now at debug */
	Kv__StatsReply *s = stats(fd2, 3);
	assert_string_equal(s->sync_mode, "interval:1000"); /* needs a restart */
	assert_int_equal(s->poll_window_us, 0); /* poll-us 0 applies at once */
	uint64_t polled = s->poll_time_us, hits = s->poll_hits;
	kv__stats_reply__free_unpacked(s, NULL);
	for (uint64_t i = 0; i < 50; i++)
		ping_ok(fd2, 100 + i);
	s = stats(fd2, 200);
	assert_int_equal(s->poll_time_us, polled);
	assert_int_equal(s->poll_hits, hits);
	kv__stats_reply__free_unpacked(s, NULL);

	conf_file(c, path, sizeof path, "log-level = loud\n");
	kill(c->d.pid, SIGHUP);
	assert_true(kvtd_wait_log(&c->d, "configuration not reloaded", 5000));
	char msg[500];
	snprintf(msg, sizeof msg, "%s:1: bad value for log-level: 'loud'", path);
	assert_true(kvt_file_contains(c->d.log, msg));
	ping_ok(fd2, 4);

	conf_file(c, path, sizeof path, "allow-uids = 12345\n");
	kill(c->d.pid, SIGHUP);
	assert_true(kvtd_wait_log(&c->d, "SIGHUP: allow-uids: '' -> '12345'", 5000));
	int fd3 = kvt_conn(&c->conns, c->d.sock);
	Kv__Envelope *e = kvt_recv(fd3);
	assert_non_null(e);
	assert_int_equal(e->status_code, ST_PERMISSION_DENIED);
	kv__envelope__free_unpacked(e, NULL);
	ping_ok(fd, 5); /* checked at accept: open connections stay */
}

/* ---- access control -------------------------------------------------------------------------- */

static void test_acl(void **state)
{
	struct ctx *c = *state;
	char uid[32], gid[32], want[160];
	snprintf(uid, sizeof uid, "%d", (int)getuid());
	snprintf(gid, sizeof gid, "%d", (int)getgid());
	/* 12345 is not us (the tests run as root; anyone but 12345 works) */
	assert_true(getuid() != 12345);
	const char *deny[] = { "--allow-uids", "12345", "--allow-gids", "54321", NULL };
	start(c, "acl", deny);
	int fd = kvt_conn(&c->conns, c->d.sock);
	Kv__Envelope *e = kvt_recv(fd);
	assert_non_null(e);
	assert_int_equal(e->id, 0);
	assert_int_equal(e->status_code, ST_PERMISSION_DENIED);
	snprintf(want, sizeof want, "uid %s gid %s is not allowed", uid, gid);
	assert_non_null(strstr(e->status_message, want));
	kv__envelope__free_unpacked(e, NULL);
	assert_true(kvt_wait_closed(fd, 5000, NULL));
	snprintf(want, sizeof want, "refused a connection from pid %d uid %s gid %s", (int)getpid(),
		 uid, gid);
	assert_true(kvtd_wait_log(&c->d, want, 2000));
	assert_int_equal(kvtd_stop(&c->d), 0);

	/* our uid listed (by name for root, by number otherwise) */
	const char *self = getuid() == 0 ? "12345,root" : uid;
	const char *allow[] = { "--allow-uids", self, NULL };
	restart(&c->d, allow);
	fd = kvt_conn(&c->conns, c->d.sock);
	ping_ok(fd, 1);
	assert_int_equal(kvtd_stop(&c->d), 0);

	/* not our uid, but our group */
	const char *bygid[] = { "--allow-uids", "12345", "--allow-gids", gid, NULL };
	restart(&c->d, bygid);
	fd = kvt_conn(&c->conns, c->d.sock);
	ping_ok(fd, 2);
}

/* ---- systemd notifications ------------------------------------------------------------------- */

/* Next datagram on fd within timeout_ms into buf; 0, or -1 on timeout. */
static int recv_note(int fd, char *buf, size_t cap, unsigned timeout_ms)
{
	struct pollfd p = { fd, POLLIN, 0 };
	uint64_t end = kvt_now_ms() + timeout_ms;
	for (;;) {
		uint64_t now = kvt_now_ms();
		if (now >= end)
			return -1;
		int r = poll(&p, 1, (int)(end - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		ssize_t n = recv(fd, buf, cap - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		buf[n] = '\0';
		return 0;
	}
}

/* Wait for a notification containing want, skipping WATCHDOG=1 ones. */
static void expect_note(int fd, const char *want)
{
	char buf[512];
	for (int i = 0; i < 100; i++) {
		if (recv_note(fd, buf, sizeof buf, 10000) < 0)
			fail_msg("no notification \"%s\"", want);
		if (strstr(buf, want))
			return;
		if (strcmp(buf, "WATCHDOG=1") != 0)
			fail_msg("notification \"%s\" while waiting for \"%s\"", buf, want);
	}
	fail_msg("no notification \"%s\"", want);
}

/* STATUS=recovering, then READY=1 only once the socket accepts, WATCHDOG=1
 * at half of WATCHDOG_USEC, STATUS=merging during a merge, STOPPING=1 on
 * SIGTERM. */
static void test_notify(void **state)
{
	struct ctx *c = *state;
	start(c, "notify", NULL);
	int fd = kvt_conn(&c->conns, c->d.sock);
	fill(fd, 20000, 1);
	kvt_conns_close(&c->conns, fd);
	assert_int_equal(kvtd_stop(&c->d), 0);

	char npath[400];
	snprintf(npath, sizeof npath, "%s/notify", c->d.dir);
	c->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(c->notify_fd >= 0);
	struct sockaddr_un sa;
	assert_int_equal(kvt_sockaddr(&sa, npath), 0);
	assert_int_equal(bind(c->notify_fd, (struct sockaddr *)&sa, sizeof sa), 0);
	setenv("NOTIFY_SOCKET", npath, 1);
	setenv("WATCHDOG_USEC", "300000", 1);
	int rc = kvtd_spawn(&c->d, NULL);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	assert_int_equal(rc, 0);

	char buf[512];
	assert_int_equal(recv_note(c->notify_fd, buf, sizeof buf, 10000), 0);
	assert_string_equal(buf, "STATUS=recovering");
	assert_int_equal(recv_note(c->notify_fd, buf, sizeof buf, 10000), 0);
	assert_string_equal(buf, "READY=1\nSTATUS=serving 20000 keys");
	fd = kvt_conn(&c->conns, c->d.sock); /* at READY the socket already accepts */
	ping_ok(fd, 1);
	uint64_t t0 = kvt_now_ms();
	expect_note(c->notify_fd, "WATCHDOG=1");
	expect_note(c->notify_fd, "WATCHDOG=1");
	assert_true(kvt_now_ms() - t0 < 1000); /* every 150 ms */

	fill(fd, 100, 1); /* dead bytes */
	send_merge(fd, 2, 1);
	expect_note(c->notify_fd, "STATUS=merging");
	struct mres m = recv_merge(fd, 2, 60000);
	assert_string_equal(m.state, "done");
	expect_note(c->notify_fd, "STATUS=serving 20000 keys");

	kill(c->d.pid, SIGTERM);
	expect_note(c->notify_fd, "STOPPING=1");
	assert_int_equal(kvtd_wait_exit(&c->d, 10000), 0);
	assert_int_equal(kvtd_exit_code(&c->d), 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		T(test_merge_wait_restart),
		T(test_merge_scheduled),
		T(test_merge_serves_clients),
		T(test_merge_waiter_dies),
		T(test_merge_wait_sigterm),
		T(test_merge_kill9),
		T(test_merge_auto),
		T(test_merge_backoff),
		T(test_config_errors),
		T(test_config_file_and_flags),
		T(test_config_example),
		T(test_sighup_reload),
		T(test_acl),
		T(test_notify),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
