/*
 * kv_jobs.c — merge scheduling and driving (interface in kv_jobs.h).
 *
 * THE JOB, as seen from the loop (the engine's own states — running,
 * deleting — live in kv_merge.c):
 *
 *                kv_jobs_merge() (a client), or check_cb() (auto:
 *                merge-auto, past the back-off, kv_engine_merge_wanted())
 *     IDLE ---------------------------------------------------------> RUNNING
 *      ^      start(): kv_engine_merge_start_with() == 0 (the rate limit  |
 *      |      of the configuration in force); watch the pipe,             |
 *      |      STATUS=merging                                              |
 *      |                                                                  |
 *      |      pipe readable (fd_cb), SIGCHLD (chld_cb), step timer        |
 *      |      (step_cb), or kv_engine_tick() + kv_jobs_poll():            |
 *      |      drive(): kv_engine_merge_step(STEP_BUDGET) -> after_step()  |
 *      |                                                                  |
 *      +---- finish(): the engine is idle again; outcome from its --------+
 *            counters; a failure doubles the back-off, a success resets
 *            it; a request that came while RUNNING ("scheduled") starts
 *            the next merge at once; then done(ticket) for each ending.
 *
 * Invariants:
 *  1. At most one merge runs (the engine refuses a second); a request while
 *     one runs sets the one "scheduled" slot, shared by every such request.
 *  2. Every ticket handed out ends exactly once through done(): the running
 *     one in finish(), the scheduled one when it ends or fails to start.
 *  3. The pipe event watches exactly kv_engine_merge_fd(): it is re-synced
 *     after every call that may step the merge (the engine closes the pipe
 *     inside kv_engine_merge_step()), before the loop can reuse the fd
 *     number for a new connection.
 *  4. The outcome comes from the engine's merge counters (merges, failures)
 *     compared with their values at start, so it is right whoever stepped
 *     the engine last (this module or kv_engine_tick()).
 *  5. Work per callback is bounded: one step of at most STEP_BUDGET reports
 *     and about 0.2 ms (kv_engine_merge_step()); a backlog of buffered
 *     reports is worked off one step per pass of the loop.
 */
#include "kv_jobs.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_log.h"
#include "kv_sd.h"

#define STEP_BUDGET 512        /* reports applied per step, at most */
#define STEP_FALLBACK_MS 100   /* step timer while the worker runs */
#define STEP_FINISH_MS 1       /* ... once its pipe is at EOF */
#define BACKOFF_BASE_MS 10000u /* first pause of automatic merges */
#define BACKOFF_MAX_MS 600000u /* cap */

