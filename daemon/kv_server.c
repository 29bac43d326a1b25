/*
 * kv_server.c — kvd's event loop: listener, connections, framing,
 * dispatch, group commit, timers and signals (interface in kv_server.h).
 *
 * Owns the event base, the listener (kv_listen), the jobs (kv_jobs: merge
 * scheduling and driving), the sync thread (kv_syncer), a copy of the
 * peer allow-list (kv_acl), every struct kv_conn with its three evbuffers
 * (in, out, held), the request arena and the value buffer that kv_rpc
 * uses, and the io_uring batches of socket I/O (kv_ring, when the kernel
 * allows). The engine is borrowed.
 *
 * ONE PASS OF THE LOOP (kv_server_run)
 *   1. loop_once(): event_base_loop(EVLOOP_ONCE), whose read callbacks
 *      only read (one read() into the loop's scratch buffer, copied to
 *      conn->in; with a ring, the reads of all of them in one batch at
 *      the start of pump_ready: IO BATCHES) and list the connection as
 *      ready; then pump_ready() prefetches the keys of the ready connections' head frames (see
 *      PREFETCHING) and executes every complete frame they have
 *      (conn_pump). A write (Put, Delete, Batch) appends to
 *      the engine's tail buffer; its reply, and every later reply of that
 *      connection, goes to conn->held. Other replies go to conn->out.
 *      When an fdatasync is due, gather() runs up to GATHER_PASSES more
 *      non-blocking passes while they keep bringing requests, so that
 *      clients woken by the previous commit join this one.
 *   2. commit_step(): see GROUP COMMIT. Replies whose commit is done move
 *      from held to out; if the flush or sync failed (the engine is
 *      read-only from then on) every held write reply is rewritten to
 *      UNAVAILABLE.
 *   3. flush_dirty(): one write() per connection that has new output
 *      (with a ring, all of them in one batch: IO BATCHES).
 *   4. reap(): free the connections that died during the pass.
 *   5. kv_poll_after(): the pass is over for the adaptive polling.
 *   The loop blocks only when nothing is held, nothing is dirty and
 *   kv_poll_idle() says the client is not expected within the poll window
 *   (kv_poll.h); otherwise the next pass polls (EVLOOP_NONBLOCK).
 *   Why an outer loop around EVLOOP_ONCE rather than a low-priority commit
 *   event: libevent runs a lower priority only in an iteration where no
 *   higher-priority event is active, so a steady stream of reads could
 *   postpone the commit (and every held reply) indefinitely. Returning from
 *   the loop after each batch of callbacks gives a commit point after every
 *   iteration, with no starvation and no extra event.
 *
 * GROUP COMMIT
 *   The replies held in one pass form commit k (numbered 1, 2, 3 ...; each
 *   held_rec carries the commit it waits for). commit_step() flushes the
 *   tail buffer — in every mode, so an acknowledged write has reached the
 *   kernel — and then:
 *   - an fdatasync is due (--sync always, or a request asked) and more
 *     than one client is connected: commit k goes to the sync thread
 *     (kv_syncer), which runs fdatasyncs back to back, each covering every
 *     commit handed over before it began. The loop goes on reading and
 *     executing the next commit meanwhile; when a run ends (eventfd), the
 *     replies of every commit it covered go out. So the disk is kept busy
 *     and the next group gathers during the current fdatasync.
 *   - due, with one client: fdatasync in the loop (that client cannot send
 *     anything meanwhile; the thread would only add two wake-ups). Any
 *     handed-over commit is waited for first (its job reset the engine's
 *     unsynced count).
 *   - not due: the replies go out once every earlier commit is released.
 *   Released commits are a prefix: `released` only grows, and a reply
 *   leaves before any later reply of its connection (invariant 1).
 *
 * CONNECTION STATES (struct kv_conn.state)
 *
 *   accept_cb ─┬─> refused at once (max-connections, allow-list: one
 *              │   UNAVAILABLE / PERMISSION_DENIED reply with id 0, close)
 *              v
 *                 OPEN ──── conn_fatal (bad frame), peer EOF once every
 *                  │        complete frame ran (conn_after_pump),
 *                  │        begin_shutdown ──────────────> DRAINING
 *                  │                                        │ no reads; out
 *                  │ read/write error, frame or write       │ written, then
 *                  │ timeout (sweep_cb), output over        │ conn_flush
 *                  │ OUT_CAP (conn_kill)                    │ closes it
 *                  v                                        v
 *                 DEAD <────────────────────────────────────┘
 *                  │  events removed at once; the struct is freed
 *                  v  by reap() at the end of the pass, never in place
 *                freed
 *
 *   Flags while OPEN:  paused  — out+held >= OUT_HIGH; no reading and no
 *                                executing until out+held < OUT_LOW.
 *                      scan    — a Scan streams (conn_scan_step from the
 *                                write callback, a slice at a time while
 *                                out < SCAN_TARGET); later frames wait.
 *                      holding — replies wait in held for commit_step.
 *                      mwait   — a Merge with wait=true awaits the end of
 *                                its merge (kv_jobs ticket); later frames
 *                                wait, reading goes on up to MWAIT_IN_CAP
 *                                so a peer's EOF is seen. merge_done_cb
 *                                replies and resumes; nothing else points
 *                                at the connection meanwhile, so one that
 *                                dies while waiting is simply skipped.
 *
 * INVARIANTS
 *  1. Replies leave a connection in request order: once one reply is
 *     held, every later one is held too until commit_step moves them all.
 *  2. A write's OK is never sent before the flush (and the fdatasync, when
 *     one is due) that covers it succeeded; an fdatasync run by the sync
 *     thread covers a commit only if it began after that commit was
 *     flushed (kv_syncer.h).
 *  3. Memory per connection is bounded: input holds at most one frame
 *     (<= KV_FRAME_MAX) plus one read; frames are executed only while
 *     out+held < OUT_HIGH, so out+held stays below OUT_HIGH + one reply,
 *     and OUT_CAP is a last-resort check of that.
 *  4. A connection in a work vector (hold, dirty, dead, ready) stays allocated
 *     until that vector has been processed: reap() skips it otherwise.
 *  5. Every work vector has room for every connection struct (ensured at
 *     accept), so pushing to one never allocates or fails.
 *  6. A Merge reply that waits (mwait) keeps its place in the reply order:
 *     no later frame of that connection runs before it is produced.
 *  7. No event on an engine fd (the merge pipe) outlives kv_server_run():
 *     kv_jobs_shutdown() removes them before the caller closes the engine.
 */
#include "kv_server.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "kv.pb-c.h"
#include "kv_arena.h"
#include "kv_frame.h"
#include "kv_listen.h"
#include "kv_log.h"
#include "kv_poll.h"
#include "kv_ring.h"
#include "kv_rpc.h"
#include "kv_sd.h"
#include "kv_syncer.h"

#define READ_CHUNK (64u * 1024u)          /* one read() normally */
#define READ_MAX (4u * 1024u * 1024u)     /* per read callback, large frames */
#define OUT_HIGH (4u * 1024u * 1024u)     /* stop executing / reading */
#define OUT_LOW (1u * 1024u * 1024u)      /* resume */
#define OUT_CAP (64u * 1024u * 1024u + 8u * 1024u * 1024u) /* drop */
#define SCAN_TARGET (256u * 1024u)        /* refill a Scan below this */
#define SCAN_STEP_MSGS 16                 /* ScanReply messages per slice */
#define ACCEPT_BATCH 64
#define GATHER_PASSES 4                   /* see gather() */
#define HELD_RECS_KEEP 4096
#define VAL_KEEP (1024u * 1024u)          /* value buffer kept across requests */
#define MWAIT_IN_CAP (256u * 1024u)       /* input read while a Merge waits */
#define PREFETCH_MAX 32                   /* frames looked ahead (conn_prefetch) */
#define RING_SLICE (16u * 1024u)          /* a batched read's buffer (IO BATCHES) */
#define RING_IOV 16                       /* iovecs of a batched write */
_Static_assert(sizeof(struct evbuffer_iovec) == sizeof(struct iovec) &&
		       offsetof(struct evbuffer_iovec, iov_len) == offsetof(struct iovec, iov_len),
	       "evbuffer_peek fills what sendmsg reads");

struct held_rec {
	uint64_t id;
	uint64_t commit;  /* the commit (group) this reply waits for */
	uint32_t len;     /* bytes of the packed reply at this place in held */
	uint8_t method;   /* enum kv_rpc_method, 0xff = none */
	uint8_t failable; /* an OK that is only true if the commit succeeds */
};

enum conn_state { CONN_OPEN, CONN_DRAINING, CONN_DEAD };

