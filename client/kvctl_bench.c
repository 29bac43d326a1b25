/*
 * kvctl_bench.c — `kvctl bench`: a load generator for kvd in the spirit of
 * redis-benchmark, built on libkvclient's pipelined interface.
 *
 * Model: C connections spread round-robin over T threads (default 1, see
 * DEFAULT_THREADS); each thread multiplexes its connections with epoll and
 * only non-blocking calls (kvc_pipe_send, kvc_pipe_next(.., 0)). Like
 * redis-benchmark, a connection writes a round of P requests at once and
 * writes the next round when every reply of the round is in; a reply's
 * latency is from the write of its round to the moment it was parsed. The
 * replies of all the connections an epoll_wait returned are parsed before
 * any next round is written.
 * The N requests of a test are split evenly over the connections.
 *
 * Latencies go into a log-linear ("HDR-style") histogram of nanoseconds:
 * 64 linear sub-buckets per power of two (relative error < 1/64), fixed
 * size, no allocation per sample; percentiles are read from it.
 *
 * Owns: the bench's connections (opened at the start, closed at the end),
 * its threads (joined before each test reports), their histograms. Output:
 * the report on stdout (text, or one JSON object per test with --json), a
 * progress line on stderr when stderr is a terminal.
 *
 * Invariants:
 *  1. A connection has either no request outstanding (idle) or exactly the
 *     `inflight` requests of its current round; a new round is written only
 *     when inflight is 0, so every reply belongs to the current round.
 *  2. Every request a test issues is counted exactly once: a reply (ok,
 *     not found, or error status), or a failure of its connection
 *     (counted in `failed` with the first error kept).
 *  3. Only the owning thread touches a connection during a phase; the main
 *     thread reads nothing but the atomic `done` counters until it joined
 *     every thread.
 */
#include "kvctl.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CLIENTS 50
#define DEFAULT_REQUESTS 100000
#define DEFAULT_VALUE 100
#define DEFAULT_KEYSPACE 1000000
#define DEFAULT_KEYLEN 16 /* "key:" + 12 digits, as redis-benchmark's keys */
#define DEFAULT_BATCH_OPS 10
#define DEFAULT_THREADS 1 /* measured fastest on 2 cores: kvctl.1, BENCH */
#define MAX_KEYLEN 256
#define MAX_CLIENTS 10000
#define MAX_PIPELINE 100000
#define MAX_BATCH_OPS 10000
#define EV_BATCH 64

/* ---- histogram ---------------------------------------------------------------- */

#define H_SUB_BITS 7                          /* 2^7 sub-buckets, top half used */
#define H_HALF (1u << (H_SUB_BITS - 1))       /* 64 */
#define H_BUCKETS ((64 - H_SUB_BITS + 1) * H_HALF + H_HALF)

struct hist {
	uint64_t n[H_BUCKETS];
	uint64_t count, max, min;
	double sum;
};

static unsigned h_index(uint64_t v)
{
	if (v < 2 * H_HALF)
		return (unsigned)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);
	unsigned shift = msb - (H_SUB_BITS - 1);
	return shift * H_HALF + (unsigned)(v >> shift);
}

/* Highest value that maps to bucket i. */
static uint64_t h_upper(unsigned i)
{
	if (i < 2 * H_HALF)
		return i;
	unsigned shift = i / H_HALF - 1;
	uint64_t m = i - shift * H_HALF;
	return ((m + 1) << shift) - 1;
}

/* Lowest value that maps to bucket i. */
static uint64_t h_lower(unsigned i)
{
	if (i < 2 * H_HALF)
		return i;
	unsigned shift = i / H_HALF - 1;
	return (uint64_t)(i - shift * H_HALF) << shift;
}

static void h_init(struct hist *h)
{
	memset(h, 0, sizeof *h);
	h->min = UINT64_MAX;
}

static void h_add(struct hist *h, uint64_t v)
{
	h->n[h_index(v)]++;
	h->count++;
	h->sum += (double)v;
	if (v > h->max)
		h->max = v;
	if (v < h->min)
		h->min = v;
}

static void h_merge(struct hist *dst, const struct hist *src)
{
	for (unsigned i = 0; i < H_BUCKETS; i++)
		dst->n[i] += src->n[i];
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->max > dst->max)
		dst->max = src->max;
	if (src->min < dst->min)
		dst->min = src->min;
}

/* Value at quantile q (0..1): the upper bound of the bucket holding it,
 * never above the largest sample. */
static uint64_t h_quantile(const struct hist *h, double q)
{
	if (!h->count)
		return 0;
	uint64_t rank = (uint64_t)ceil(q * (double)h->count);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < H_BUCKETS; i++) {
		seen += h->n[i];
		if (seen >= rank) {
			uint64_t v = h_upper(i);
			return v > h->max ? h->max : v;
		}
	}
	return h->max;
}

/* ---- the bench ------------------------------------------------------------------- */

