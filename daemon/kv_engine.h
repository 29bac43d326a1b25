/*
 * kv_engine.h — the kvd storage engine (Bitcask model), the only header a
 * program needs to embed it. No sockets, no libevent, no protobuf.
 *
 * A data directory holds numbered append-only segment files (one active,
 * the rest sealed and immutable), a hint file beside every sealed segment,
 * and a LOCK file. An in-memory keydir maps every live key to the location
 * of its newest record. See daemon/FORMAT.md for every byte on disk.
 *
 * Threading: an engine handle is used by one thread at a time; only
 * kv_engine_sync_run() may run in another thread meanwhile.
 *
 * Durability: put/delete/batch append to an in-memory tail buffer of the
 * active segment. kv_engine_flush() hands that buffer to the kernel with
 * one write(); kv_engine_sync() flushes and fdatasync()s. A caller that
 * acknowledges writes decides when to call which (group commit: execute
 * many requests, then one kv_engine_sync()). kv_engine_close() syncs.
 * A failed write or sync makes the engine read-only until it is reopened
 * (KV_EREADONLY; kv_engine_readonly_reason() says why): it never retries
 * an fsync and pretends.
 *
 * Return codes: 0 or a positive count on success, negative on failure:
 * either -errno or one of the KV_E* codes below (disjoint from errno).
 * kv_strerror() explains both.
 */
#ifndef KV_ENGINE_H
#define KV_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#define KV_VERSION_STRING "0.1.0"

#define KV_MAX_KEY (64u * 1024u)          /* 1 B .. 64 KiB inclusive */
#define KV_MAX_VALUE (64u * 1024u * 1024u) /* 0 B .. 64 MiB inclusive */

enum {
	KV_ENOTFOUND = -10001, /* key absent or expired */
	KV_ETOOBIG = -10002,   /* key or value above its limit; nothing written */
	KV_EBADKEY = -10003,   /* empty key */
	KV_ECORRUPT = -10004,  /* a record or file failed its checksum */
	KV_ELOCKED = -10005,   /* the data directory is locked by another process */
	KV_EVERSION = -10006,  /* a file has an unknown format version */
	KV_EREADONLY = -10007, /* an earlier I/O error made the engine read-only */
	KV_EBUSY = -10008,     /* a merge is already running */
};

/* Static string for rc (a KV_E* code or -errno). Never NULL. */
const char *kv_strerror(int rc);

enum kv_log_level { KV_LOG_ERROR = 0, KV_LOG_WARN = 1, KV_LOG_INFO = 2, KV_LOG_DEBUG = 3 };

struct kv_options {
	uint64_t max_segment_size;   /* rotate above this; default 256 MiB */
	int repair;                  /* 1: drop corrupt records of sealed segments
	                                (logged) instead of refusing to open */
	unsigned max_mapped_segments; /* cache of mmap'ed sealed segments; default 256 */
	int hint_on_close;           /* 1: a clean close also writes the hint file
	                                of the active segment, so the next open
	                                loads hints instead of scanning it (kvd);
	                                default 0: the next open scans it and cuts
	                                a damaged tail */
	/* Clock in unix seconds for TTLs; NULL = time(). */
	uint64_t (*clock)(void *arg);
	void *clock_arg;
	/* Log sink; NULL = silent. msg is borrowed for the call only. */
	void (*log)(void *arg, int level, const char *msg);
	void *log_arg;
};

/* Fill o with the defaults. */
void kv_options_init(struct kv_options *o);

typedef struct kv_engine kv_engine;

/*
 * Open (creating if needed) the data directory dir. Takes the LOCK, loads
 * hint files or scans segments, cuts a torn tail of the newest segment,
 * removes leftover temp files, and opens a new active segment (it never
 * appends to a file that predates this open). On failure returns < 0 and,
 * when err is not NULL, writes a one-line reason (with file and offset
 * where that applies) into err[errlen]. *out is owned by the caller and
 * released with kv_engine_close().
 */