struct kv_conn {
	struct kv_server *srv;
	TAILQ_ENTRY(kv_conn) link; /* s->conns, until freed */
	int fd;
	uint64_t serial; /* for log lines */
	enum conn_state state;
	struct event *rev, *wev;
	struct evbuffer *in, *out, *held;
	struct held_rec *recs; /* one per reply in held */
	size_t nrecs, caprecs;
	struct kv_rpc_scan *scan; /* streaming Scan, or NULL */
	uint64_t scan_id;
	uint64_t mwait;    /* kv_jobs ticket a Merge waits for; 0 = none */
	uint64_t mwait_id; /* that request's id */
	uint64_t poll_epoch; /* kv_poll_seen()'s record */
	unsigned ahead;       /* frames at the head of in already prefetched */
	uint64_t frame_since; /* ms: when the unfinished head frame began; 0 = none */
	uint64_t stall_since; /* ms: output waiting without progress since; 0 = none */
	unsigned reading : 1, writing : 1; /* rev / wev added */
	unsigned eof : 1, paused : 1, holding : 1, wblocked : 1;
	unsigned in_hold : 1, in_dirty : 1, in_ready : 1;
	unsigned ring_read : 1; /* read_cb left its read to ring_reads() */
};

struct conn_vec {
	struct kv_conn **v;
	size_t n, cap;
};

TAILQ_HEAD(conn_list, kv_conn);

struct kv_server {
	struct kv_server_config cfg;
	kv_engine *engine;
	struct event_base *base;
	struct kv_listener lis;
	struct kv_jobs *jobs;
	struct kv_acl acl; /* our copy of cfg.acl (cfg.acl is not used) */
	struct event *listen_ev, *accept_retry_ev;
	struct event *sig_ev[3];
	struct event *tick_ev, *sync_ev, *sweep_ev, *stop_ev, *wd_ev;
	struct evbuffer *scratch; /* refusals */
	struct kv_arena arena;
	struct kv_buf val;
	struct kv_rpc_counters ctr;
	struct kv_rpc_ctx rpc;
	unsigned char rbuf[READ_CHUNK]; /* conn_read's scratch buffer */
	char sync_mode_str[32];
	struct conn_list conns;
	size_t nstructs; /* connection structs allocated (open + dead) */
	struct conn_vec hold, hold_spare, dirty, dirty_spare, dead, dead_spare, ready, ready_spare;
	struct kv_syncer *syncer; /* the sync thread; NULL: fdatasync in the loop */
	struct kv_poll poll;      /* polling before the loop sleeps (kv_poll.h) */
	kv_ring *ring;            /* batched reads and writes; NULL: one call each */
	unsigned char *ring_buf;  /* KV_RING_MAX slices of RING_SLICE */
	struct kv_conn *ring_conn[KV_RING_MAX];
	int ring_res[KV_RING_MAX];
	size_t ring_len[KV_RING_MAX]; /* bytes a batched write offered */
	struct iovec ring_iov[KV_RING_MAX][RING_IOV];
	struct event *syncer_ev;  /* its eventfd: a run finished */
	uint64_t commit_seq;      /* number of the group now being gathered */
	uint64_t last_job;        /* highest commit handed to the sync thread */
	uint64_t flushed;         /* highest commit flushed */
	uint64_t released;        /* replies of commits <= this may go out */
	int commit_needed;   /* something is held */
	int sync_wanted;     /* a held request asked for fdatasync */
	uint64_t unsynced_writes;
	int io_error_logged;
	int stopping, done;
	uint64_t stop_deadline;
	uint64_t next_serial;
	uint64_t refuse_logged_ms, accept_err_logged_ms;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct timeval ms_tv(unsigned ms)
{
	struct timeval tv = { (time_t)(ms / 1000u), (suseconds_t)((ms % 1000u) * 1000u) };
	return tv;
}

/* ---- configuration ---------------------------------------------------------- */

void kv_server_config_init(struct kv_server_config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->socket_mode = 0660;
	cfg->sync_mode = KV_SYNC_INTERVAL;
	cfg->sync_interval_ms = 1000;
	cfg->max_connections = 1024;
	cfg->frame_timeout_ms = 30000;
	cfg->write_timeout_ms = 60000;
	cfg->shutdown_timeout_ms = 2000;
	cfg->poll_us = KV_POLL_US_DEFAULT;
	cfg->io_uring = 1;
	cfg->listen_fd = -1;
	kv_jobs_config_init(&cfg->merge);
}

int kv_server_parse_sync(const char *s, struct kv_server_config *cfg)
{
	if (strcmp(s, "always") == 0) {
		cfg->sync_mode = KV_SYNC_ALWAYS;
		return 0;
	}
	if (strcmp(s, "never") == 0) {
		cfg->sync_mode = KV_SYNC_NEVER;
		return 0;
	}
	if (strncmp(s, "interval:", 9) == 0) {
		const char *p = s + 9;
		char *end = NULL;
		if (*p < '0' || *p > '9')
			return -1;
		errno = 0;
		unsigned long ms = strtoul(p, &end, 10);
		if (errno || *end || ms < 1 || ms > 3600u * 1000u)
			return -1;
		cfg->sync_mode = KV_SYNC_INTERVAL;
		cfg->sync_interval_ms = (unsigned)ms;
		return 0;
	}
	return -1;
}

/* ---- work vectors (invariants 4, 5) ------------------------------------------ */

static int vec_reserve(struct conn_vec *cv, size_t n)
{
	if (cv->cap >= n)
		return 0;
	size_t cap = cv->cap ? cv->cap : 64;
	while (cap < n)
		cap *= 2;
	struct kv_conn **v = realloc(cv->v, cap * sizeof *v);
	if (!v)
		return -1;
	cv->v = v;
	cv->cap = cap;
	return 0;
}

static int vecs_reserve(struct kv_server *s, size_t n)
{
	struct conn_vec *all[] = { &s->hold,  &s->hold_spare, &s->dirty, &s->dirty_spare,
				   &s->dead,  &s->dead_spare, &s->ready, &s->ready_spare };
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		if (vec_reserve(all[i], n) < 0)
			return -1;
	return 0;
}

static void vec_push(struct conn_vec *cv, struct kv_conn *c)
{
	/* Invariant 5: room was reserved when c was accepted. */
	if (cv->n < cv->cap)
		cv->v[cv->n++] = c;
}

static void log_io_error(struct kv_server *s, int rc);

/* ---- connection helpers ---------------------------------------------------------- */

static size_t conn_outlen(const struct kv_conn *c)
{
	return evbuffer_get_length(c->out) + evbuffer_get_length(c->held);
}

static void conn_mark_dirty(struct kv_conn *c)
{
	if (!c->in_dirty && c->state != CONN_DEAD) {
		c->in_dirty = 1;
		vec_push(&c->srv->dirty, c);
	}
}

static void conn_update_events(struct kv_conn *c)
{
	struct kv_server *s = c->srv;
	if (c->state == CONN_DEAD)
		return;
	int want_r = c->state == CONN_OPEN && !c->eof && !c->scan && !c->paused && !s->stopping &&
		     !(c->mwait && evbuffer_get_length(c->in) >= MWAIT_IN_CAP);
	int want_w = c->wblocked || (c->scan && !c->holding && c->state == CONN_OPEN);
	if (want_r != (int)c->reading) {
		if (want_r ? event_add(c->rev, NULL) : event_del(c->rev))
			kv_log_warn("conn %llu: cannot change its read event",
				    (unsigned long long)c->serial);
		c->reading = (unsigned)want_r;
	}
	if (want_w != (int)c->writing) {
		if (want_w ? event_add(c->wev, NULL) : event_del(c->wev))
			kv_log_warn("conn %llu: cannot change its write event",
				    (unsigned long long)c->serial);
		c->writing = (unsigned)want_w;
	}
}

/* Mark c dead (see the state diagram); fmt == NULL: an ordinary close. */
__attribute__((format(printf, 3, 4))) static void conn_kill(struct kv_conn *c, int level,
							    const char *fmt, ...)
{
	struct kv_server *s = c->srv;
	if (c->state == CONN_DEAD)
		return;
	if (fmt && kv_log_enabled(level)) {
		char why[256];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, sizeof why, fmt, ap);
		va_end(ap);
		kv_log(level, "conn %llu: closed: %s", (unsigned long long)c->serial, why);
	} else {
		kv_log_debug("conn %llu: closed", (unsigned long long)c->serial);
	}
	c->state = CONN_DEAD;
	event_del(c->rev);
	event_del(c->wev);
	c->reading = c->writing = 0;
	kv_rpc_scan_free(c->scan); /* release the engine snapshot now */
	c->scan = NULL;
	s->ctr.connections--;
	vec_push(&s->dead, c);
}

static void conn_free(struct kv_conn *c)
{
	struct kv_server *s = c->srv;
	TAILQ_REMOVE(&s->conns, c, link);
	s->nstructs--;
	if (c->rev)
		event_free(c->rev);
	if (c->wev)
		event_free(c->wev);
	if (c->in)
		evbuffer_free(c->in);
	if (c->out)
		evbuffer_free(c->out);
	if (c->held)
		evbuffer_free(c->held);
	if (c->fd >= 0)
		close(c->fd);
	kv_rpc_scan_free(c->scan);
	free(c->recs);
	free(c);
}

/* After each request: forget its arena allocations, shrink a big value
 * buffer (a 64 MiB Get must not pin 64 MiB). */
