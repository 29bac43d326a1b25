/*
 * kv_syncer.h — kvd's sync thread: runs the fdatasyncs of group commit
 * (kv_engine_sync_run) back to back while the event loop goes on reading
 * and executing the requests of the next groups.
 *
 * The loop numbers its commits 1, 2, 3 ...; after flushing commit k it
 * hands over k with its job (kv_syncer_submit). The thread runs the
 * newest job handed over, and as soon as one run ends starts the next if
 * a newer commit is waiting: a run begun after commit k was flushed makes
 * every commit <= k durable. The loop learns through an eventfd.
 *
 * Owns: the thread, its mutex and condition variable, the eventfd, and the
 * thread's descriptor of the active segment (struct kv_sync_fd).
 * Threads: every function here is called from the event loop's thread;
 * the thread itself only calls kv_engine_sync_run().
 *
 * Invariants:
 *  1. Commits handed over increase. Handing over k while k-1 still waits
 *     (not started) replaces it: k's run covers k-1 (the directory flag of
 *     the replaced job is kept).
 *  2. `done` only grows, and only after the run covering it returned.
 *  3. A failed run is reported (once, with its job) by the next collect,
 *     together with `done`. The loop must treat every commit <= done, and
 *     every later one, as failed (kv_engine_sync_end makes the engine
 *     read-only, so nothing more is handed over): a run that follows a
 *     failed fdatasync may succeed without the lost pages reaching the
 *     disk, and its success is never used (never retry and pretend).
 */
#ifndef KV_SYNCER_H
#define KV_SYNCER_H

#include <stdint.h>

#include "kv_engine.h"

struct kv_syncer;

/* Start the thread. 0 or -errno; *out is owned by the caller
 * (kv_syncer_stop). */
int kv_syncer_start(struct kv_syncer **out);

/* The eventfd: readable when a run has finished since the last collect. */
int kv_syncer_fd(const struct kv_syncer *sy);

/* Hand over commit `commit` (flushed) with its job j (copied). Inv. 1. */
void kv_syncer_submit(struct kv_syncer *sy, uint64_t commit, const struct kv_sync_job *j);

/* Never blocks. *done: the highest commit made durable or failed (inv. 2);
 * *runs: fdatasyncs finished since the last call and *ns the time they
 * took; *rc: 0 or the failure (inv. 3) with *failed_job the job whose run
 * failed; all reset. Resets the eventfd. */
void kv_syncer_collect(struct kv_syncer *sy, uint64_t *done, uint64_t *runs, uint64_t *ns,
		       int *rc, struct kv_sync_job *failed_job);

/* Block until every commit handed over has finished. */
void kv_syncer_wait(struct kv_syncer *sy);

/* Finish what was handed over, stop and join the thread, close its
 * descriptor, free sy. sy may be NULL. */
void kv_syncer_stop(struct kv_syncer *sy);

#endif /* KV_SYNCER_H */
