/*
 * kv_keydir.h — the in-memory index: key -> location of the newest record.
 *
 * Memory budget (DESIGN-NOTES "Keydir"): at most ~32 B per key plus the key.
 * An entry is 18 B + key rounded up to 4 B, packed in 4 MiB arena blocks
 * (no malloc header per key) and addressed by a 32-bit reference. The hash
 * table is an array of 64-byte buckets of 12 slots (12 refs + 12 one-byte
 * hash tags), probed linearly bucket by bucket and kept below 7/8 full:
 * 5 B per slot, 6-12 B per key depending on where the load sits.
 *
 * Invariants:
 *  1. A key is in exactly one table (during a resize: old or new).
 *  2. A probe for a key stops at the first bucket holding an EMPTY slot;
 *     deletion writes EMPTY only into a bucket that already has an EMPTY
 *     slot (so no probe chain ever crossed it), DELETED otherwise.
 *  3. A resize moves a bounded number of buckets per operation (no stall);
 *     migrated slots become DELETED in the old table, keeping its chains.
 *  4. While frozen (a forked merge child is alive) no resize starts and a
 *     running one pauses, so the parent does not copy-on-write the table;
 *     only a table that is truly full (> 31/32) grows anyway.
 *  5. Freed entries go to an exact-size free list and are reused by the
 *     next key of the same size; other waste is counted (garbage_bytes).
 *
 * The sequence number is not kept in memory: "newer" is decided by
 * (segment id, offset), and sequences stay on disk for recovery checks.
 */
#ifndef KV_KEYDIR_H
#define KV_KEYDIR_H

#include <stddef.h>
#include <stdint.h>

struct kv_loc {
	uint32_t seg;
	uint32_t off;
	uint32_t size;   /* whole record size */
	uint32_t expiry; /* absolute unix seconds, 0 = none */
};

typedef struct kv_keydir kv_keydir;

/* New empty keydir, or NULL on ENOMEM. Free with kv_keydir_free(). */
kv_keydir *kv_keydir_new(void);
void kv_keydir_free(kv_keydir *kd);

/* 1 and *out filled when found, 0 when absent. */
int kv_keydir_get(kv_keydir *kd, const void *key, size_t klen, struct kv_loc *out);
/* Insert or replace. Returns 1 (replaced; *old filled when old != NULL),
 * 0 (inserted) or -ENOMEM. */
int kv_keydir_put(kv_keydir *kd, const void *key, size_t klen, const struct kv_loc *loc,
		  struct kv_loc *old);
/* Remove. 1 (removed; *old filled when not NULL) or 0 (absent). */
int kv_keydir_del(kv_keydir *kd, const void *key, size_t klen, struct kv_loc *old);
/* Merge swap: move the entry to *to only if it still points at
 * (from->seg, from->off). Returns 1 when moved, 0 otherwise. */
int kv_keydir_cas(kv_keydir *kd, const void *key, size_t klen, const struct kv_loc *from,
		  const struct kv_loc *to);

/* Remove the entry only if it still points at (at->seg, at->off).
 * Returns 1 when removed, 0 otherwise. */
int kv_keydir_del_at(kv_keydir *kd, const void *key, size_t klen, const struct kv_loc *at);

/* Visit every entry; cb must not modify the keydir. A non-zero return of
 * cb stops the walk and is returned. key is borrowed for the call. */
int kv_keydir_foreach(kv_keydir *kd,
		      int (*cb)(void *arg, const uint8_t *key, size_t klen, const struct kv_loc *loc),
		      void *arg);

void kv_keydir_freeze(kv_keydir *kd, int frozen);
/* Size an empty keydir for about n keys at once (recovery knows the count
 * from hint files), so loading does not resize. 0 or -ENOMEM; a keydir
 * that is not empty is left as it is. */
int kv_keydir_reserve(kv_keydir *kd, size_t n);
/* While on, memory the keydir maps (the table kv_keydir_reserve() sizes,
 * new entry blocks) is pre-faulted in one call (MAP_POPULATE) instead of a
 * page fault per 4 KiB: for bulk loads at open, which fill it at once.
 * Off (the default) while serving, where it would stall one request. */
void kv_keydir_populate(kv_keydir *kd, int on);
/* Move up to n buckets of a running resize. Returns 1 while resizing. */
int kv_keydir_step(kv_keydir *kd, unsigned n);

struct kv_keydir_stats {
	uint64_t keys;
	uint64_t key_bytes;
	uint64_t table_bytes;   /* bucket arrays */
	uint64_t arena_bytes;   /* arena bytes handed out (entries + free + garbage) */
	uint64_t garbage_bytes; /* arena bytes on free lists or wasted */
	uint64_t bytes;         /* table_bytes + arena_bytes */
	uint64_t buckets;
	int resizing;
};
void kv_keydir_stats(const kv_keydir *kd, struct kv_keydir_stats *st);

/* Start loading the cache line where key would be looked up (bulk loads
 * prefetch the next key while inserting the current one). */
void kv_keydir_prefetch(const kv_keydir *kd, const void *key, size_t klen);
/* The next step: read key's home bucket (prefetched before) and start
 * loading the entries whose hash tag matches. Reads only. */
void kv_keydir_prefetch_entry(const kv_keydir *kd, const void *key, size_t klen);

/* The hash used by the keydir (seeded per process). */
uint64_t kv_hash(const void *key, size_t klen);

#endif