static void request_done(struct kv_server *s)
{
	kv_arena_reset(&s->arena);
	if (s->val.cap > VAL_KEEP) {
		kv_buf_free(&s->val);
		memset(&s->val, 0, sizeof s->val);
	}
}

/* Append one reply frame to c, respecting invariant 1. method is the
 * enum kv_rpc_method or -1. Returns 0, or -1 when c died. */
static int conn_put(struct kv_conn *c, const struct kv_reply *r, int method, int failable)
{
	struct kv_server *s = c->srv;
	int to_held = c->holding || failable;
	struct evbuffer *dst = to_held ? c->held : c->out;
	long long n = kv_frame_put_reply(dst, r);
	if (n < 0) {
		struct kv_reply e = { .id = r->id,
				      .method = r->method,
				      .code = KV__STATUS_CODE__RESOURCE_EXHAUSTED,
				      .message = "cannot build the reply: too large or out of memory",
				      .end_of_stream = 1 };
		failable = 0;
		n = kv_frame_put_reply(dst, &e);
		if (n < 0) {
			conn_kill(c, KV_LOG_WARN, "out of memory building a reply");
			return -1;
		}
	}
	if (to_held) {
		if (c->nrecs == c->caprecs) {
			size_t cap = c->caprecs ? c->caprecs * 2 : 64;
			struct held_rec *nr = realloc(c->recs, cap * sizeof *nr);
			if (!nr) {
				conn_kill(c, KV_LOG_WARN, "out of memory holding a reply");
				return -1;
			}
			c->recs = nr;
			c->caprecs = cap;
		}
		c->recs[c->nrecs++] = (struct held_rec){ .id = r->id,
							 .commit = s->commit_seq,
							 .len = (uint32_t)n,
							 .method = (uint8_t)(method < 0 ? 0xff : method),
							 .failable = (uint8_t)(failable ? 1 : 0) };
		c->holding = 1;
		if (!c->in_hold) {
			c->in_hold = 1;
			vec_push(&s->hold, c);
		}
		s->commit_needed = 1;
	} else {
		conn_mark_dirty(c);
	}
	if (conn_outlen(c) > OUT_CAP) { /* invariant 3: should not happen */
		conn_kill(c, KV_LOG_WARN, "output buffer over %u bytes", OUT_CAP);
		return -1;
	}
	return 0;
}

static void conn_reply_result(struct kv_conn *c, uint64_t id, int m,
			      const struct kv_rpc_result *res)
{
	struct kv_server *s = c->srv;
	int ok = res->code == KV__STATUS_CODE__OK;
	struct kv_reply r = { .id = id,
			      .method = kv_rpc_method_name(m),
			      .code = res->code,
			      .message = ok ? NULL : res->message,
			      .end_of_stream = 1,
			      .payload = ok ? res->reply : NULL };
	int failable = ok && res->hold;
	if (ok && res->write)
		s->unsynced_writes++;
	if (!ok && res->code == KV__STATUS_CODE__UNAVAILABLE && kv_engine_readonly(s->engine))
		log_io_error(s, KV_EREADONLY); /* a write hit the I/O error itself */
	if (failable && res->sync)
		s->sync_wanted = 1;
	conn_put(c, &r, m, failable);
}

/* Stop reading; the connection closes once its output is written. */
static void conn_drain(struct kv_conn *c)
{
	if (c->state != CONN_OPEN)
		return;
	c->state = CONN_DRAINING;
	kv_rpc_scan_free(c->scan);
	c->scan = NULL;
	evbuffer_drain(c->in, evbuffer_get_length(c->in));
	c->frame_since = 0;
	conn_mark_dirty(c);
	conn_update_events(c);
}

/* A protocol error that ends the connection: one reply with id 0, then
 * close after the output is written. */
__attribute__((format(printf, 3, 4))) static void conn_fatal(struct kv_conn *c, uint32_t code,
							     const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	kv_log_info("conn %llu: %s; closing", (unsigned long long)c->serial, msg);
	struct kv_reply r = { .id = 0, .method = "", .code = code, .message = msg, .end_of_stream = 1 };
	if (conn_put(c, &r, -1, 0) == 0)
		conn_drain(c);
}

/* A method name fit for a status message: printable ASCII, at most 64. */
static void printable_name(char *dst, size_t cap, const char *src)
{
	size_t o = 0;
	for (; src && *src && o + 1 < cap && o < 64; src++)
		dst[o++] = (*src >= 0x20 && *src < 0x7f && *src != '"') ? *src : '?';
	dst[o] = '\0';
}

static void conn_exec_frame(struct kv_conn *c, uint32_t blen)
{
	struct kv_server *s = c->srv;
	c->frame_since = 0;
	s->ctr.requests++;
	Kv__Envelope *env = kv_frame_take(c->in, blen, &s->arena.pb);
	if (!env) {
		conn_fatal(c, KV__STATUS_CODE__INVALID_ARGUMENT, "malformed envelope (%u bytes)", blen);
		goto out;
	}
	int m = kv_rpc_lookup(env->method);
	if (m < 0) {
		char name[80], msg[128];
		printable_name(name, sizeof name, env->method);
		snprintf(msg, sizeof msg, "unknown method \"%s\"", name);
		struct kv_reply r = { .id = env->id,
				      .method = name,
				      .code = KV__STATUS_CODE__UNIMPLEMENTED,
				      .message = msg,
				      .end_of_stream = 1 };
		conn_put(c, &r, -1, 0);
		goto out;
	}
	struct kv_rpc_result res;
	kv_rpc_call(&s->rpc, m, env->payload.data, env->payload.len, &res);
	if (res.scan) {
		c->scan = res.scan; /* conn_pump streams it (invariant 1: after held) */
		c->scan_id = env->id;
		goto out;
	}
	if (res.wait_merge) { /* invariant 6: merge_done_cb replies */
		c->mwait = res.wait_merge;
		c->mwait_id = env->id;
		goto out;
	}
	conn_reply_result(c, env->id, m, &res);
out:
	request_done(s);
}

/* One slice of a streaming Scan: up to SCAN_STEP_MSGS replies, stopping
 * once out reaches SCAN_TARGET. */
static void conn_scan_step(struct kv_conn *c)
{
	struct kv_server *s = c->srv;
	for (int i = 0; i < SCAN_STEP_MSGS && c->scan && c->state == CONN_OPEN; i++) {
		if (evbuffer_get_length(c->out) >= SCAN_TARGET)
			break;
		struct kv_rpc_result res;
		int more = kv_rpc_scan_next(&s->rpc, c->scan, &res);
		int last = !more || res.code != KV__STATUS_CODE__OK;
		struct kv_reply r = { .id = c->scan_id,
				      .method = kv_rpc_method_name(KV_RPC_SCAN),
				      .code = res.code,
				      .message = res.code ? res.message : NULL,
				      .end_of_stream = last,
				      .payload = res.code ? NULL : res.reply };
		if (last) {
			kv_rpc_scan_free(c->scan);
			c->scan = NULL;
		}
		conn_put(c, &r, KV_RPC_SCAN, 0);
		request_done(s);
	}
}

static void conn_after_pump(struct kv_conn *c)
{
	if (c->state == CONN_OPEN) {
		int blocked = c->scan || c->paused || c->mwait;
		size_t have = evbuffer_get_length(c->in);
		if (!blocked && c->eof) {
			if (have > 0)
				kv_log_debug("conn %llu: peer closed inside a frame (%zu bytes dropped)",
					     (unsigned long long)c->serial, have);
			conn_drain(c);
			return;
		}
		if (!blocked && have > 0) { /* the head frame is incomplete */
			if (!c->frame_since)
				c->frame_since = mono_ms();
		} else {
			c->frame_since = 0; /* nothing pending, or we are not reading */
		}
	}
	conn_update_events(c);
}

/*
 * PREFETCHING. A 1M-key store is far larger than the caches: a Get costs
 * three dependent cache misses (keydir bucket, keydir entry, record), a Put
 * or Delete two. Before executing a batch of frames — the pipelined frames
 * of one connection (conn_pump), or the head frames of every connection
 * that became readable in one pass (pump_ready) — the keys are found in the
 * raw frames and the engine prefetches each stage for a window of keys
 * ahead (kv_engine_prefetch), so the misses of a batch overlap instead of
 * following one another. Reads only; the frames then execute as usual, in
 * order. c->ahead counts the frames at the head of c->in already covered.
 */
struct pf_key {
	const uint8_t *key;
	size_t klen;
	int get;
};

#define PF_WINDOW 8 /* keys between two stages of the pipeline */

/* Collect the keys of up to max complete frames at the head of c->in (its
 * first contiguous piece); sets c->ahead. Returns the keys found. */