enum op { OP_PUT, OP_GET, OP_DEL, OP_BATCH, NOPS };
static const char *const op_names[NOPS] = { "put", "get", "del", "batch" };

struct bench;
struct bthread;

struct bconn {
	kvc_client *c;
	struct bthread *t;
	uint64_t quota;   /* requests still to write in this phase */
	unsigned inflight; /* invariant 1 */
	uint64_t sent_ns; /* when the current round was written */
	int want_out, registered, dead;
};

struct bthread {
	struct bench *b;
	pthread_t tid;
	int started;
	int epfd;
	struct bconn **conns;
	size_t nconn;
	uint64_t rng;
	char *keys;             /* batch ops: one key per op */
	struct kvc_op *ops;
	struct hist h;
	atomic_uint_fast64_t done; /* replies collected this phase */
	uint64_t ok, notfound, errors, failed;
	char first_err[300];
};

struct bench {
	struct kvctl *k;
	/* options */
	unsigned clients, pipeline, threads, keylen, batch_ops;
	uint64_t requests, keyspace;
	size_t vsize;
	unsigned tests; /* bit per enum op, in order */
	enum op order[NOPS];
	unsigned ntests;
	double warmup_s;
	uint64_t warmup_n;
	int json, sync, seq;
	/* state */
	char *value;
	unsigned digits, prefix; /* key = "key:"[prefix] + digits zero-padded */
	struct bconn *conns;
	struct bthread *th;
	/* the phase being run */
	enum op op;
	int record;
	atomic_int stop;          /* timed warm-up: write no new round */
	atomic_int finished;      /* threads done with the phase */
	atomic_uint_fast64_t seq_next; /* --seq: next key number */
	char server_sync[64];
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* Write key number n into out (b->keylen bytes). */
static void make_key(const struct bench *b, char *out, uint64_t n)
{
	if (b->prefix)
		memcpy(out, "key:", 4);
	char *p = out + b->keylen;
	for (unsigned i = b->prefix; i < b->keylen; i++) {
		*--p = (char)('0' + n % 10);
		n /= 10;
	}
}

static uint64_t next_key(struct bthread *t)
{
	struct bench *b = t->b;
	if (b->seq)
		return atomic_fetch_add_explicit(&b->seq_next, 1, memory_order_relaxed) % b->keyspace;
	return (uint64_t)(((__uint128_t)rng_next(&t->rng) * b->keyspace) >> 64);
}

static void note_error(struct bthread *t, const char *what, const char *msg)
{
	if (!t->first_err[0])
		snprintf(t->first_err, sizeof t->first_err, "%s: %s", what, msg && *msg ? msg : "?");
}

static void conn_unregister(struct bconn *bc)
{
	if (bc->registered)
		epoll_ctl(bc->t->epfd, EPOLL_CTL_DEL, kvc_fd(bc->c), NULL);
	bc->registered = 0;
}

/* The connection broke: its outstanding and unsent requests fail (inv. 2). */
static void conn_fail(struct bconn *bc, int rc, const char *msg)
{
	struct bthread *t = bc->t;
	char what[64];
	snprintf(what, sizeof what, "connection lost (%s)", kvc_status_str(rc));
	note_error(t, what, msg);
	uint64_t lost = bc->inflight + (bc->quota == UINT64_MAX ? 0 : bc->quota);
	t->failed += lost;
	atomic_fetch_add_explicit(&t->done, lost, memory_order_relaxed);
	conn_unregister(bc);
	bc->inflight = 0;
	bc->quota = 0;
	bc->dead = 1;
}

static int conn_events(struct bconn *bc, int want_out)
{
	struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0u), .data.ptr = bc };
	int fd = kvc_fd(bc->c);
	int r = epoll_ctl(bc->t->epfd, bc->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
	if (r == 0) {
		bc->registered = 1;
		bc->want_out = want_out;
	}
	return r;
}

/* Write the next round of the connection (invariant 1). 1 when a round
 * was written, 0 when the connection is done with the phase. */