int kv_engine_open(const char *dir, const struct kv_options *opt, kv_engine **out,
		   char *err, size_t errlen);

/* Sync, seal nothing, release the lock and free e. Returns the status of
 * the final sync (e is freed either way). e may be NULL. */
int kv_engine_close(kv_engine *e);

/* A growable byte buffer owned by the caller. The engine may realloc data;
 * the caller frees it with kv_buf_free(). Zero-initialise before first use. */
struct kv_buf {
	char *data;
	size_t len;
	size_t cap;
};
void kv_buf_free(struct kv_buf *b);

/*
 * Copy the value of key into out (out->len set). expires_at, if not NULL,
 * receives the absolute expiry in unix seconds (0 = none).
 * Returns 0, KV_ENOTFOUND, KV_EBADKEY, KV_ETOOBIG, KV_ECORRUPT or -errno.
 */
int kv_engine_get(kv_engine *e, const void *key, size_t klen, struct kv_buf *out,
		  uint64_t *expires_at);

/*
 * A hint that key will be looked up soon (a Get, Put or Delete further down
 * a pipelined batch): start loading what the lookup touches, so the misses
 * of many keys overlap instead of following one another. Three steps, each
 * expecting the previous one done for the same key a little earlier:
 * stage 0 the keydir bucket, 1 the keydir entry, 2 (reads) the record. Only
 * reads memory: changes nothing, never fails, maps nothing.
 */
void kv_engine_prefetch(kv_engine *e, const void *key, size_t klen, int stage);

/* ttl_seconds 0 = no expiry. Buffers are borrowed for the call only. */
int kv_engine_put(kv_engine *e, const void *key, size_t klen, const void *val, size_t vlen,
		  uint32_t ttl_seconds);

/* Returns 0, or KV_ENOTFOUND (nothing written) when key is absent. */
int kv_engine_delete(kv_engine *e, const void *key, size_t klen);

enum kv_op_type { KV_OP_PUT = 0, KV_OP_DELETE = 1 };
struct kv_batch_op {
	enum kv_op_type type;
	const void *key; /* borrowed for the call */
	size_t klen;
	const void *val; /* PUT only; borrowed */
	size_t vlen;
	uint32_t ttl_seconds;
};
/* Apply ops atomically: after any crash either all are visible or none.
 * Deleting an absent key is not an error. Returns the number of ops
 * applied, or < 0 with nothing applied. */
int kv_engine_batch(kv_engine *e, const struct kv_batch_op *ops, size_t n);

/* write() the tail buffer to the active segment. */
int kv_engine_flush(kv_engine *e);
/* flush, then fdatasync the active segment (and the directory if a new
 * segment was created since the last sync). */
int kv_engine_sync(kv_engine *e);
/* Bytes appended since the last successful sync (0: nothing to sync). */
uint64_t kv_engine_unsynced(const kv_engine *e);

/*
 * The same sync in three steps, so that the fdatasync can run in another
 * thread while the engine's thread goes on executing requests (kvd's
 * group commit, kv_syncer.h):
 *   kv_engine_sync_begin()  engine's thread: flush, then describe in *j
 *                           what must reach the disk for every write made
 *                           so far. Returns 1 (a job), 0 (nothing is
 *                           unsynced) or a negative code.
 *   kv_engine_sync_run()    any one other thread: fdatasync j's segment
 *                           (and fsync the directory when j->dir), through
 *                           a descriptor cached in *sf, which that thread
 *                           owns (kv_engine_sync_fd_close). Touches no
 *                           engine state. 0 or a negative code.
 *   kv_engine_sync_end()    engine's thread: rc is run's result. A failure
 *                           makes the engine read-only (never retried) and
 *                           is returned; -ENOENT for a segment that is no
 *                           longer the active one is no failure (it was
 *                           fdatasync'ed when sealed, then merged away).
 * A run covers every write made before its job began. Rotations, other
 * syncs and writes may happen while a job runs. *j is a plain value owned
 * by the caller; j->dirpath is borrowed from e (valid until close).
 */