static unsigned pf_collect(struct kv_conn *c, struct pf_key *k, unsigned max)
{
	struct evbuffer_iovec v;
	unsigned frames = 0, n = 0;
	c->ahead = 1;
	if (evbuffer_peek(c->in, -1, NULL, &v, 1) < 1)
		return 0;
	const uint8_t *p = v.iov_base, *end = p + v.iov_len;
	while (n < max && end - p >= 4) {
		uint32_t blen = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
		if (blen > (size_t)(end - p) - 4)
			break;
		const uint8_t *m;
		size_t mlen;
		if (kv_frame_peek_key(p + 4, blen, &m, &mlen, &k[n].key, &k[n].klen)) {
			k[n].get = mlen == 3 && memcmp(m, "Get", 3) == 0;
			n++;
		}
		frames++;
		p += 4 + (size_t)blen;
	}
	if (frames)
		c->ahead = frames;
	return n;
}

/* The three prefetch stages over k[0..n), PF_WINDOW keys apart. */
static void pf_run(kv_engine *e, const struct pf_key *k, unsigned n)
{
	if (n < 2)
		return; /* nothing to overlap */
	for (unsigned i = 0; i < n + 2 * PF_WINDOW; i++) {
		if (i < n)
			kv_engine_prefetch(e, k[i].key, k[i].klen, 0);
		if (i >= PF_WINDOW && i - PF_WINDOW < n)
			kv_engine_prefetch(e, k[i - PF_WINDOW].key, k[i - PF_WINDOW].klen, 1);
		if (i >= 2 * PF_WINDOW && k[i - 2 * PF_WINDOW].get)
			kv_engine_prefetch(e, k[i - 2 * PF_WINDOW].key, k[i - 2 * PF_WINDOW].klen, 2);
	}
}

/* The pipelined frames of one connection. */
static void conn_prefetch(struct kv_conn *c)
{
	struct pf_key k[PREFETCH_MAX];
	pf_run(c->srv->engine, k, pf_collect(c, k, PREFETCH_MAX));
}

/* Execute what can be executed: the Scan in progress, then every complete
 * frame, while the output is below OUT_HIGH. */
static void conn_pump(struct kv_conn *c)
{
	while (c->state == CONN_OPEN) {
		if (c->mwait)
			break; /* invariant 6 */
		if (c->scan) {
			if (c->holding || evbuffer_get_length(c->out) >= SCAN_TARGET)
				break;
			conn_scan_step(c);
			if (c->scan)
				break;
			continue;
		}
		if (c->paused)
			break;
		if (conn_outlen(c) >= OUT_HIGH) {
			c->paused = 1;
			break;
		}
		uint32_t blen = 0;
		int st = kv_frame_peek(c->in, &blen);
		if (st == KV_FRAME_NEED_MORE)
			break;
		if (st == KV_FRAME_TOO_BIG) {
			conn_fatal(c, KV__STATUS_CODE__RESOURCE_EXHAUSTED,
				   "frame of %u bytes exceeds the maximum of %u bytes", blen,
				   KV_FRAME_MAX);
			break;
		}
		if (c->ahead == 0)
			conn_prefetch(c);
		c->ahead--;
		conn_exec_frame(c, blen);
	}
	conn_after_pump(c);
}

/* Read what the socket has (more when a large frame is pending).
 * Returns 1 when bytes arrived, 0 when nothing did, -1 when c died. */
static int conn_read(struct kv_conn *c)
{
	struct kv_server *s = c->srv;
	size_t got = 0;
	while (got < READ_MAX) {
		size_t want = READ_CHUNK;
		size_t have = evbuffer_get_length(c->in);
		uint32_t blen = 0;
		if (have >= 4 && kv_frame_peek(c->in, &blen) == KV_FRAME_NEED_MORE) {
			size_t missing = 4 + (size_t)blen - have;
			if (missing > want)
				want = missing < READ_MAX ? missing : READ_MAX;
		}
		struct evbuffer_iovec v[2];
		struct iovec iov[2];
		int nv = 0;
		size_t asked;
		ssize_t k;
		if (want <= READ_CHUNK) {
			/* Small frames, the usual case: read into the loop's scratch
			 * buffer and copy what came, so no connection holds a 64 KiB
			 * block (pump_ready runs after every read of the pass). */
			asked = sizeof s->rbuf;
			do
				k = read(c->fd, s->rbuf, asked);
			while (k < 0 && errno == EINTR);
			if (k > 0 && evbuffer_add(c->in, s->rbuf, (size_t)k) != 0) {
				conn_kill(c, KV_LOG_WARN, "out of memory reading a request");
				return -1;
			}
		} else {
			/* The rest of a large frame goes straight into its buffer. */
			nv = evbuffer_reserve_space(c->in, (ev_ssize_t)want, v, 2);
			if (nv < 1) {
				conn_kill(c, KV_LOG_WARN, "out of memory reading a request");
				return -1;
			}
			for (int i = 0; i < nv; i++) {
				iov[i].iov_base = v[i].iov_base;
				iov[i].iov_len = v[i].iov_len;
			}
			asked = iov[0].iov_len + (nv > 1 ? iov[1].iov_len : 0);
			do
				k = readv(c->fd, iov, nv);
			while (k < 0 && errno == EINTR);
		}
		if (k < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_kill(c, errno == ECONNRESET ? KV_LOG_DEBUG : KV_LOG_INFO, "read: %s",
				  strerror(errno));
			return -1;
		}
		if (k == 0) {
			c->eof = 1;
			break;
		}
		if (nv > 0) {
			size_t left = (size_t)k;
			int used = 0;
			for (int i = 0; i < nv && left > 0; i++, used++) {
				if (v[i].iov_len > left)
					v[i].iov_len = left;
				left -= v[i].iov_len;
			}
			if (evbuffer_commit_space(c->in, v, used) != 0) {
				conn_kill(c, KV_LOG_WARN, "cannot commit read buffer");
				return -1;
			}
		}
		got += (size_t)k;
		if ((size_t)k < asked)
			break; /* the socket is drained */
	}
	return got > 0;
}

/* After a write of out (drained already) that returned n, err being its
 * errno when n < 0 (n = 0, err = 0: nothing was written, nothing was due):
 * note a blocked socket, then resume a paused connection or a Scan. */
static void conn_wrote(struct kv_conn *c, int n, int err)
{
	if (c->state == CONN_DEAD)
		return;
	if (n < 0 && err != EAGAIN && err != EWOULDBLOCK && err != EINTR) {
		conn_kill(c, err == EPIPE || err == ECONNRESET ? KV_LOG_DEBUG : KV_LOG_INFO,
			  "write: %s", strerror(err));
		return;
	}
	size_t left = evbuffer_get_length(c->out);
	c->wblocked = left > 0;
	if (left == 0)
		c->stall_since = 0;
	else if (n > 0 || !c->stall_since)
		c->stall_since = mono_ms();
	if (c->state == CONN_DRAINING) {
		if (!c->holding && evbuffer_get_length(c->out) == 0) {
			conn_kill(c, KV_LOG_DEBUG, NULL);
			return;
		}
		conn_update_events(c);
		return;
	}
	int again = 0;
	if (c->paused && conn_outlen(c) < OUT_LOW) {
		c->paused = 0;
		again = 1;
	}
	if (c->scan && !c->holding && evbuffer_get_length(c->out) < SCAN_TARGET)
		again = 1;
	if (again)
		conn_pump(c); /* new output is written by flush_dirty */
	else
		conn_update_events(c);
}

/* Write out (one writev), then as conn_wrote(). */
static void conn_flush(struct kv_conn *c)
{
	if (c->state == CONN_DEAD)
		return;
	int n = 0, err = 0;
	if (evbuffer_get_length(c->out) > 0) {
		n = evbuffer_write(c->out, c->fd);
		err = n < 0 ? errno : 0;
	}
	conn_wrote(c, n, err);
}

/* ---- IO BATCHES --------------------------------------------------------------
 * With a ring (kv_ring.h), read_cb() only marks a connection, and
 * ring_reads() reads every marked connection of the pass in one
 * io_uring_enter, into a slice of ring_buf each (then copied into in, as
 * conn_read() does from rbuf); flush_dirty() writes every connection with
 * output in one. A slice that comes back full, or a frame whose missing
 * part is larger than a slice, is read by conn_read() as without a ring;
 * a write of more than RING_IOV pieces writes the rest with conn_flush().
 * A batch of one goes the plain way (one system call either way). If the
 * ring fails, it is closed and the loop goes on with plain calls
 * (ring_give_up()): every operation it did not finish is redone.
 * 64 connections per system call (KV_RING_MAX); ring_buf is 1 MiB,
 * allocated once, touched only as far as reads fill it.
 */
static void ring_give_up(struct kv_server *s, int rc)
{
	kv_log_warn("io_uring failed (%s): one system call per read and write from now on",
		    strerror(-rc));
	kv_ring_close(s->ring);
	s->ring = NULL;
	s->ctr.io_uring = 0;
}

static void ring_note(void *arg, uint64_t tag, int res)
{
	struct kv_server *s = arg;
	s->ring_res[tag] = res;
}

/* Run the q queued operations: their results land in ring_res (-ECANCELED:
 * not done, to redo the plain way; the ring is then given up). */
static void ring_run(struct kv_server *s, unsigned q)
{
	int rc = kv_ring_run(s->ring, ring_note, s);
	if (rc < 0) {
		ring_give_up(s, rc);
		return;
	}
	s->ctr.io_batches++;
	s->ctr.io_batched_ops += q;
}

