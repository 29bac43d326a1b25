/*
 * kv_poll.h — adaptive polling before kvd's loop goes to sleep.
 *
 * Job: when a pass of the event loop leaves nothing to do, decide whether
 * the next pass polls (epoll_wait with a zero timeout) or sleeps until an
 * event comes. Waking a sleeping thread costs a context switch and, when
 * its CPU went idle, an interrupt from another CPU (under a hypervisor, an
 * exit to the host as well). For a client that sends its next request a
 * few tens of microseconds after its reply, that wake-up is a large share
 * of every round trip. Polling instead costs CPU, so the window adapts,
 * as the kernel's haltpoll governor does:
 *   - it grows (from POLL_GROW_START, doubling, up to max) when the loop
 *     slept and a request woke it within max of the previous one's
 *     pass: a longer poll would have caught it;
 *   - it halves, and below POLL_GROW_START drops to 0, when the next
 *     request came later than max after the previous one (or a poll ran
 *     out and the loop then slept longer than max);
 *   - a request caught while polling leaves it as it is.
 * So a loop whose clients are slower than max stops polling after a few
 * requests, and an idle loop polls at most one window after its last
 * request, then sleeps.
 * Polling pays when few clients take turns with kvd: each of their
 * requests would otherwise cost a wake-up. With many clients sending at
 * once, a sleeping loop wakes to a batch of requests, and polling would
 * only break the batches up (more passes, more system calls on both
 * sides, per request). So the loop polls only while at most
 * KV_POLL_MAX_ACTIVE connections brought requests in the current and the
 * previous epoch of KV_POLL_EPOCH_NS.
 *
 * Invariants:
 *  1. 0 <= window <= max; max == 0: never poll (window stays 0).
 *  2. The loop polls only while now - last request pass < window.
 *  3. Pure: no clock, no system call; callers pass monotonic nanoseconds
 *     (never 0 for a real time: 0 means "no request yet").
 *  4. A connection is counted at most once per epoch (kv_poll_seen()).
 *  5. poll_ns counts the time from the first polling pass of an idle
 *     period to the pass that ended it (a request, or the decision to
 *     sleep): the CPU the polling cost, reported in Stats.
 */
#ifndef KV_POLL_H
#define KV_POLL_H

#include <stdint.h>

#define KV_POLL_GROW_START_NS 10000u /* first window after 0: 10 µs (or max) */
#define KV_POLL_EPOCH_NS 1000000u    /* active connections are counted per 1 ms */
#define KV_POLL_MAX_ACTIVE 4u        /* more active connections than this: no polling */

struct kv_poll {
	uint64_t max_ns;     /* configured bound; 0 = never poll */
	uint64_t window_ns;  /* current window, 0..max_ns */
	uint64_t last_work;  /* end of the last pass that executed a request; 0 = none */
	uint64_t poll_start; /* first polling pass of this idle period; 0 = not polling */
	int slept;           /* this idle period included a sleeping pass */
	uint64_t hits;       /* idle periods a request ended while polling */
	uint64_t misses;     /* polls that ran out of window (the loop then slept) */
	uint64_t poll_ns;    /* time spent polling (invariant 5) */
	uint64_t epoch;      /* number of the current epoch, from 1 */
	uint64_t epoch_start;
	unsigned active, active_prev; /* connections seen in this / the previous epoch */
};

/* Start with a window of 0 (the first requests grow it) and max_ns. */
void kv_poll_init(struct kv_poll *p, uint64_t max_ns);

/* A connection brought a request in this pass; *conn_epoch is its own
 * record (0 at first), so that it counts once per epoch. */
static inline void kv_poll_seen(struct kv_poll *p, uint64_t *conn_epoch)
{
	if (*conn_epoch != p->epoch) {
		*conn_epoch = p->epoch;
		p->active++;
	}
}

/* Change the bound (SIGHUP); the window is clamped to it. */
void kv_poll_set_max(struct kv_poll *p, uint64_t max_ns);

/* The loop has nothing left to do and would sleep: 1 = poll once more
 * (a non-blocking pass), 0 = sleep. */
int kv_poll_idle(struct kv_poll *p, uint64_t now);

/* After every pass (polling, sleeping or busy): worked = it executed at
 * least one request. Adapts the window when a request ends an idle
 * period, and starts a new epoch when the current one is over. */
void kv_poll_after(struct kv_poll *p, uint64_t now, int worked);

#endif /* KV_POLL_H */
