/*
 * kv_engine_int.h — the engine's internals shared by kv_engine.c and
 * kv_merge.c. Not a public header: programs use kv_engine.h only.
 */
#ifndef KV_ENGINE_INT_H
#define KV_ENGINE_INT_H

#include "kv_engine.h"
#include "kv_keydir.h"
#include "kv_seg.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct kv_merge;

struct seg {
	uint32_t id;
	int active;
	int has_hint;
	int hint_wanted; /* sealed in this process: a hint job will write its hint */
	uint64_t size; /* bytes including header (and tail buffer when active) */
	uint64_t live;
	uint8_t *map;  /* sealed: whole file mapped read-only, or NULL */
	size_t maplen;
	size_t mapres; /* bytes the mapping reserves (munmap length) when more
			  than maplen: the active mapping kept at sealing */
	uint64_t lru;
	size_t warmed; /* bytes of map made resident by warm_step() */
};

struct kv_engine {
	char *dir;
	struct kv_options opt;
	int lock_fd;
	kv_keydir *kd;

	struct seg **segs; /* ascending id */
	size_t nsegs, capsegs;
	struct seg *active;
	int active_fd;
	uint8_t *amap; /* the active segment mapped read-only, amaplen bytes
			  reserved; only bytes below wbuf_off are ever read */
	size_t amaplen;

	uint8_t *wbuf; /* tail buffer of the active segment (invariant 2) */
	size_t wlen, wcap;
	uint64_t wbuf_off;
	uint64_t unsynced;
	int dir_dirty; /* a file was created since the last directory fsync */

	uint64_t seq;
	unsigned nmapped;
	uint64_t lru_clock;
	unsigned iters; /* open iterators: no segment is deleted meanwhile */

	int failed;
	char failed_reason[256];

	uint64_t n_syncs, n_puts, n_dels, n_gets, n_batches;

	uint64_t range_synced; /* active segment: writeback started up to here */
	uint64_t alloc_end;    /* active segment: file size, zeros past wbuf_off
				  (invariant 7 of kv_engine.c) */
	uint64_t awarmed;      /* active segment: amap made resident up to here */

	/* the hint job: builds the hint file of a freshly sealed segment in
	 * slices from kv_engine_tick(), so sealing never stalls clients */
	struct seg *hseg;
	uint8_t *hmap;
	size_t hlen;
	uint64_t hoff;
	struct kv_hint_writer hw;

	/* files of removed segments, renamed to .dseg/.dhint (invariant 8 of
	 * kv_engine.c), queued for the reaper thread that frees their blocks
	 * and unlinks them, mappings nothing refers to any more, that it
	 * unmaps, and ranges of data mappings that it warms up (warm_step);
	 * the queue, reap_stop and nwarm are under reap_mu */
	pthread_mutex_t reap_mu;
	pthread_cond_t reap_cv;
	pthread_cond_t warm_cv; /* the reaper finished a warm-up range */
	pthread_t reaper;
	int reaper_on, reap_stop, reap_busy;
	unsigned nwarm; /* warm-up ranges queued or in hand */
	struct reap_item *reap; /* kv_engine.c */
	size_t nreap, capreap;
	/* renamed, but the directory not fsynced since: not yet the reaper's
	 * (kv_eng_reap_release()); loop thread only */
	char **retired;
	size_t nretired, capretired;

	struct kv_merge *merge; /* the running merge job, or NULL (kv_merge.c) */
	struct kv_merge_info minfo;
};


/* The data directory was just fsynced: the files renamed to .dseg/.dhint
 * before it may now be freed (their renames are durable first). */
void kv_eng_reap_release(kv_engine *e);

__attribute__((format(printf, 3, 4))) void kv_eng_log(kv_engine *e, int level, const char *fmt,
							...);
uint64_t kv_eng_now(const kv_engine *e);
/* Turn the engine read-only (invariant 5 of kv_engine.c); logs once. */
void kv_eng_fail(kv_engine *e, int rc, const char *what);
struct seg *kv_eng_seg_find(const kv_engine *e, uint32_t id);
int kv_eng_seg_add(kv_engine *e, struct seg *s);
int kv_eng_seg_map(kv_engine *e, struct seg *s);
void kv_eng_seg_unmap(kv_engine *e, struct seg *s);
/* Remove segment s (its files and its table entry); frees s. */
void kv_eng_seg_remove(kv_engine *e, struct seg *s);
/* Seal the active segment and open next_id as the new active one. */
int kv_eng_rotate(kv_engine *e, uint32_t next_id);
void kv_eng_account_replace(kv_engine *e, const struct kv_loc *old);
/* Kill and reap a running merge child (close, fork failure paths). */
void kv_merge_abandon(kv_engine *e);

#endif