/* Can the next read of c go into a ring slice? Not in the middle of a
 * frame larger than one: conn_read() reads that straight into in. */
static int ring_read_fits(struct kv_conn *c)
{
	uint32_t blen = 0;
	size_t have = evbuffer_get_length(c->in);
	if (have >= 4 && kv_frame_peek(c->in, &blen) == KV_FRAME_NEED_MORE &&
	    4 + (size_t)blen - have > RING_SLICE)
		return 0;
	return 1;
}

/* The result of a batched read of c into buf (as conn_read()'s loop body). */
static void ring_read_done(struct kv_conn *c, const unsigned char *buf, int res)
{
	if (c->state != CONN_OPEN)
		return;
	if (res == -ECANCELED) { /* the ring failed: read the plain way */
		(void)conn_read(c);
		return;
	}
	if (res == -EAGAIN || res == -EWOULDBLOCK || res == -EINTR)
		return;
	if (res < 0) {
		conn_kill(c, res == -ECONNRESET ? KV_LOG_DEBUG : KV_LOG_INFO, "read: %s",
			  strerror(-res));
		return;
	}
	if (res == 0) {
		c->eof = 1;
		return;
	}
	if (evbuffer_add(c->in, buf, (size_t)res) != 0) {
		conn_kill(c, KV_LOG_WARN, "out of memory reading a request");
		return;
	}
	if ((size_t)res == RING_SLICE)
		(void)conn_read(c); /* the socket may hold more */
}

/* Read the connections read_cb() marked, KV_RING_MAX per system call. */
static void ring_reads(struct kv_server *s)
{
	size_t i = 0, marked = 0;
	for (size_t k = 0; k < s->ready.n; k++)
		marked += s->ready.v[k]->ring_read;
	while (i < s->ready.n) {
		unsigned q = 0;
		for (; i < s->ready.n && q < KV_RING_MAX; i++) {
			struct kv_conn *c = s->ready.v[i];
			if (!c->ring_read)
				continue;
			c->ring_read = 0;
			if (c->state != CONN_OPEN)
				continue;
			if (marked < 2 || !s->ring) { /* one read: the plain call is as cheap */
				(void)conn_read(c);
				continue;
			}
			s->ring_conn[q] = c;
			s->ring_res[q] = -ECANCELED;
			if (kv_ring_recv(s->ring, c->fd, s->ring_buf + (size_t)q * RING_SLICE,
					 RING_SLICE, q) < 0) {
				(void)conn_read(c);
				continue;
			}
			q++;
		}
		if (q == 0)
			continue;
		ring_run(s, q);
		for (unsigned k = 0; k < q; k++)
			ring_read_done(s->ring_conn[k], s->ring_buf + (size_t)k * RING_SLICE,
				       s->ring_res[k]);
	}
}

/* flush_dirty() with a ring: the writes of up to KV_RING_MAX connections
 * per system call, then what conn_flush() does after its write. */
static void ring_writes(struct kv_server *s, struct conn_vec *work)
{
	size_t i = 0;
	while (i < work->n) {
		unsigned q = 0;
		for (; i < work->n && q < KV_RING_MAX; i++) {
			struct kv_conn *c = work->v[i];
			c->in_dirty = 0;
			if (c->state == CONN_DEAD || c->wblocked)
				continue;
			if (!s->ring || evbuffer_get_length(c->out) == 0) {
				conn_flush(c);
				continue;
			}
			int n = evbuffer_peek(c->out, -1, NULL, (struct evbuffer_iovec *)s->ring_iov[q],
					      RING_IOV);
			if (n > RING_IOV)
				n = RING_IOV;
			s->ring_len[q] = 0;
			for (int k = 0; k < n; k++)
				s->ring_len[q] += s->ring_iov[q][k].iov_len;
			s->ring_conn[q] = c;
			s->ring_res[q] = -ECANCELED;
			if (kv_ring_send(s->ring, c->fd, s->ring_iov[q], n, q) < 0) {
				conn_flush(c);
				continue;
			}
			q++;
		}
		if (q == 0)
			continue;
		ring_run(s, q);
		for (unsigned k = 0; k < q; k++) {
			struct kv_conn *c = s->ring_conn[k];
			int res = s->ring_res[k];
			if (res == -ECANCELED) {
				conn_flush(c);
				continue;
			}
			if (res > 0)
				evbuffer_drain(c->out, (size_t)res);
			if (res > 0 && (size_t)res == s->ring_len[k] && evbuffer_get_length(c->out) > 0)
				conn_flush(c); /* more than RING_IOV pieces: the rest */
			else
				conn_wrote(c, res < 0 ? -1 : res, res < 0 ? -res : 0);
		}
	}
}

/* Read, then leave the executing to pump_ready(), after every read
 * callback of this pass (see PREFETCHING). */
static void read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct kv_conn *c = arg;
	(void)fd;
	(void)what;
	if (c->state != CONN_OPEN)
		return;
	if (c->srv->ring && ring_read_fits(c))
		c->ring_read = 1; /* read by ring_reads(), with the others of this pass */
	else if (conn_read(c) < 0)
		return;
	if (!c->in_ready) {
		c->in_ready = 1;
		vec_push(&c->srv->ready, c);
	}
}

/* Execute what the connections read in this pass brought, prefetching the
 * head frames of all of them first. */
static void pump_ready(struct kv_server *s)
{
	struct pf_key k[PREFETCH_MAX * 2];
	unsigned n = 0;
	ring_reads(s);
	struct conn_vec work = s->ready;
	s->ready = s->ready_spare;
	for (size_t i = 0; i < work.n && n < PREFETCH_MAX * 2; i++) {
		struct kv_conn *c = work.v[i];
		if (c->state == CONN_OPEN && !c->scan && !c->paused && !c->mwait)
			n += pf_collect(c, k + n, PREFETCH_MAX * 2 - n < 4 ? PREFETCH_MAX * 2 - n : 4);
	}
	pf_run(s->engine, k, n);
	for (size_t i = 0; i < work.n; i++) {
		struct kv_conn *c = work.v[i];
		c->in_ready = 0;
		kv_poll_seen(&s->poll, &c->poll_epoch);
		conn_pump(c); /* may kill c: freed only by reap() */
	}
	work.n = 0;
	s->ready_spare = work;
}

/* One pass of the event loop, then the frames it brought. */
static int loop_once(struct kv_server *s, int flags)
{
	if (event_base_loop(s->base, flags) < 0)
		return -1;
	pump_ready(s);
	return 0;
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct kv_conn *c = arg;
	(void)fd;
	(void)what;
	conn_flush(c);
}

static int conn_new(struct kv_server *s, int fd)
{
	if (vecs_reserve(s, s->nstructs + 1) < 0)
		return -1;
	struct kv_conn *c = calloc(1, sizeof *c);
	if (!c)
		return -1;
	c->srv = s;
	c->fd = fd;
	c->in = evbuffer_new();
	c->out = evbuffer_new();
	c->held = evbuffer_new();
	c->rev = event_new(s->base, fd, EV_READ | EV_PERSIST, read_cb, c);
	c->wev = event_new(s->base, fd, EV_WRITE | EV_PERSIST, write_cb, c);
	TAILQ_INSERT_TAIL(&s->conns, c, link);
	s->nstructs++;
	if (!c->in || !c->out || !c->held || !c->rev || !c->wev) {
		c->fd = -1; /* the caller still owns fd */
		conn_free(c);
		return -1;
	}
	c->serial = ++s->next_serial;
	s->ctr.connections++;
	conn_update_events(c);
	kv_log_debug("conn %llu: accepted (fd %d)", (unsigned long long)c->serial, fd);
	return 0;
}

/* ---- accepting -------------------------------------------------------------------- */

/* One reply with id 0 on a connection we will not serve, then close. A
 * fresh socket has room for it; if not, the client sees the close. */
static void send_refusal(struct kv_server *s, int fd, uint32_t code, const char *why)
{
	struct kv_reply r = { .id = 0, .method = "", .code = code, .message = why, .end_of_stream = 1 };
	if (kv_frame_put_reply(s->scratch, &r) > 0)
		(void)evbuffer_write(s->scratch, fd);
	evbuffer_drain(s->scratch, evbuffer_get_length(s->scratch));
	close(fd);
}

/* UNAVAILABLE (id 0), close, and a warning at most every 10 s. */
static void refuse(struct kv_server *s, int fd, const char *why)
{
	send_refusal(s, fd, KV__STATUS_CODE__UNAVAILABLE, why);
	uint64_t now = mono_ms();
	if (now - s->refuse_logged_ms >= 10000 || !s->refuse_logged_ms) {
		s->refuse_logged_ms = now;
		kv_log_warn("refusing a connection: %s", why);
	}
}