struct kv_jobs {
	struct event_base *base;
	kv_engine *engine;
	struct kv_jobs_config cfg;
	kv_jobs_done_fn done;
	void *done_arg;
	struct event *fd_ev;    /* on the report pipe, or NULL */
	int watched_fd;         /* the fd fd_ev watches, -1 */
	struct event *chld_ev;  /* SIGCHLD */
	struct event *step_ev;  /* fallback / continuation timer */
	struct event *check_ev; /* automatic trigger, persistent */
	int running;
	int stopped;
	uint64_t cur;   /* ticket of the running merge */
	uint64_t sched; /* ticket of the scheduled merge, 0 = none */
	uint64_t last_ticket;
	uint64_t merges0, failures0; /* engine counters at start (invariant 4) */
	unsigned backoff_ms;         /* 0 = none */
	uint64_t backoff_until;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct timeval ms_tv(unsigned ms)
{
	struct timeval tv = {(time_t)(ms / 1000u), (suseconds_t)((ms % 1000u) * 1000u)};
	return tv;
}

void kv_jobs_config_init(struct kv_jobs_config *c)
{
	c->merge_auto = 1;
	c->merge_min_dead_ratio = 0.4;
	c->merge_min_dead_bytes = 128ull << 20;
	c->merge_check_interval_ms = 10000;
	c->merge_rate_limit_mib = KV_MERGE_RATE_LIMIT_DEFAULT_MIB;
	c->merge_cpu = KV_MERGE_CPU_IDLE;
}

/* STATUS= for systemd: the number of keys is the one figure people want. */
static void notify_serving(struct kv_jobs *j)
{
	struct kv_stats st;
	memset(&st, 0, sizeof st);
	if (kv_engine_stats(j->engine, &st) == 0) {
		kv_sd_notifyf("STATUS=serving %llu keys", (unsigned long long)st.keys);
		kv_stats_free(&st);
	}
}

static void fd_cb(evutil_socket_t fd, short what, void *arg);

/* Invariant 3: fd_ev watches kv_engine_merge_fd(), or nothing. */
static void sync_fd_event(struct kv_jobs *j)
{
	int fd = j->stopped ? -1 : kv_engine_merge_fd(j->engine);
	if (fd == j->watched_fd)
		return;
	if (j->fd_ev) {
		event_free(j->fd_ev); /* deletes it first */
		j->fd_ev = NULL;
	}
	j->watched_fd = -1;
	if (fd < 0)
		return;
	j->fd_ev = event_new(j->base, fd, EV_READ | EV_PERSIST, fd_cb, j);
	if (!j->fd_ev || event_add(j->fd_ev, NULL) < 0) {
		/* the step timer still drives the merge, only more slowly */
		kv_log_warn("merge: cannot watch the worker's pipe; polling every %d ms",
		            STEP_FALLBACK_MS);
		if (j->fd_ev)
			event_free(j->fd_ev);
		j->fd_ev = NULL;
		return;
	}
	j->watched_fd = fd;
}

static void back_off(struct kv_jobs *j, const char *why)
{
	j->backoff_ms = j->backoff_ms ? j->backoff_ms * 2 : BACKOFF_BASE_MS;
	if (j->backoff_ms > BACKOFF_MAX_MS)
		j->backoff_ms = BACKOFF_MAX_MS;
	j->backoff_until = mono_ms() + j->backoff_ms;
	kv_log_warn("%s: automatic merges paused for %u s (back-off doubles up to %u s)", why,
	            j->backoff_ms / 1000u, BACKOFF_MAX_MS / 1000u);
}

/* Start a merge for ticket t. 0 (RUNNING), 1 (nothing to merge), or < 0
 * with o filled. */
static int start(struct kv_jobs *j, uint64_t t, const char *why, struct kv_merge_outcome *o)
{
	struct kv_merge_info mi;
	kv_engine_merge_info(j->engine, &mi);
	memset(o, 0, sizeof *o);
	struct kv_merge_params mp = {(uint64_t)j->cfg.merge_rate_limit_mib << 20, NULL, NULL,
				     j->cfg.merge_cpu};
	int rc = kv_engine_merge_start_with(j->engine, &mp);
	if (rc == 1) {
		o->rc = 1;
		kv_log_debug("merge (%s): nothing to merge", why);
		return 1;
	}
	if (rc < 0) {
		o->rc = rc;
		snprintf(o->error, sizeof o->error, "cannot start a merge: %s", kv_strerror(rc));
		if (rc != KV_EREADONLY)
			back_off(j, o->error);
		return rc;
	}
	j->running = 1;
	j->cur = t;
	j->merges0 = mi.merges;
	j->failures0 = mi.failures;
	kv_log_info("merge %llu started (%s)", (unsigned long long)t, why);
	kv_sd_notify("STATUS=merging");
	sync_fd_event(j);
	struct timeval tv = ms_tv(STEP_FALLBACK_MS);
	event_add(j->step_ev, &tv);
	return 0;
}

/* The engine is idle again: report, then start what was scheduled. */
static void finish(struct kv_jobs *j)
{
	struct kv_merge_info mi;
	struct kv_merge_outcome o, o2;
	kv_engine_merge_info(j->engine, &mi);
	memset(&o, 0, sizeof o);
	if (mi.failures > j->failures0) {
		o.rc = -EIO;
		snprintf(o.error, sizeof o.error, "merge failed: %s",
		         mi.last_error[0] ? mi.last_error : "unknown error");
		back_off(j, o.error);
	} else if (mi.merges > j->merges0) {
		o.rc = 0;
		o.reclaimed_bytes = mi.last_reclaimed;
		o.duration_ms = mi.last_ms;
		if (j->backoff_ms)
			kv_log_info("merge succeeded: automatic merges resume normally");
		j->backoff_ms = 0;
		j->backoff_until = 0;
	} else { /* abandoned without a verdict: cannot happen while we run */
		o.rc = -EIO;
		snprintf(o.error, sizeof o.error, "merge ended without a result");
	}
	uint64_t t = j->cur;
	j->running = 0;
	j->cur = 0;
	event_del(j->step_ev);
	sync_fd_event(j);
	uint64_t s = j->stopped ? 0 : j->sched;
	j->sched = 0;
	int src = 0;
	if (s) /* invariant 1: start it before anyone can ask again */
		src = start(j, s, "requested while the previous one ran", &o2);
	if (!j->running)
		notify_serving(j);
	j->done(j->done_arg, t, &o);
	if (s && src != 0)
		j->done(j->done_arg, s, &o2); /* invariant 2 */
}

/* After anything stepped the merge. */
static void after_step(struct kv_jobs *j)
{
	if (!j->running)
		return;
	sync_fd_event(j);
	struct kv_merge_info mi;
	kv_engine_merge_info(j->engine, &mi);
	if (strcmp(mi.state, "idle") == 0) {
		finish(j);
		return;
	}
	/* Reports already buffered: step again in the next pass of the loop,
	 * after the clients it brings (a step is short, invariant 5). Once
	 * the pipe is at EOF only the reaping is left: continue soon.
	 * Otherwise the pipe and SIGCHLD wake us, and the fallback timer
	 * covers the rest (e.g. an open iterator delaying the deletion of
	 * the inputs). */
	unsigned ms = STEP_FALLBACK_MS;
	if (kv_engine_merge_backlog(j->engine))
		ms = 0;
	else if (strcmp(mi.state, "running") == 0 && kv_engine_merge_fd(j->engine) < 0)
		ms = STEP_FINISH_MS;
	struct timeval tv = ms_tv(ms);
	event_add(j->step_ev, &tv);
}

static void drive(struct kv_jobs *j)
{
	if (!j->running || j->stopped)
		return;
	(void)kv_engine_merge_step(j->engine, STEP_BUDGET); /* outcome: invariant 4 */
	after_step(j);
}

static void fd_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	drive(arg);
}

