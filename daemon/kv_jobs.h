/*
 * kv_jobs.h — kvd's background jobs in the event loop: when to merge
 * (client requests, the automatic trigger, the "scheduled" follow-up, the
 * back-off after failures) and driving a running merge with bounded
 * kv_engine_merge_step() slices so that no client ever waits on it.
 *
 * Owns: its libevent events (merge pipe, SIGCHLD, step and check timers).
 * Borrows: the event base and the engine, both of which must outlive it.
 * Knows nothing of connections: the end of every merge a request was told
 * about ("ticket") is reported through the done callback, and the server
 * decides who was waiting for it.
 *
 * The engine's merge state machine is in kv_merge.c; this module only
 * decides when to start one, at what pace its worker may read (the rate
 * limit, passed at each start), and feeds it time. See kv_jobs.c for its
 * own small state diagram.
 */
#ifndef KV_JOBS_H
#define KV_JOBS_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "kv_engine.h"

/* The default merge rate limit in MiB/s (kvd's merge-rate-limit), meant
 * to keep client p99 during a merge within 2x idle on a 2-core machine
 * (make bench-merge measures it). Lower keeps client latency closer to
 * idle, and makes a merge take longer (about live data / limit). kvd.8,
 * kvd.conf and README.md quote the value: change them together. */
#define KV_MERGE_RATE_LIMIT_DEFAULT_MIB 48

struct kv_jobs_config {
	int merge_auto;                   /* 1: the check timer may start merges */
	double merge_min_dead_ratio;      /* 0..1 of the sealed segments' bytes */
	uint64_t merge_min_dead_bytes;    /* or this many dead bytes */
	unsigned merge_check_interval_ms; /* >= 1 */
	unsigned merge_rate_limit_mib;    /* MiB/s a merge worker may read from its
	                                     inputs; 0 = unlimited. A change
	                                     applies from the next merge. */
	int merge_cpu;                    /* KV_MERGE_CPU_IDLE or _LOW (kv_engine.h);
	                                     from the next merge */
};

/* Defaults: auto yes, ratio 0.4, 128 MiB, every 10 s, rate limit
 * KV_MERGE_RATE_LIMIT_DEFAULT_MIB, CPU priority KV_MERGE_CPU_IDLE. */
void kv_jobs_config_init(struct kv_jobs_config *c);

/* How one merge (one ticket) ended. */
struct kv_merge_outcome {
	int rc;                   /* 0 done, 1 nothing to merge, < 0 failed:
	                             KV_EREADONLY, -ESHUTDOWN (kvd stops),
	                             -EIO (the merge failed), -errno */
	uint64_t reclaimed_bytes; /* rc == 0 */
	uint64_t duration_ms;     /* rc == 0 */
	char error[240];          /* rc < 0: why, one line */
};

/* Called once per ticket when that merge has ended (or, for a scheduled
 * one, could not start). o is borrowed for the call. The callback may call
 * kv_jobs_merge() (e.g. a pipelined request that was waiting). */
typedef void (*kv_jobs_done_fn)(void *arg, uint64_t ticket, const struct kv_merge_outcome *o);

struct kv_jobs;

int kv_jobs_create(struct event_base *base, kv_engine *e, const struct kv_jobs_config *cfg,
                   kv_jobs_done_fn done, void *arg, struct kv_jobs **out, char *err, size_t errlen);

/* Take new trigger settings (SIGHUP). */
void kv_jobs_configure(struct kv_jobs *j, const struct kv_jobs_config *cfg);

enum kv_merge_answer {
	KV_MERGE_STARTED,   /* *ticket = the merge that just started */
	KV_MERGE_SCHEDULED, /* one runs; *ticket = the one that runs after it */
	KV_MERGE_NOTHING,   /* no dead bytes: nothing started */
	KV_MERGE_FAILED,    /* could not start: o->rc, o->error */
};

/* A client asks for a merge. Never calls the done callback itself. */
enum kv_merge_answer kv_jobs_merge(struct kv_jobs *j, uint64_t *ticket, struct kv_merge_outcome *o);

/* Something else stepped the engine's merge (kv_engine_tick): notice a
 * merge that ended and a report pipe the engine closed. Call it right
 * after every such call, before the loop runs again. */
void kv_jobs_poll(struct kv_jobs *j);

/* No new merges from now on (shutdown); every event is removed. A merge
 * still running is abandoned by kv_engine_close(). */
void kv_jobs_shutdown(struct kv_jobs *j);

/* j may be NULL. */
void kv_jobs_free(struct kv_jobs *j);

#endif /* KV_JOBS_H */