static void accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct kv_server *s = arg;
	(void)what;
	for (int i = 0; i < ACCEPT_BATCH && !s->stopping; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			int e = errno;
			if (e == EINTR || e == ECONNABORTED || e == EPROTO)
				continue;
			if (e == EAGAIN || e == EWOULDBLOCK)
				break;
			uint64_t now = mono_ms();
			if (now - s->accept_err_logged_ms >= 10000 || !s->accept_err_logged_ms) {
				s->accept_err_logged_ms = now;
				kv_log_warn("accept: %s; pausing accepts for 100 ms", strerror(e));
			}
			/* EMFILE and friends: the backlog would wake us at once. */
			struct timeval tv = ms_tv(100);
			event_del(s->listen_ev);
			event_add(s->accept_retry_ev, &tv);
			break;
		}
		struct kv_peer peer;
		if (!kv_acl_check(&s->acl, fd, &peer)) {
			char why[128];
			snprintf(why, sizeof why, "permission denied: uid %d gid %d is not allowed",
				 (int)peer.uid, (int)peer.gid);
			kv_log_warn("refused a connection from pid %d uid %d gid %d: not in "
				    "allow-uids/allow-gids",
				    (int)peer.pid, (int)peer.uid, (int)peer.gid);
			send_refusal(s, fd, KV__STATUS_CODE__PERMISSION_DENIED, why);
			continue;
		}
		if (s->ctr.connections >= s->cfg.max_connections) {
			char why[96];
			snprintf(why, sizeof why, "too many connections (max %u)",
				 s->cfg.max_connections);
			refuse(s, fd, why);
			continue;
		}
		if (conn_new(s, fd) < 0)
			refuse(s, fd, "out of memory");
	}
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct kv_server *s = arg;
	(void)fd;
	(void)what;
	if (!s->stopping && s->listen_ev)
		event_add(s->listen_ev, NULL);
}

/* ---- group commit -------------------------------------------------------------------- */

static void log_io_error(struct kv_server *s, int rc)
{
	if (s->io_error_logged)
		return;
	s->io_error_logged = 1;
	const char *why = kv_engine_readonly_reason(s->engine);
	kv_log_error("I/O error on the active segment: %s; kvd is read-only until restart",
		     why && *why ? why : kv_strerror(rc));
}

/* kv_engine_sync() and the Stats counters (syncs, writes per sync). */
static int server_sync(struct kv_server *s)
{
	uint64_t unsynced = kv_engine_unsynced(s->engine);
	uint64_t t0 = unsynced ? mono_ns() : 0;
	int rc = kv_engine_sync(s->engine);
	if (rc < 0)
		return rc;
	if (unsynced)
		s->ctr.sync_ns += mono_ns() - t0;
	if (unsynced > 0 || s->unsynced_writes > 0) {
		s->ctr.syncs++;
		s->ctr.synced_writes += s->unsynced_writes;
		s->unsynced_writes = 0;
	}
	return 0;
}

/* Move the held replies of c's first n records to out; on a failed
 * commit, rewrite the failable ones to UNAVAILABLE with why (invariant 2).
 * Returns -1 when c died. */
static int conn_release(struct kv_conn *c, size_t n, int failed, const char *why)
{
	if (!failed) {
		size_t len = 0;
		for (size_t i = 0; i < n; i++)
			len += c->recs[i].len;
		evbuffer_remove_buffer(c->held, c->out, len);
	} else {
		for (size_t i = 0; i < n; i++) {
			const struct held_rec *h = &c->recs[i];
			if (!h->failable) {
				evbuffer_remove_buffer(c->held, c->out, h->len);
				continue;
			}
			evbuffer_drain(c->held, h->len);
			struct kv_reply r = { .id = h->id,
					      .method = kv_rpc_method_name(h->method),
					      .code = KV__STATUS_CODE__UNAVAILABLE,
					      .message = why,
					      .end_of_stream = 1 };
			if (kv_frame_put_reply(c->out, &r) < 0) {
				conn_kill(c, KV_LOG_WARN, "out of memory failing a write");
				return -1;
			}
		}
	}
	c->nrecs -= n;
	memmove(c->recs, c->recs + n, c->nrecs * sizeof *c->recs);
	if (c->nrecs == 0) {
		c->holding = 0;
		if (c->caprecs > HELD_RECS_KEEP) {
			free(c->recs);
			c->recs = NULL;
			c->caprecs = 0;
		}
	}
	conn_mark_dirty(c);
	return 0;
}

/* Release, on every holding connection, the replies of commits <= upto
 * (all of them when failed). Connections left with nothing held go on
 * executing the frames that waited behind their replies. */
static void release_upto(struct kv_server *s, uint64_t upto, int failed, const char *why)
{
	struct conn_vec work = s->hold;
	s->hold = s->hold_spare;
	for (size_t i = 0; i < work.n; i++) {
		struct kv_conn *c = work.v[i];
		c->in_hold = 0;
		if (c->state == CONN_DEAD)
			continue;
		size_t n = 0;
		while (n < c->nrecs && (failed || c->recs[n].commit <= upto))
			n++;
		if (n > 0 && conn_release(c, n, failed, why) < 0)
			continue;
		if (c->nrecs > 0) {
			c->in_hold = 1;
			vec_push(&s->hold, c);
		}
	}
	for (size_t i = 0; i < work.n; i++)
		if (work.v[i]->state == CONN_OPEN && !work.v[i]->holding)
			conn_pump(work.v[i]);
	work.n = 0;
	s->hold_spare = work;
}

/* Fail every held write: the engine is read-only from now on. */
static void release_failed(struct kv_server *s, int rc)
{
	char why[256];
	log_io_error(s, rc);
	const char *r = kv_engine_readonly_reason(s->engine);
	snprintf(why, sizeof why, "read-only after I/O error: %s",
		 r && *r ? r : kv_strerror(rc < 0 ? rc : KV_EREADONLY));
	s->released = s->commit_seq - 1;
	release_upto(s, UINT64_MAX, 1, why);
}

/* Runs of the sync thread that finished (wait: block until all have). */
static void collect_runs(struct kv_server *s, int wait)
{
	if (!s->syncer || s->last_job <= s->released)
		return;
	if (wait)
		kv_syncer_wait(s->syncer);
	uint64_t done, runs, ns;
	int rc;
	struct kv_sync_job fj;
	kv_syncer_collect(s->syncer, &done, &runs, &ns, &rc, &fj);
	s->ctr.syncs += runs;
	s->ctr.sync_ns += ns;
	if (rc == 0 && runs == 0)
		return;
	if (rc)
		rc = kv_engine_sync_end(s->engine, &fj, rc);
	else
		rc = kv_engine_sync_end(s->engine, &fj, 0);
	/* A write held here was not acknowledged yet: if the engine turned
	 * read-only meanwhile (e.g. a failed interval sync), it fails too. */
	if (rc < 0 || kv_engine_readonly(s->engine)) {
		release_failed(s, rc);
		return;
	}
	if (done <= s->released)
		return;
	s->released = done;
	/* groups flushed after the last job needed no fdatasync */
	if (s->last_job <= done && s->flushed > s->released)
		s->released = s->flushed;
	release_upto(s, s->released, 0, NULL);
}

/*
 * The commit point of a pass (GROUP COMMIT in the header comment).
 * 1. Runs of the sync thread that finished release their commits.
 * 2. If replies were held in this pass, they form commit k: flush, then
 *    - an fdatasync is due and more than one client is connected: hand k
 *      to the sync thread; its replies go out when a run covering k ends,
 *      while the loop goes on gathering k+1;
 *    - due, one client (or shutdown): fdatasync here (one client cannot
 *      send more meanwhile; the thread would only add two wake-ups);
 *    - not due: release k once every earlier commit is released.
 */
static void commit_step(struct kv_server *s, int wait)
{
	collect_runs(s, wait);
	if (!s->commit_needed)
		return;
	s->commit_needed = 0;
	uint64_t k = s->commit_seq++;
	int want_sync = s->sync_wanted || s->cfg.sync_mode == KV_SYNC_ALWAYS;
	s->sync_wanted = 0;
	int threaded = want_sync && s->syncer && !wait && s->ctr.connections > 1;
	int rc;
	if (threaded) {
		struct kv_sync_job j;
		rc = kv_engine_sync_begin(s->engine, &j);
		if (rc == 1) {
			kv_syncer_submit(s->syncer, k, &j);
			s->last_job = k;
			s->flushed = k;
			s->ctr.synced_writes += s->unsynced_writes;
			s->unsynced_writes = 0;
			return;
		}
		/* 0: nothing written since the last job (held reads): no sync */
	} else {
		/* A job handed over reset the engine's unsynced count: its run
		 * must end before an fdatasync here may speak for its commits. */
		if (want_sync && s->last_job > s->released)
			collect_runs(s, 1);
		rc = kv_engine_flush(s->engine);
		if (rc == 0 && want_sync)
			rc = server_sync(s);
	}
	if (rc < 0 || kv_engine_readonly(s->engine)) {
		release_failed(s, rc);
		return;
	}
	s->flushed = k;
	/* an fdatasync here covers every commit before k too */
	if ((want_sync && !threaded) || s->last_job <= s->released)
		s->released = k;
	release_upto(s, s->released, 0, NULL);
}