struct kv_sync_job {
	uint32_t seg;        /* id of the active segment at begin */
	int dir;             /* fsync the directory as well */
	const char *dirpath; /* the data directory */
};
struct kv_sync_fd {
	uint32_t seg;
	int fd; /* -1: none */
};
#define KV_SYNC_FD_INIT { 0, -1 }
int kv_engine_sync_begin(kv_engine *e, struct kv_sync_job *j);
int kv_engine_sync_run(struct kv_sync_fd *sf, const struct kv_sync_job *j);
void kv_engine_sync_fd_close(struct kv_sync_fd *sf);
int kv_engine_sync_end(kv_engine *e, const struct kv_sync_job *j, int rc);

/* Non-zero when an I/O error made the engine read-only; reason is a
 * static-lifetime string owned by e (valid until close). */
int kv_engine_readonly(const kv_engine *e);
const char *kv_engine_readonly_reason(const kv_engine *e);

/*
 * Iteration over live keys starting with prefix (plen 0 = all keys).
 * kv_iter_open() takes a snapshot of the matching keys and their record
 * locations (one pass over the keydir), so every live key is returned
 * exactly once with its value as of the open, whatever writes follow.
 * Segments the snapshot uses are not deleted before kv_iter_close().
 * Expired keys are skipped. Order is unspecified.
 */
typedef struct kv_iter kv_iter;
int kv_iter_open(kv_engine *e, const void *prefix, size_t plen, kv_iter **out);
/* Next item: *key and *klen point into the iterator (valid until the next call
 * or close); the value is copied into val unless val is NULL (keys only).
 * Returns 1 with an item, 0 at the end, < 0 on error. */
int kv_iter_next(kv_iter *it, const void **key, size_t *klen, struct kv_buf *val);
void kv_iter_close(kv_iter *it);

/* Callback form: cb returns non-zero to stop (that value is returned). */
int kv_engine_foreach(kv_engine *e, const void *prefix, size_t plen,
		      int (*cb)(void *arg, const void *key, size_t klen, const void *val,
				size_t vlen),
		      void *arg);

struct kv_seg_stats {
	uint32_t id;
	uint64_t bytes;      /* file size including header and buffered tail */
	uint64_t live_bytes; /* records the keydir points at */
	uint64_t dead_bytes; /* bytes - header - live_bytes */
	int active;
	int has_hint;
};

/* Merge (compaction) state; strings are static. See kv_merge.c. */
struct kv_merge_info {
	const char *state;        /* "idle", "running", "deleting" */
	int pid;                  /* the worker while running, else 0 */
	uint64_t merges;          /* completed merges since open */
	uint64_t failures;
	uint64_t last_ms;         /* duration of the last completed merge */
	uint64_t last_reclaimed;  /* bytes freed by it */
	uint64_t total_reclaimed;
	uint32_t last_inputs, last_outputs;
	char last_error[200];     /* why the last merge failed, "" if it did not */
};

struct kv_stats {
	uint64_t keys;
	uint64_t key_bytes;    /* sum of key lengths */
	uint64_t keydir_bytes; /* measured: slot arrays + entry arena in use */
	double keydir_bytes_per_key;
	uint64_t segments;
	uint64_t disk_bytes;
	uint64_t live_bytes;
	uint64_t dead_bytes;
	uint64_t seq; /* last sequence number assigned */
	uint64_t syncs;
	uint64_t puts, deletes, gets, batches;
	int read_only;
	struct kv_merge_info merge;
	struct kv_seg_stats *seg; /* nsegs entries, ascending id; owned by the
				     stats, freed by kv_stats_free() */
	size_t nsegs;
};
int kv_engine_stats(kv_engine *e, struct kv_stats *st);
void kv_stats_free(struct kv_stats *st);