static void chld_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	drive(arg);
}

static void step_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	drive(arg);
}

/* The automatic trigger. */
static void check_cb(evutil_socket_t fd, short what, void *arg)
{
	struct kv_jobs *j = arg;
	(void)fd;
	(void)what;
	if (!j->cfg.merge_auto || j->running || j->stopped)
		return;
	if (j->backoff_until && mono_ms() < j->backoff_until)
		return;
	if (!kv_engine_merge_wanted(j->engine, j->cfg.merge_min_dead_ratio,
	                            j->cfg.merge_min_dead_bytes))
		return;
	char why[160];
	struct kv_stats st;
	memset(&st, 0, sizeof st);
	uint64_t dead = 0, total = 0;
	if (kv_engine_stats(j->engine, &st) == 0) {
		for (size_t i = 0; i < st.nsegs; i++) {
			if (st.seg[i].active)
				continue;
			dead += st.seg[i].dead_bytes;
			total += st.seg[i].bytes;
		}
		kv_stats_free(&st);
	}
	snprintf(why, sizeof why, "automatic: %llu of %llu sealed bytes are dead",
	         (unsigned long long)dead, (unsigned long long)total);
	struct kv_merge_outcome o;
	uint64_t t = ++j->last_ticket;
	if (start(j, t, why, &o) < 0)
		kv_log_warn("automatic merge: %s", o.error);
}

static int arm_check(struct kv_jobs *j)
{
	struct timeval tv = ms_tv(j->cfg.merge_check_interval_ms);
	return event_add(j->check_ev, &tv);
}

int kv_jobs_create(struct event_base *base, kv_engine *e, const struct kv_jobs_config *cfg,
                   kv_jobs_done_fn done, void *arg, struct kv_jobs **out, char *err, size_t errlen)
{
	struct kv_jobs *j = calloc(1, sizeof *j);
	*out = NULL;
	if (!j) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	j->base = base;
	j->engine = e;
	j->cfg = *cfg;
	j->done = done;
	j->done_arg = arg;
	j->watched_fd = -1;
	j->chld_ev = evsignal_new(base, SIGCHLD, chld_cb, j);
	j->step_ev = evtimer_new(base, step_cb, j);
	j->check_ev = event_new(base, -1, EV_PERSIST, check_cb, j);
	if (!j->chld_ev || !j->step_ev || !j->check_ev || event_add(j->chld_ev, NULL) < 0 ||
	    arm_check(j) < 0) {
		snprintf(err, errlen, "cannot set up the merge events");
		kv_jobs_free(j);
		return -ENOMEM;
	}
	*out = j;
	return 0;
}

void kv_jobs_configure(struct kv_jobs *j, const struct kv_jobs_config *cfg)
{
	unsigned old = j->cfg.merge_check_interval_ms;
	j->cfg = *cfg;
	if (!j->stopped && old != cfg->merge_check_interval_ms)
		arm_check(j);
}

enum kv_merge_answer kv_jobs_merge(struct kv_jobs *j, uint64_t *ticket, struct kv_merge_outcome *o)
{
	memset(o, 0, sizeof *o);
	*ticket = 0;
	if (j->stopped) {
		o->rc = -ESHUTDOWN;
		snprintf(o->error, sizeof o->error, "kvd is shutting down");
		return KV_MERGE_FAILED;
	}
	if (j->running) {
		if (!j->sched)
			j->sched = ++j->last_ticket;
		*ticket = j->sched;
		kv_log_info("merge requested while merge %llu runs: scheduled after it",
		            (unsigned long long)j->cur);
		return KV_MERGE_SCHEDULED;
	}
	uint64_t t = ++j->last_ticket;
	int rc = start(j, t, "requested by a client", o);
	if (rc == 1)
		return KV_MERGE_NOTHING;
	if (rc < 0)
		return KV_MERGE_FAILED;
	*ticket = t;
	return KV_MERGE_STARTED;
}

void kv_jobs_poll(struct kv_jobs *j)
{
	if (!j->stopped)
		after_step(j);
}

void kv_jobs_shutdown(struct kv_jobs *j)
{
	if (!j || j->stopped)
		return;
	j->stopped = 1;
	j->sched = 0;
	sync_fd_event(j); /* stopped: removes it */
	event_del(j->step_ev);
	event_del(j->check_ev);
	event_del(j->chld_ev);
}

void kv_jobs_free(struct kv_jobs *j)
{
	if (!j)
		return;
	if (j->fd_ev)
		event_free(j->fd_ev);
	if (j->chld_ev)
		event_free(j->chld_ev);
	if (j->step_ev)
		event_free(j->step_ev);
	if (j->check_ev)
		event_free(j->check_ev);
	free(j);
}