static void flush_dirty(struct kv_server *s)
{
	struct conn_vec work = s->dirty;
	s->dirty = s->dirty_spare;
	if (s->ring && work.n > 1) { /* IO BATCHES */
		ring_writes(s, &work);
	} else {
		for (size_t i = 0; i < work.n; i++) {
			struct kv_conn *c = work.v[i];
			c->in_dirty = 0;
			if (c->state != CONN_DEAD && !c->wblocked)
				conn_flush(c);
		}
	}
	work.n = 0;
	s->dirty_spare = work;
}

static void reap(struct kv_server *s)
{
	struct conn_vec work = s->dead;
	s->dead = s->dead_spare;
	for (size_t i = 0; i < work.n; i++) {
		struct kv_conn *c = work.v[i];
		if (c->in_hold || c->in_dirty || c->in_ready)
			vec_push(&s->dead, c); /* invariant 4: next pass */
		else
			conn_free(c);
	}
	work.n = 0;
	s->dead_spare = work;
}

/* ---- timers and signals ------------------------------------------------------------------ */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct kv_server *s = arg;
	(void)fd;
	(void)what;
	int more = kv_engine_tick(s->engine); /* steps a running merge too: */
	kv_jobs_poll(s->jobs);                /* its end, its pipe (kv_jobs inv. 3) */
	struct timeval tv = ms_tv(more ? 10 : 1000);
	event_add(s->tick_ev, &tv);
}

/* A run of the sync thread finished: the wake-up is the point;
 * commit_step() collects it at the end of this pass. */
static void syncer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static void sync_cb(evutil_socket_t fd, short what, void *arg)
{
	struct kv_server *s = arg;
	(void)fd;
	(void)what;
	if (kv_engine_readonly(s->engine) || kv_engine_unsynced(s->engine) == 0)
		return;
	int rc = server_sync(s);
	if (rc < 0)
		log_io_error(s, rc);
}

/* Drop connections whose frame or whose output is stuck past its deadline. */
static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct kv_server *s = arg;
	(void)fd;
	(void)what;
	uint64_t now = mono_ms();
	struct kv_conn *c;
	TAILQ_FOREACH(c, &s->conns, link) {
		if (c->state == CONN_DEAD)
			continue;
		if (c->frame_since && now - c->frame_since >= s->cfg.frame_timeout_ms)
			conn_kill(c, KV_LOG_INFO, "frame not completed within %u ms",
				  s->cfg.frame_timeout_ms);
		else if (c->stall_since && now - c->stall_since >= s->cfg.write_timeout_ms)
			conn_kill(c, KV_LOG_INFO, "client has not read its replies for %u ms (%zu bytes queued)",
				  s->cfg.write_timeout_ms, conn_outlen(c));
	}
}

/* SIGTERM: stop taking work. Frames already read but not executed (behind a
 * Scan or a full output buffer) are answered UNAVAILABLE; everything else
 * already executed is delivered by the passes that follow. */
static void conn_begin_shutdown(struct kv_conn *c)
{
	struct kv_server *s = c->srv;
	if (c->state != CONN_OPEN)
		return;
	if (c->mwait) {
		c->mwait = 0;
		struct kv_reply r = { .id = c->mwait_id,
				      .method = kv_rpc_method_name(KV_RPC_MERGE),
				      .code = KV__STATUS_CODE__UNAVAILABLE,
				      .message = "kvd is shutting down",
				      .end_of_stream = 1 };
		if (conn_put(c, &r, KV_RPC_MERGE, 0) < 0)
			return;
	}
	if (c->scan) {
		kv_rpc_scan_free(c->scan);
		c->scan = NULL;
		struct kv_reply r = { .id = c->scan_id,
				      .method = kv_rpc_method_name(KV_RPC_SCAN),
				      .code = KV__STATUS_CODE__UNAVAILABLE,
				      .message = "kvd is shutting down",
				      .end_of_stream = 1 };
		if (conn_put(c, &r, KV_RPC_SCAN, 0) < 0)
			return;
	}
	uint32_t blen = 0;
	while (c->state == CONN_OPEN && kv_frame_peek(c->in, &blen) == KV_FRAME_READY) {
		Kv__Envelope *env = kv_frame_take(c->in, blen, &s->arena.pb);
		if (!env)
			break;
		struct kv_reply r = { .id = env->id,
				      .method = "",
				      .code = KV__STATUS_CODE__UNAVAILABLE,
				      .message = "kvd is shutting down",
				      .end_of_stream = 1 };
		int m = kv_rpc_lookup(env->method);
		if (m >= 0)
			r.method = kv_rpc_method_name(m);
		int rc = conn_put(c, &r, m, 0);
		request_done(s);
		if (rc < 0)
			return;
	}
	conn_drain(c);
}

static void begin_shutdown(struct kv_server *s, const char *sig)
{
	if (s->stopping) {
		kv_log_info("%s again: stopping now", sig);
		s->done = 1;
		return;
	}
	s->stopping = 1;
	kv_sd_notify("STOPPING=1\nSTATUS=stopping");
	kv_log_info("%s: shutting down", sig);
	kv_jobs_shutdown(s->jobs); /* a running merge is abandoned at close */
	if (s->listen_ev)
		event_del(s->listen_ev);
	event_del(s->accept_retry_ev);
	kv_listen_close(&s->lis);
	s->stop_deadline = mono_ms() + s->cfg.shutdown_timeout_ms;
	struct timeval tv = ms_tv(s->cfg.shutdown_timeout_ms);
	event_add(s->stop_ev, &tv); /* wakes the loop at the deadline */
	struct kv_conn *c;
	TAILQ_FOREACH(c, &s->conns, link) {
		conn_begin_shutdown(c);
	}
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct kv_server *s = arg;
	(void)what;
	if (sig == SIGHUP) {
		if (s->stopping)
			return;
		if (s->cfg.reload)
			s->cfg.reload(s->cfg.reload_arg);
		else
			kv_log_info("SIGHUP: nothing to reload");
		return;
	}
	begin_shutdown(s, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg; /* kv_server_run checks the deadline after the pass */
}

/* ---- merges ---------------------------------------------------------------------------------- */

/* kv_jobs: the merge with this ticket ended. Answer every connection that
 * waits for it (there is no list: a dead connection is simply not found)
 * and let it go on with its next frames. */
static void merge_done_cb(void *arg, uint64_t ticket, const struct kv_merge_outcome *o)
{
	struct kv_server *s = arg;
	struct kv_conn *c;
	TAILQ_FOREACH(c, &s->conns, link) {
		if (c->mwait != ticket || c->state != CONN_OPEN)
			continue;
		c->mwait = 0;
		struct kv_rpc_result res;
		kv_rpc_merge_result(&s->rpc, o, &res);
		conn_reply_result(c, c->mwait_id, KV_RPC_MERGE, &res);
		request_done(s);
		conn_pump(c); /* may kill c: freed only by reap() */
	}
}

static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	kv_sd_notify("WATCHDOG=1");
}

int kv_server_reconfigure(struct kv_server *s, const struct kv_server_config *cfg)
{
	struct kv_acl acl;
	if (kv_acl_dup(&acl, cfg->acl) < 0)
		return -ENOMEM;
	kv_acl_free(&s->acl);
	s->acl = acl;
	s->cfg.max_connections = cfg->max_connections;
	s->cfg.merge = cfg->merge;
	s->cfg.poll_us = cfg->poll_us;
	kv_poll_set_max(&s->poll, (uint64_t)cfg->poll_us * 1000u);
	kv_jobs_configure(s->jobs, &cfg->merge);
	return 0;
}

/* ---- life cycle ---------------------------------------------------------------------------------- */

int kv_server_create(const struct kv_server_config *cfg, kv_engine *engine,
		     struct kv_server **out, char *err, size_t errlen)
{
	int rc = -ENOMEM;
	struct kv_server *s = calloc(1, sizeof *s);
	*out = NULL;
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	s->cfg = *cfg;
	s->cfg.acl = NULL; /* s->acl is the copy */
	s->engine = engine;
	s->lis.fd = -1;
	TAILQ_INIT(&s->conns);
	kv_arena_init(&s->arena);
	if (cfg->sync_mode == KV_SYNC_ALWAYS)
		snprintf(s->sync_mode_str, sizeof s->sync_mode_str, "always");
	else if (cfg->sync_mode == KV_SYNC_NEVER)
		snprintf(s->sync_mode_str, sizeof s->sync_mode_str, "never");
	else
		snprintf(s->sync_mode_str, sizeof s->sync_mode_str, "interval:%u",
			 cfg->sync_interval_ms);
	s->ctr.start_ms = mono_ms();
	kv_poll_init(&s->poll, (uint64_t)cfg->poll_us * 1000u);
	if (cfg->io_uring) {
		int rrc = kv_ring_open(&s->ring);
		if (rrc == 0 && !(s->ring_buf = malloc((size_t)KV_RING_MAX * RING_SLICE)))
			rrc = -ENOMEM;
		if (rrc < 0) {
			kv_ring_close(s->ring);
			s->ring = NULL;
			kv_log_info("io_uring not available (%s): one system call per read and write",
				    strerror(-rrc));
		}
		s->ctr.io_uring = s->ring != NULL;
	}
	s->ctr.poll = &s->poll;
	s->ctr.sync_mode = s->sync_mode_str;
	s->rpc.engine = engine;
	s->rpc.arena = &s->arena;
	s->rpc.val = &s->val;
	s->rpc.ctr = &s->ctr;
	if (kv_acl_dup(&s->acl, cfg->acl) < 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}