/*
 * Merge (compaction) in a forked worker; see the state diagram in
 * daemon/kv_merge.c. kv_engine_merge_start() seals the active segment,
 * opens a new one above the ids reserved for the outputs, freezes the
 * keydir's resizing and forks. In the child, child_init(arg) runs first
 * (the caller closes its own descriptors there); then the engine closes
 * every fd but the report pipe and resets signal handlers.
 * Returns 0 (started), 1 (nothing to merge: no dead bytes), KV_EBUSY,
 * KV_EREADONLY or -errno.
 */
int kv_engine_merge_start(kv_engine *e, void (*child_init)(void *arg), void *arg);

/* How one merge runs. Zero-initialised: no rate limit, no child_init
 * (what kv_engine_merge_start() does). */
struct kv_merge_params {
	/* Bytes per second the worker may read from the input segments (the
	 * records it scans or copies, and their hint files); it sleeps when
	 * ahead of that pace. Its writes are bounded too: it writes at most
	 * what it read. 0 = unlimited. */
	uint64_t rate_limit;
	/* Runs first in the worker (the child process), with child_arg; see
	 * kv_engine_merge_start(). NULL = nothing. child_arg is borrowed. */
	void (*child_init)(void *arg);
	void *child_arg;
	/* The worker's CPU priority. KV_MERGE_CPU_LOW (0): nice 10, so it
	 * competes with clients at a tenth of their weight. KV_MERGE_CPU_IDLE:
	 * SCHED_IDLE, so it runs only on CPU time nothing else wants and every
	 * client wake-up preempts it; under a load that keeps every core
	 * busy it can take much longer (it still gets a sliver). Both use the
	 * lowest best-effort I/O priority. */
	int cpu;
};
enum { KV_MERGE_CPU_LOW = 0, KV_MERGE_CPU_IDLE = 1 };

/* kv_engine_merge_start() with parameters; p is borrowed for the call
 * (the worker keeps its own copy). NULL p = all zero. Same returns: 0
 * (started), 1 (nothing to merge), KV_EBUSY, KV_EREADONLY or -errno. */
int kv_engine_merge_start_with(kv_engine *e, const struct kv_merge_params *p);
/* The report pipe to watch for readability while a merge runs, else -1. */
int kv_engine_merge_fd(const kv_engine *e);
/* Read reports, apply at most budget of them (location compare-and-swap)
 * and for at most about 0.2 ms, reap the worker (waitpid WNOHANG) and
 * finish: delete the inputs once all is applied and no iterator is open.
 * Returns 1 while a merge is in progress, 0 when idle (it just completed,
 * or none ran), < 0 once when a merge failed (kv_engine_merge_info() says
 * why). Never blocks. */
int kv_engine_merge_step(kv_engine *e, unsigned budget);
/* 1 when reports the worker sent wait to be applied: the caller should
 * step again soon (after serving its clients), not wait for the pipe. */
int kv_engine_merge_backlog(const kv_engine *e);
void kv_engine_merge_info(const kv_engine *e, struct kv_merge_info *mi);
/* Non-zero when the sealed segments hold at least min_dead_ratio dead
 * bytes (0..1) or at least min_dead_bytes dead bytes. */
int kv_engine_merge_wanted(const kv_engine *e, double min_dead_ratio, uint64_t min_dead_bytes);

/* Bounded background work (incremental keydir rehash, hint files, merge
 * steps, warming the data mappings up: see kv_engine.c); call from a timer.
 * Returns non-zero while more work remains. */
int kv_engine_tick(kv_engine *e);

/* Removed segment and hint files (.dseg/.dhint) that the reaper thread
 * has not finished freeing yet: queued plus the one in hand. Removal needs
 * no call: a merge or an open queues them, kv_engine_close() stops the
 * thread and leaves the rest for the next open. */
int kv_engine_reap_pending(kv_engine *e);

#endif /* KV_ENGINE_H */