static int conn_round(struct bconn *bc)
{
	struct bthread *t = bc->t;
	struct bench *b = t->b;
	char key[MAX_KEYLEN];
	if (bc->dead || bc->quota == 0 || atomic_load_explicit(&b->stop, memory_order_relaxed))
		return 0;
	unsigned n = b->pipeline;
	if (bc->quota < n)
		n = (unsigned)bc->quota;
	unsigned flags = b->sync ? KVC_SYNC : 0;
	for (unsigned i = 0; i < n; i++) {
		int rc;
		switch (b->op) {
		case OP_PUT:
			make_key(b, key, next_key(t));
			rc = kvc_pipe_put(bc->c, key, b->keylen, b->value, b->vsize, 0, flags);
			break;
		case OP_GET:
			make_key(b, key, next_key(t));
			rc = kvc_pipe_get(bc->c, key, b->keylen);
			break;
		case OP_DEL:
			make_key(b, key, next_key(t));
			rc = kvc_pipe_del(bc->c, key, b->keylen, flags);
			break;
		default:
			for (unsigned j = 0; j < b->batch_ops; j++)
				make_key(b, t->keys + (size_t)j * b->keylen, next_key(t));
			rc = kvc_pipe_batch(bc->c, t->ops, b->batch_ops, flags);
			break;
		}
		if (rc != KVC_OK) {
			bc->inflight += i;
			if (bc->quota != UINT64_MAX)
				bc->quota -= i;
			conn_fail(bc, rc, kvc_last_error(bc->c));
			return 0;
		}
	}
	bc->inflight = n;
	if (bc->quota != UINT64_MAX)
		bc->quota -= n;
	bc->sent_ns = now_ns();
	int rc = kvc_pipe_send(bc->c);
	if (rc != KVC_OK && rc != KVC_ETIMEOUT) {
		conn_fail(bc, rc, kvc_last_error(bc->c));
		return 0;
	}
	int want_out = rc == KVC_ETIMEOUT;
	if ((!bc->registered || bc->want_out != want_out) && conn_events(bc, want_out) < 0)
		conn_fail(bc, KVC_ECLOSED, strerror(errno));
	return !bc->dead;
}

/* Collect the replies that have arrived. */
static void conn_collect(struct bconn *bc)
{
	struct bthread *t = bc->t;
	struct bench *b = t->b;
	uint64_t got = 0;
	while (bc->inflight) {
		struct kvc_reply r;
		int rc = kvc_pipe_next(bc->c, &r, 0);
		if (rc == KVC_ETIMEOUT)
			break;
		if (rc != KVC_OK) {
			conn_fail(bc, rc, kvc_last_error(bc->c));
			break;
		}
		bc->inflight--;
		got++;
		if (r.status == KVC_OK) {
			t->ok++;
		} else if (r.status == KVC_NOT_FOUND) {
			t->notfound++;
		} else {
			t->errors++;
			note_error(t, kvc_status_str(r.status), r.message);
		}
		if (b->record)
			h_add(&t->h, now_ns() - bc->sent_ns);
	}
	if (got)
		atomic_fetch_add_explicit(&t->done, got, memory_order_relaxed);
}

/* Fail rounds that wait longer than the timeout (-t) for a reply.
 * Returns the number of connections that failed. */
static size_t check_timeouts(struct bthread *t)
{
	int tmo = t->b->k->timeout_ms;
	size_t nfailed = 0;
	if (tmo <= 0)
		return 0;
	uint64_t now = now_ns();
	for (size_t i = 0; i < t->nconn; i++) {
		struct bconn *bc = t->conns[i];
		if (!bc->dead && bc->inflight && now - bc->sent_ns > (uint64_t)tmo * 1000000u) {
			char m[96];
			snprintf(m, sizeof m, "no reply within %d ms (change the timeout with -t)", tmo);
			conn_fail(bc, KVC_ETIMEOUT, m);
			nfailed++;
		}
	}
	return nfailed;
}