	if ((rc = kv_frame_init(err, errlen)) < 0 || (rc = kv_rpc_init(err, errlen)) < 0)
		goto fail;
	rc = -ENOMEM;
	if (vecs_reserve(s, 64) < 0 || !(s->scratch = evbuffer_new())) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	s->base = event_base_new();
	if (!s->base) {
		snprintf(err, errlen, "cannot create the libevent base");
		goto fail;
	}
	if (cfg->listen_fd >= 0)
		rc = kv_listen_adopt(&s->lis, cfg->listen_fd, err, errlen);
	else
		rc = kv_listen_bind(&s->lis, cfg->socket_path, cfg->socket_mode, err, errlen);
	if (rc < 0)
		goto fail;
	if ((rc = kv_jobs_create(s->base, engine, &cfg->merge, merge_done_cb, s, &s->jobs, err,
				 errlen)) < 0)
		goto fail;
	s->rpc.jobs = s->jobs;
	rc = -ENOMEM;
	s->listen_ev = event_new(s->base, s->lis.fd, EV_READ | EV_PERSIST, accept_cb, s);
	s->accept_retry_ev = evtimer_new(s->base, accept_retry_cb, s);
	s->tick_ev = evtimer_new(s->base, tick_cb, s);
	s->sweep_ev = event_new(s->base, -1, EV_PERSIST, sweep_cb, s);
	s->stop_ev = evtimer_new(s->base, stop_cb, s);
	static const int sigs[3] = { SIGTERM, SIGINT, SIGHUP };
	for (int i = 0; i < 3; i++)
		if (!(s->sig_ev[i] = evsignal_new(s->base, sigs[i], signal_cb, s)))
			goto fail_ev;
	if (!s->listen_ev || !s->accept_retry_ev || !s->tick_ev || !s->sweep_ev || !s->stop_ev)
		goto fail_ev;
	if (cfg->sync_mode == KV_SYNC_INTERVAL &&
	    !(s->sync_ev = event_new(s->base, -1, EV_PERSIST, sync_cb, s)))
		goto fail_ev;
	/* the sync thread; without it group commits fdatasync in the loop */
	s->commit_seq = 1;
	int src = kv_syncer_start(&s->syncer);
	if (src < 0)
		kv_log_warn("cannot start the sync thread (%s); group commits fdatasync in the event "
			    "loop", strerror(-src));
	else if (!(s->syncer_ev = event_new(s->base, kv_syncer_fd(s->syncer), EV_READ | EV_PERSIST,
					    syncer_cb, s)) ||
		 event_add(s->syncer_ev, NULL))
		goto fail_ev;
	if (cfg->watchdog_usec > 0) {
		uint64_t half_ms = cfg->watchdog_usec / 2000u;
		struct timeval wtv = ms_tv((unsigned)(half_ms < 1 ? 1 : half_ms > 3600000u ? 3600000u
											 : half_ms));
		if (!(s->wd_ev = event_new(s->base, -1, EV_PERSIST, watchdog_cb, s)) ||
		    event_add(s->wd_ev, &wtv))
			goto fail_ev;
	}

	struct timeval tv = ms_tv(10);
	unsigned sweep = cfg->frame_timeout_ms < cfg->write_timeout_ms ? cfg->frame_timeout_ms
									: cfg->write_timeout_ms;
	sweep /= 4;
	sweep = sweep < 10 ? 10 : sweep > 1000 ? 1000 : sweep;
	struct timeval stv = ms_tv(sweep);
	if (event_add(s->listen_ev, NULL) || event_add(s->tick_ev, &tv) ||
	    event_add(s->sweep_ev, &stv))
		goto fail_ev;
	for (int i = 0; i < 3; i++)
		if (event_add(s->sig_ev[i], NULL))
			goto fail_ev;
	if (s->sync_ev) {
		struct timeval itv = ms_tv(cfg->sync_interval_ms);
		if (event_add(s->sync_ev, &itv))
			goto fail_ev;
	}
	*out = s;
	return 0;
fail_ev:
	snprintf(err, errlen, "cannot set up libevent events");
fail:
	kv_server_free(s);
	return rc;
}

/* Before an fdatasync: while non-blocking passes keep bringing requests
 * (clients answered by the previous sync are sending their next write),
 * take them into this commit. An fdatasync costs about the same for one
 * write or a hundred, so a few epoll_wait(0) calls buy larger groups.
 * Bounded: at most GATHER_PASSES passes, stopping at the first that
 * executed nothing. */
static int gather(struct kv_server *s)
{
	if (!s->commit_needed || s->stopping ||
	    !(s->sync_wanted || s->cfg.sync_mode == KV_SYNC_ALWAYS) ||
	    (s->syncer && s->ctr.connections > 1)) /* the sync thread gathers */
		return 0;
	for (int i = 0; i < GATHER_PASSES; i++) {
		uint64_t before = s->ctr.requests;
		if (loop_once(s, EVLOOP_ONCE | EVLOOP_NONBLOCK) < 0)
			return -1;
		if (s->ctr.requests == before)
			break;
	}
	return 0;
}

int kv_server_run(struct kv_server *s)
{
	int rc = 0;
	kv_log_debug("event loop started (libevent %s, method %s)", event_get_version(),
		     event_base_get_method(s->base));
	while (!s->done) {
		int flags = EVLOOP_ONCE;
		int polling = s->poll.max_ns && !s->stopping;
		uint64_t requests = s->ctr.requests;
		if (s->commit_needed || s->dirty.n > 0 ||
		    (polling && kv_poll_idle(&s->poll, mono_ns())))
			flags |= EVLOOP_NONBLOCK;
		if (loop_once(s, flags) < 0 || gather(s) < 0) {
			kv_log_error("event loop failed");
			rc = -EIO;
			break;
		}
		commit_step(s, 0);
		flush_dirty(s);
		reap(s);
		if (polling) /* the replies are out: the client's turn starts now */
			kv_poll_after(&s->poll, mono_ns(), s->ctr.requests != requests);
		if (s->stopping && (TAILQ_EMPTY(&s->conns) || mono_ms() >= s->stop_deadline))
			s->done = 1;
	}
	kv_jobs_shutdown(s->jobs); /* invariant 7 */
	/* Last held replies (if the deadline cut the drain short they are lost
	 * with their connection, and the client sees it closed, never an OK
	 * for something that was not committed). Runs of the sync thread
	 * are waited for; what is held after them is synced here. */
	commit_step(s, 1);
	flush_dirty(s);
	struct kv_conn *c;
	size_t left = 0;
	TAILQ_FOREACH(c, &s->conns, link) {
		if (c->state != CONN_DEAD)
			left++;
		c->in_hold = c->in_dirty = c->in_ready = 0;
		conn_kill(c, KV_LOG_DEBUG, "shutdown");
	}
	if (left)
		kv_log_info("closed %zu connection(s) still open at the shutdown deadline", left);
	s->hold.n = s->dirty.n = s->ready.n = 0;
	while (!TAILQ_EMPTY(&s->conns))
		conn_free(TAILQ_FIRST(&s->conns));
	s->dead.n = 0;
	return rc;
}

void kv_server_free(struct kv_server *s)
{
	if (!s)
		return;
	while (!TAILQ_EMPTY(&s->conns))
		conn_free(TAILQ_FIRST(&s->conns));
	kv_jobs_shutdown(s->jobs);
	kv_jobs_free(s->jobs);
	struct event *evs[] = { s->listen_ev,	s->accept_retry_ev, s->tick_ev,	   s->sync_ev,
				s->sweep_ev,	s->stop_ev,	    s->wd_ev,	   s->sig_ev[0],
				s->sig_ev[1], s->sig_ev[2], s->syncer_ev };
	for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
		if (evs[i])
			event_free(evs[i]);
	kv_syncer_stop(s->syncer); /* kv_server_run() left nothing handed over */
	kv_listen_close(&s->lis);
	kv_listen_remove(&s->lis);
	kv_acl_free(&s->acl);
	if (s->scratch)
		evbuffer_free(s->scratch);
	if (s->base)
		event_base_free(s->base);
	kv_arena_free(&s->arena);
	kv_buf_free(&s->val);
	kv_ring_close(s->ring);
	free(s->ring_buf);
	free(s->hold.v);
	free(s->hold_spare.v);
	free(s->dirty.v);
	free(s->dirty_spare.v);
	free(s->dead.v);
	free(s->dead_spare.v);
	free(s->ready.v);
	free(s->ready_spare.v);
	free(s);
}