static void *thread_main(void *arg)
{
	struct bthread *t = arg;
	struct epoll_event evs[EV_BATCH];
	unsigned char live[EV_BATCH]; /* evs[i] had a round in flight */
	size_t busy = 0;
	for (size_t i = 0; i < t->nconn; i++) {
		struct bconn *bc = t->conns[i];
		if (bc->dead && bc->quota && bc->quota != UINT64_MAX) { /* invariant 2 */
			t->failed += bc->quota;
			atomic_fetch_add_explicit(&t->done, bc->quota, memory_order_relaxed);
			note_error(t, "connection lost", "in an earlier test");
			bc->quota = 0;
		}
		busy += (size_t)conn_round(bc);
	}
	while (busy) {
		int n = epoll_wait(t->epfd, evs, EV_BATCH, 100);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			char m[96];
			snprintf(m, sizeof m, "epoll_wait: %s", strerror(errno));
			for (size_t i = 0; i < t->nconn; i++)
				if (!t->conns[i]->dead && (t->conns[i]->inflight || t->conns[i]->quota))
					conn_fail(t->conns[i], KVC_ECLOSED, m);
			break;
		}
		if (n == 0)
			busy -= check_timeouts(t);
		for (int i = 0; i < n; i++) {
			struct bconn *bc = evs[i].data.ptr;
			live[i] = 0;
			if (bc->dead)
				continue;
			if (!bc->inflight) { /* idle: only a close can wake it */
				conn_unregister(bc);
				continue;
			}
			live[i] = 1;
			if (bc->want_out && (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
				int rc = kvc_pipe_send(bc->c);
				if (rc == KVC_OK) {
					if (conn_events(bc, 0) < 0)
						conn_fail(bc, KVC_ECLOSED, strerror(errno));
				} else if (rc != KVC_ETIMEOUT) {
					conn_fail(bc, rc, kvc_last_error(bc->c));
				}
			}
			if (!bc->dead && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
				conn_collect(bc);
		}
		/* The next rounds only once every reply of this wake-up has its
		 * time: written in the loop above, a round would count in the
		 * latency of every connection collected after it (redis-benchmark
		 * also reads all it can, then writes). */
		for (int i = 0; i < n; i++) {
			struct bconn *bc = evs[i].data.ptr;
			if (!live[i])
				continue;
			if (!bc->dead && !bc->inflight && !conn_round(bc))
				busy--;
			else if (bc->dead)
				busy--;
		}
		if (n > 0 && n < EV_BATCH && busy)
			busy -= check_timeouts(t);
	}
	atomic_fetch_add_explicit(&t->b->finished, 1, memory_order_release);
	return NULL;
}

/* ---- phases ---------------------------------------------------------------------- */

struct result {
	enum op op;
	uint64_t requests; /* answered by kvd (ok, not found or an error status) */
	uint64_t ok, notfound, errors, failed; /* failed: lost with a connection */
	double seconds, cpu_user, cpu_sys;
	struct hist h;
	char first_err[300];
};

static double tv_s(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static uint64_t total_done(const struct bench *b)
{
	uint64_t d = 0;
	for (unsigned i = 0; i < b->threads; i++)
		d += atomic_load_explicit(&b->th[i].done, memory_order_relaxed);
	return d;
}

static void progress(const struct bench *b, const char *label, uint64_t done, uint64_t total,
		     double elapsed)
{
	if (total)
		fprintf(stderr, "\r%s: %" PRIu64 "/%" PRIu64 " (%.0f%%), %.0f requests/s\033[K", label,
			done, total, 100.0 * (double)done / (double)total,
			elapsed > 0 ? (double)done / elapsed : 0.0);
	else
		fprintf(stderr, "\r%s: %" PRIu64 " requests, %.1f s\033[K", label, done, elapsed);
	(void)b;
}

/*
 * Run one phase: op on every connection, `total` requests split evenly
 * (0 = until `seconds` have passed). record: keep latencies into r.
 * Returns 0, or -1 when a thread could not be started (reported).
 */
static int run_phase(struct bench *b, enum op op, uint64_t total, double seconds, int record,
		     struct result *r)
{
	int tty = isatty(2);
	const char *label = record ? op_names[op] : "warm-up";
	b->op = op;
	b->record = record;
	atomic_store(&b->stop, 0);
	atomic_store(&b->finished, 0);
	for (unsigned i = 0; i < b->clients; i++) {
		struct bconn *bc = &b->conns[i];
		bc->quota = total ? total / b->clients + (i < total % b->clients) : UINT64_MAX;
		bc->inflight = 0;
	}
	for (unsigned i = 0; i < b->threads; i++) {
		struct bthread *t = &b->th[i];
		h_init(&t->h);
		atomic_store(&t->done, 0);
		t->ok = t->notfound = t->errors = t->failed = 0;
		t->first_err[0] = '\0';
	}
	struct rusage ru0, ru1;
	getrusage(RUSAGE_SELF, &ru0);
	uint64_t t0 = now_ns();
	unsigned started = 0;
	for (; started < b->threads; started++) {
		int e = pthread_create(&b->th[started].tid, NULL, thread_main, &b->th[started]);
		if (e) {
			fprintf(stderr, "kvctl: bench: cannot start a thread: %s\n", strerror(e));
			atomic_store(&b->stop, 1);
			break;
		}
	}
	uint64_t last_print = t0;
	while (atomic_load_explicit(&b->finished, memory_order_acquire) < (int)started) {
		struct timespec ts = { 0, 20 * 1000000L };
		nanosleep(&ts, NULL);
		uint64_t now = now_ns();
		double el = (double)(now - t0) / 1e9;
		if (!total && el >= seconds)
			atomic_store(&b->stop, 1);
		if (tty && now - last_print >= 250000000u) {
			progress(b, label, total_done(b), total, el);
			last_print = now;
		}
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(b->th[i].tid, NULL);
	uint64_t t1 = now_ns();
	getrusage(RUSAGE_SELF, &ru1);
	if (tty)
		fputs("\r\033[K", stderr);
	if (started < b->threads)
		return -1;
	if (r) {
		memset(r, 0, sizeof *r);
		r->op = op;
		h_init(&r->h);
		for (unsigned i = 0; i < b->threads; i++) {
			struct bthread *t = &b->th[i];
			h_merge(&r->h, &t->h);
			r->ok += t->ok;
			r->notfound += t->notfound;
			r->errors += t->errors;
			r->failed += t->failed;
			if (!r->first_err[0] && t->first_err[0])
				memcpy(r->first_err, t->first_err, sizeof r->first_err);
		}
		r->requests = r->ok + r->notfound + r->errors; /* answered */
		r->seconds = (double)(t1 - t0) / 1e9;
		r->cpu_user = tv_s(ru1.ru_utime) - tv_s(ru0.ru_utime);
		r->cpu_sys = tv_s(ru1.ru_stime) - tv_s(ru0.ru_stime);
	}
	return 0;
}

/* ---- reports ---------------------------------------------------------------------- */

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

/* A few lines: the samples per power-of-two range of latency (ranges
 * merged two by two until at most 10 lines remain). */
static void print_histogram(const struct hist *h)
{
	uint64_t pow2[65] = { 0 }; /* pow2[k]: samples in [2^(k-1), 2^k) ns; pow2[0]: 0 */
	for (unsigned i = 0; i < H_BUCKETS; i++) {
		if (!h->n[i])
			continue;
		uint64_t lo = h_lower(i);
		unsigned k = lo ? 64u - (unsigned)__builtin_clzll(lo) : 0;
		pow2[k] += h->n[i];
	}
	unsigned first = 0, last = 0;
	while (first < 64 && !pow2[first])
		first++;
	for (unsigned k = 0; k <= 64; k++)
		if (pow2[k])
			last = k;
	unsigned step = 1;
	while ((last - first) / step + 1 > 10)
		step *= 2;
	uint64_t cum = 0;
	printf("  latency histogram:\n");
	for (unsigned k = first; k <= last; k += step) {
		uint64_t n = 0;
		for (unsigned j = k; j < k + step && j <= last; j++)
			n += pow2[j];
		cum += n;
		unsigned hi = k + step - 1 < last ? k + step - 1 : last;
		if (hi > 63)
			hi = 63;
		double lo_ms = k ? ms((uint64_t)1 << (k - 1)) : 0.0;
		double hi_ms = ms((uint64_t)1 << hi);
		double pct = 100.0 * (double)n / (double)h->count;
		int bar = (int)(pct / 2.5 + 0.5);
		printf("    %9.3f .. %9.3f ms |%-40.*s| %5.1f%%  (%5.1f%% cumulative)\n", lo_ms, hi_ms,
		       bar, "########################################", pct,
		       100.0 * (double)cum / (double)h->count);
	}
}

static void print_text(const struct bench *b, const struct result *r)
{
	double rps = r->seconds > 0 ? (double)r->requests / r->seconds : 0;
	double cpu = r->cpu_user + r->cpu_sys;
	double cpu_pct = r->seconds > 0 ? 100.0 * cpu / r->seconds : 0;
	printf("== %s: %" PRIu64 " requests in %.3f s, %u clients, pipeline %u, %zu-byte values, "
	       "%" PRIu64 " keys%s%s\n",
	       op_names[r->op], r->requests, r->seconds, b->clients, b->pipeline, b->vsize,
	       b->keyspace, b->sync ? ", synced writes" : "", b->seq ? ", sequential keys" : "");
	printf("  %.0f requests/s", rps);
	if (r->op == OP_BATCH)
		printf(" (%.0f operations/s, %u per batch)", rps * b->batch_ops, b->batch_ops);
	printf("   [kvd sync mode: %s]\n", b->server_sync);
	printf("  latency (ms): p50 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  (min %.3f, mean %.3f)\n",
	       ms(h_quantile(&r->h, 0.50)), ms(h_quantile(&r->h, 0.99)),
	       ms(h_quantile(&r->h, 0.999)), ms(r->h.max), ms(r->h.count ? r->h.min : 0),
	       r->h.count ? r->h.sum / (double)r->h.count / 1e6 : 0.0);
	printf("  client CPU: %.2f s user + %.2f s sys = %.0f%% of one core (%u thread%s)%s\n",
	       r->cpu_user, r->cpu_sys, cpu_pct, b->threads, b->threads == 1 ? "" : "s",
	       cpu_pct >= 90.0 * b->threads ? ": SATURATED, the client may be the bottleneck" : "");
	if (r->notfound)
		printf("  not found: %" PRIu64 " (%.1f%%)\n", r->notfound,
		       100.0 * (double)r->notfound / (double)(r->requests ? r->requests : 1));
	if (r->h.count)
		print_histogram(&r->h);
	if (r->errors || r->failed)
		printf("  FAILED: %" PRIu64 " requests (%" PRIu64 " with an error status, %" PRIu64
		       " lost with their connection or never sent; first error: %s)\n",
		       r->errors + r->failed, r->errors, r->failed, r->first_err);
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void print_json(const struct bench *b, const struct result *r)
{
	double rps = r->seconds > 0 ? (double)r->requests / r->seconds : 0;
	double cpu = r->cpu_user + r->cpu_sys;
	printf("{\"op\":\"%s\",\"requests\":%" PRIu64 ",\"seconds\":%.6f,\"rps\":%.1f,"
	       "\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"p999_ms\":%.4f,\"max_ms\":%.4f,"
	       "\"min_ms\":%.4f,\"mean_ms\":%.4f,"
	       "\"clients\":%u,\"pipeline\":%u,\"threads\":%u,\"value_size\":%zu,"
	       "\"keyspace\":%" PRIu64 ",\"keylen\":%u,\"sync\":%s,",
	       op_names[r->op], r->requests, r->seconds, rps, ms(h_quantile(&r->h, 0.50)),
	       ms(h_quantile(&r->h, 0.99)), ms(h_quantile(&r->h, 0.999)), ms(r->h.max),
	       ms(r->h.count ? r->h.min : 0), r->h.count ? r->h.sum / (double)r->h.count / 1e6 : 0.0,
	       b->clients, b->pipeline, b->threads, b->vsize, b->keyspace, b->keylen,
	       b->sync ? "true" : "false");
	if (r->op == OP_BATCH)
		printf("\"batch_ops\":%u,", b->batch_ops);
	printf("\"ok\":%" PRIu64 ",\"not_found\":%" PRIu64 ",\"errors\":%" PRIu64
	       ",\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,\"cpu_pct\":%.1f,\"server_sync\":",
	       r->ok, r->notfound, r->errors + r->failed, r->cpu_user, r->cpu_sys,
	       r->seconds > 0 ? 100.0 * cpu / r->seconds : 0.0);
	json_str(b->server_sync);
	if (r->first_err[0]) {
		printf(",\"first_error\":");
		json_str(r->first_err);
	}
	printf("}\n");
}

/* ---- options ----------------------------------------------------------------------- */

static void bench_usage(FILE *f)
{
	fprintf(f,
		"usage: kvctl [-s SOCKET] [-t MS] bench [OPTIONS]\n"
		"  -c N            connections (default %d)\n"
		"  -P N            pipeline: requests per round on a connection (default 1)\n"
		"  -n N            requests per test, over all connections (default %d)\n"
		"  -d BYTES        value size (default %d)\n"
		"  -r N            key space: keys are random in [0, N) (default %d)\n"
		"  -t LIST         tests, comma-separated: put,get,del,batch (default put,get)\n"
		"  --keylen N      key length in bytes (default %d: \"key:\" and 12 digits)\n"
		"  --batch-ops N   puts per batch request of the batch test (default %d)\n"
		"  --warmup W      before each test, run it unmeasured: Ns seconds (e.g. 2s)\n"
		"                  or N requests (default none)\n"
		"  --sync          every put/del/batch asks for a synced write\n"
		"  --seq           keys 0, 1, 2 ... in order instead of random (loading)\n"
		"  --threads N     client threads, each multiplexing its connections (default %d)\n"
		"  --json          one JSON object per test on stdout\n"
		"  -s PATH         kvd's socket (as the global option)\n",
		DEFAULT_CLIENTS, DEFAULT_REQUESTS, DEFAULT_VALUE, DEFAULT_KEYSPACE, DEFAULT_KEYLEN,
		DEFAULT_BATCH_OPS, DEFAULT_THREADS);
}

__attribute__((format(printf, 1, 2))) static int bad(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("kvctl: bench: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'kvctl bench --help'.\n", stderr);
	return KX_USAGE;
}

/* Parse a count with an optional k/M suffix (1k = 1000). 0 or -1. */
static int parse_count(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	if (*end == 'k' || *end == 'K') {
		v *= 1000;
		end++;
	} else if (*end == 'M' || *end == 'm') {
		v *= 1000000;
		end++;
	}
	if (*end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_tests(struct bench *b, const char *s)
{
	b->ntests = 0;
	b->tests = 0;
	while (*s) {
		size_t n = strcspn(s, ",");
		int found = 0;
		for (int i = 0; i < NOPS; i++) {
			const char *alias = i == OP_PUT ? "set" : i == OP_DEL ? "delete" : "";
			if ((strlen(op_names[i]) == n && !memcmp(s, op_names[i], n)) ||
			    (*alias && strlen(alias) == n && !memcmp(s, alias, n))) {
				if (!(b->tests & (1u << i)))
					b->order[b->ntests++] = (enum op)i;
				b->tests |= 1u << i;
				found = 1;
			}
		}
		if (!found)
			return bad("unknown test '%.*s' in -t (put, get, del, batch)", (int)n, s);
		s += n;
		if (*s == ',')
			s++;
	}
	return b->ntests ? KX_OK : bad("-t needs at least one test");
}

static int parse_args(struct bench *b, struct karg *args, int nargs)
{
	for (int i = 0; i < nargs; i++) {
		const char *a = args[i].p;
		const char *v = i + 1 < nargs ? args[i + 1].p : NULL;
		uint64_t x;
#define NEED(name)                                                                 \
	do {                                                                       \
		if (!v)                                                            \
			return bad("option %s needs a value", name);               \
		i++;                                                               \
	} while (0)
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			bench_usage(stdout);
			return -1;
		} else if (!strcmp(a, "-c")) {
			NEED(a);
			if (parse_count(v, 1, MAX_CLIENTS, &x))
				return bad("-c needs 1..%d connections", MAX_CLIENTS);
			b->clients = (unsigned)x;
		} else if (!strcmp(a, "-P")) {
			NEED(a);
			if (parse_count(v, 1, MAX_PIPELINE, &x))
				return bad("-P needs a pipeline depth of 1..%d", MAX_PIPELINE);
			b->pipeline = (unsigned)x;
		} else if (!strcmp(a, "-n")) {
			NEED(a);
			if (parse_count(v, 1, UINT64_MAX / 2, &x))
				return bad("-n needs a number of requests (>= 1)");
			b->requests = x;
		} else if (!strcmp(a, "-d")) {
			NEED(a);
			if (parse_count(v, 0, KVC_MAX_VALUE, &x))
				return bad("-d needs a value size of 0..%u bytes", KVC_MAX_VALUE);
			b->vsize = (size_t)x;
		} else if (!strcmp(a, "-r")) {
			NEED(a);
			if (parse_count(v, 1, UINT64_MAX / 2, &x))
				return bad("-r needs a key space of at least 1 key");
			b->keyspace = x;
		} else if (!strcmp(a, "-t")) {
			NEED(a);
			int rc = parse_tests(b, v);
			if (rc)
				return rc;
		} else if (!strcmp(a, "--keylen")) {
			NEED(a);
			if (parse_count(v, 1, MAX_KEYLEN, &x))
				return bad("--keylen needs 1..%d bytes", MAX_KEYLEN);
			b->keylen = (unsigned)x;
		} else if (!strcmp(a, "--batch-ops")) {
			NEED(a);
			if (parse_count(v, 1, MAX_BATCH_OPS, &x))
				return bad("--batch-ops needs 1..%d", MAX_BATCH_OPS);
			b->batch_ops = (unsigned)x;
		} else if (!strcmp(a, "--threads")) {
			NEED(a);
			if (parse_count(v, 1, 256, &x))
				return bad("--threads needs 1..256");
			b->threads = (unsigned)x;
		} else if (!strcmp(a, "--warmup")) {
			NEED(a);
			size_t l = strlen(v);
			char *end;
			if (l > 1 && v[l - 1] == 's') {
				errno = 0;
				double s = strtod(v, &end);
				if (errno || end != v + l - 1 || !(s >= 0 && s <= 3600))
					return bad("--warmup needs seconds (e.g. 2s) or requests (e.g. 10000)");
				b->warmup_s = s;
				b->warmup_n = 0;
			} else {
				if (parse_count(v, 0, UINT64_MAX / 2, &x))
					return bad("--warmup needs seconds (e.g. 2s) or requests (e.g. 10000)");
				b->warmup_n = x;
				b->warmup_s = 0;
			}
		} else if (!strcmp(a, "--sync")) {
			b->sync = 1;
		} else if (!strcmp(a, "--seq")) {
			b->seq = 1;
		} else if (!strcmp(a, "--json")) {
			b->json = 1;
		} else if (!strcmp(a, "-s") || !strcmp(a, "--socket")) {
			NEED(a);
			b->k->sock = v;
		} else {
			return bad("unknown option '%s'", a);
		}
#undef NEED
	}
	return KX_OK;
}

/* Key layout for the key space: digits for the largest key number, the
 * "key:" prefix when it fits. */
static int plan_keys(struct bench *b)
{
	unsigned digits = 1;
	for (uint64_t m = b->keyspace - 1; m >= 10; m /= 10)
		digits++;
	if (b->keylen < digits)
		return bad("--keylen %u cannot hold %u-digit key numbers (-r %" PRIu64 ")", b->keylen,
			   digits, b->keyspace);
	b->digits = digits;
	b->prefix = b->keylen >= digits + 4 ? 4 : 0;
	return KX_OK;
}

/* ---- the command -------------------------------------------------------------------- */

static void bench_free(struct bench *b)
{
	if (b->conns)
		for (unsigned i = 0; i < b->clients; i++)
			kvc_close(b->conns[i].c);
	if (b->th) {
		for (unsigned i = 0; i < b->threads; i++) {
			if (b->th[i].epfd >= 0)
				close(b->th[i].epfd);
			free(b->th[i].conns);
			free(b->th[i].keys);
			free(b->th[i].ops);
		}
	}
	free(b->conns);
	free(b->th);
	free(b->value);
}

/* Connect every client and give it to its thread. KX_OK or reported. */
static int bench_setup(struct bench *b)
{
	b->value = malloc(b->vsize ? b->vsize : 1);
	b->conns = calloc(b->clients, sizeof *b->conns);
	b->th = calloc(b->threads, sizeof *b->th);
	if (!b->value || !b->conns || !b->th) {
		fprintf(stderr, "kvctl: bench: out of memory\n");
		return KX_FAIL;
	}
	memset(b->value, 'x', b->vsize);
	uint64_t seed = now_ns() ^ ((uint64_t)getpid() << 32);
	for (unsigned i = 0; i < b->threads; i++) {
		struct bthread *t = &b->th[i];
		t->b = b;
		t->epfd = -1;
		t->rng = (seed + 0x9e3779b97f4a7c15ull * (i + 1)) | 1;
		t->conns = calloc(b->clients / b->threads + 1, sizeof *t->conns);
		t->keys = malloc((size_t)b->batch_ops * b->keylen);
		t->ops = calloc(b->batch_ops, sizeof *t->ops);
		if (!t->conns || !t->keys || !t->ops) {
			fprintf(stderr, "kvctl: bench: out of memory\n");
			return KX_FAIL;
		}
		for (unsigned j = 0; j < b->batch_ops; j++)
			t->ops[j] = (struct kvc_op){ .op = KVC_OP_PUT,
						     .key = t->keys + (size_t)j * b->keylen,
						     .klen = b->keylen,
						     .value = b->value,
						     .vlen = b->vsize };
		if ((t->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
			fprintf(stderr, "kvctl: bench: epoll_create1: %s\n", strerror(errno));
			return KX_FAIL;
		}
	}
	for (unsigned i = 0; i < b->clients; i++) {
		char err[512];
		struct bconn *bc = &b->conns[i];
		int rc = kvc_connect(b->k->sock, b->k->timeout_ms, &bc->c, err, sizeof err);
		if (rc != KVC_OK) {
			fprintf(stderr, "kvctl: bench: %s (connection %u of %u)\n", err, i + 1,
				b->clients);
			return KX_CONNECT;
		}
		struct bthread *t = &b->th[i % b->threads];
		bc->t = t;
		t->conns[t->nconn++] = bc;
		if (conn_events(bc, 0) < 0) {
			fprintf(stderr, "kvctl: bench: epoll_ctl: %s\n", strerror(errno));
			return KX_FAIL;
		}
	}
	/* One blocking call checks that kvd serves us (and names its mode). */
	struct kvc_stats *st = NULL;
	int rc = kvc_stats(b->conns[0].c, &st);
	if (rc != KVC_OK) {
		fprintf(stderr, "kvctl: bench: %s: %s (kvd at %s)\n", kvc_status_str(rc),
			kvc_last_error(b->conns[0].c), b->k->sock);
		return kvctl_exit_code(b->k, rc);
	}
	snprintf(b->server_sync, sizeof b->server_sync, "%s", st->sync_mode);
	kvc_stats_free(st);
	return KX_OK;
}

int kvctl_bench(struct kvctl *k, struct karg *args, int nargs)
{
	struct bench b = { .k = k,
			   .clients = DEFAULT_CLIENTS,
			   .pipeline = 1,
			   .threads = DEFAULT_THREADS,
			   .keylen = DEFAULT_KEYLEN,
			   .batch_ops = DEFAULT_BATCH_OPS,
			   .requests = DEFAULT_REQUESTS,
			   .keyspace = DEFAULT_KEYSPACE,
			   .vsize = DEFAULT_VALUE };
	int rc;
	b.order[0] = OP_PUT;
	b.order[1] = OP_GET;
	b.ntests = 2;
	b.tests = 1u << OP_PUT | 1u << OP_GET;
	if (k->mode != MODE_CLI) {
		puts("ERR USAGE: bench runs from the command line only: kvctl bench [OPTIONS]");
		return KX_USAGE;
	}
	if ((rc = parse_args(&b, args, nargs)) != KX_OK)
		return rc < 0 ? KX_OK : rc;
	if ((rc = plan_keys(&b)) != KX_OK)
		return rc;
	if (b.threads > b.clients)
		b.threads = b.clients;
	if ((rc = bench_setup(&b)) != KX_OK)
		goto out;
	uint64_t failed = 0;
	char first_err[400] = "";
	for (unsigned i = 0; i < b.ntests; i++) {
		enum op op = b.order[i];
		struct result *r = malloc(sizeof *r);
		if (!r) {
			fprintf(stderr, "kvctl: bench: out of memory\n");
			rc = KX_FAIL;
			goto out;
		}
		if ((b.warmup_n || b.warmup_s > 0) &&
		    run_phase(&b, op, b.warmup_n, b.warmup_s, 0, NULL) < 0) {
			free(r);
			rc = KX_FAIL;
			goto out;
		}
		if (run_phase(&b, op, b.requests, 0, 1, r) < 0) {
			free(r);
			rc = KX_FAIL;
			goto out;
		}
		if (b.json)
			print_json(&b, r);
		else
			print_text(&b, r);
		fflush(stdout);
		failed += r->errors + r->failed;
		if (!first_err[0] && r->first_err[0])
			snprintf(first_err, sizeof first_err, "%s: %.300s", op_names[op], r->first_err);
		free(r);
	}
	if (failed) {
		fprintf(stderr, "kvctl: bench: %" PRIu64 " request%s failed; first error: %s\n", failed,
			failed == 1 ? "" : "s", first_err);
		rc = KX_FAIL;
	} else {
		rc = KX_OK;
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "kvctl: writing to stdout failed: %s\n", strerror(errno));
		rc = KX_FAIL;
	}
out:
	bench_free(&b);
	return rc;
}
