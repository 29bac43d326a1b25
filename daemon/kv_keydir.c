/*
 * kv_keydir.c — the keydir hash table and its entry arena. See kv_keydir.h
 * for the layout and the numbered invariants referred to below.
 */
#include "kv_keydir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 12
#define REF_EMPTY 0u
#define REF_DELETED 1u

#define BLOCK_SHIFT 20u                     /* units per arena block: 2^20 */
#define BLOCK_UNITS (1u << BLOCK_SHIFT)     /* 4 MiB of 4-byte units */
#define BLOCK_BYTES ((size_t)BLOCK_UNITS * 4u)
#define MAX_BLOCKS 4096u                    /* 16 GiB of entries */
#define ENT_HDR 18u                         /* seg, off, size, expiry, klen-1 */
#define MAX_UNITS ((ENT_HDR + 65536u + 3u) / 4u)

struct bucket {
	uint32_t ref[SLOTS];
	uint8_t tag[SLOTS];
	uint32_t pad;
};
_Static_assert(sizeof(struct bucket) == 64, "a bucket is one cache line");

struct table {
	struct bucket *b;
	size_t nb; /* power of two */
	size_t used;
	size_t tombs;
};

struct kv_keydir {
	struct table t[2]; /* t[1] is the new table while resizing */
	int resizing;
	size_t rehash_idx; /* next bucket of t[0] to move */
	int frozen;
	int populate; /* kv_keydir_populate(): map new memory pre-faulted */
	uint8_t *blocks[MAX_BLOCKS];
	uint32_t nblocks;
	uint32_t bump; /* next free unit in the last block */
	uint32_t *freelist; /* MAX_UNITS + 1 heads, by size in units */
	uint64_t keys, key_bytes, arena_units, garbage_units;
	/* the table a finished resize left behind, unmapped a slice at a time
	 * (one munmap of a large populated table stalls for milliseconds) */
	uint8_t *old_mem;
	size_t old_len;
};

#define RELEASE_SLICE (512u << 10) /* bytes of an old table unmapped per operation */

static void release_old(kv_keydir *kd, size_t max)
{
	while (kd->old_len && max) {
		size_t n = kd->old_len < RELEASE_SLICE ? kd->old_len : RELEASE_SLICE;
		munmap(kd->old_mem + kd->old_len - n, n);
		kd->old_len -= n;
		max = max > n ? max - n : 0;
	}
}

/* --- hashing ------------------------------------------------------------------ */

static uint64_t hash_seed;

static inline uint64_t mix(uint64_t a, uint64_t b)
{
	__uint128_t r = (__uint128_t)a * b;
	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static inline uint64_t rd_tail(const uint8_t *p, size_t n)
{
	uint64_t v = 0;
	memcpy(&v, p, n);
	return v;
}

uint64_t kv_hash(const void *key, size_t klen)
{
	const uint8_t *p = key;
	size_t n = klen;
	uint64_t h = hash_seed ^ (0x9e3779b97f4a7c15ull * (klen + 1));
	while (n > 16) {
		h = mix(rd64(p) ^ 0xa0761d6478bd642full, rd64(p + 8) ^ h);
		p += 16;
		n -= 16;
	}
	uint64_t a, b;
	if (n > 8) {
		a = rd64(p);
		b = rd_tail(p + 8, n - 8);
	} else {
		a = rd_tail(p, n);
		b = 0;
	}
	return mix(a ^ 0xe7037ed1a0b428dbull ^ h, b ^ 0x8ebc6af09c88c6e3ull ^ klen);
}

static void seed_once(void)
{
	if (hash_seed)
		return;
	uint64_t s = 0;
	if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s)
		s = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	hash_seed = s | 1;
}

/* --- arena ----------------------------------------------------------------------- */

static inline uint8_t *ent_ptr(const kv_keydir *kd, uint32_t ref)
{
	return kd->blocks[ref >> BLOCK_SHIFT] + (size_t)(ref & (BLOCK_UNITS - 1)) * 4u;
}

static inline uint32_t ent_klen(const uint8_t *e)
{
	uint16_t k;
	memcpy(&k, e + 16, 2);
	return (uint32_t)k + 1u;
}

static inline uint32_t units_for(size_t klen)
{
	return (uint32_t)((ENT_HDR + klen + 3u) / 4u);
}

static inline void ent_get_loc(const uint8_t *e, struct kv_loc *loc)
{
	memcpy(loc, e, sizeof *loc); /* seg, off, size, expiry: the first 16 bytes */
}

static inline void ent_set_loc(uint8_t *e, const struct kv_loc *loc)
{
	memcpy(e, loc, sizeof *loc);
}

/* Returns a reference, or 0 on ENOMEM. */
static uint32_t arena_alloc(kv_keydir *kd, uint32_t units)
{
	uint32_t ref = kd->freelist[units];
	if (ref) {
		memcpy(&kd->freelist[units], ent_ptr(kd, ref), 4);
		kd->garbage_units -= units;
		return ref;
	}
	if (kd->nblocks == 0 || kd->bump + units > BLOCK_UNITS) {
		if (kd->nblocks == MAX_BLOCKS)
			return 0;
		void *blk = mmap(NULL, BLOCK_BYTES, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | (kd->populate ? MAP_POPULATE : 0),
				 -1, 0);
		if (blk == MAP_FAILED)
			return 0;
		if (kd->nblocks) { /* the tail of the previous block is wasted */
			kd->garbage_units += BLOCK_UNITS - kd->bump;
		}
		kd->blocks[kd->nblocks++] = blk;
		/* Units 0 and 1 of block 0 would collide with REF_EMPTY/DELETED. */
		kd->bump = kd->nblocks == 1 ? 2 : 0;
		kd->arena_units += kd->bump;
		kd->garbage_units += kd->bump;
	}
	ref = ((kd->nblocks - 1) << BLOCK_SHIFT) | kd->bump;
	kd->bump += units;
	kd->arena_units += units;
	return ref;
}

static void arena_free(kv_keydir *kd, uint32_t ref)
{
	uint8_t *e = ent_ptr(kd, ref);
	uint32_t units = units_for(ent_klen(e));
	memcpy(e, &kd->freelist[units], 4);
	kd->freelist[units] = ref;
	kd->garbage_units += units;
}

/* --- tables ------------------------------------------------------------------------- */

static int table_init(struct table *t, size_t nb, int populate)
{
	void *m = mmap(NULL, nb * sizeof(struct bucket), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0), -1, 0);
	if (m == MAP_FAILED)
		return -ENOMEM;
	t->b = m;
	t->nb = nb;
	t->used = 0;
	t->tombs = 0;
	return 0;
}

static void table_free(struct table *t)
{
	if (t->b)
		munmap(t->b, t->nb * sizeof(struct bucket));
	memset(t, 0, sizeof *t);
}

static inline uint8_t tag_of(uint64_t h)
{
	return (uint8_t)(h >> 56);
}

static inline int bucket_has_empty(const struct bucket *b)
{
	for (int j = 0; j < SLOTS; j++)
		if (b->ref[j] == REF_EMPTY)
			return 1;
	return 0;
}

/* Find key in t. Returns 1 with *bi and *sj set, else 0 (and, when free_bi is
 * not NULL, the first EMPTY or DELETED slot of the probe path, or nb if
 * none was seen). */
static int table_find(const kv_keydir *kd, const struct table *t, uint64_t h, const void *key,
		      size_t klen, size_t *bi, int *sj, size_t *free_bi, int *free_sj)
{
	size_t mask = t->nb - 1, i = h & mask;
	uint8_t tag = tag_of(h);
	if (free_bi)
		*free_bi = t->nb;
	for (size_t probes = 0; probes < t->nb; probes++, i = (i + 1) & mask) {
		const struct bucket *b = &t->b[i];
		int empty = 0;
		for (int j = 0; j < SLOTS; j++) {
			uint32_t ref = b->ref[j];
			if (ref <= REF_DELETED) {
				if (ref == REF_EMPTY)
					empty = 1;
				if (free_bi && *free_bi == t->nb) {
					*free_bi = i;
					*free_sj = j;
				}
				continue;
			}
			if (b->tag[j] != tag)
				continue;
			const uint8_t *e = ent_ptr(kd, ref);
			if (ent_klen(e) == klen && memcmp(e + ENT_HDR, key, klen) == 0) {
				*bi = i;
				*sj = j;
				return 1;
			}
		}
		if (empty) /* invariant 2 */
			return 0;
	}
	return 0;
}

/* Place ref (known absent) into the first free slot of its probe path. */
static int table_place(struct table *t, uint64_t h, uint32_t ref)
{
	size_t mask = t->nb - 1, i = h & mask;
	for (size_t probes = 0; probes < t->nb; probes++, i = (i + 1) & mask) {
		struct bucket *b = &t->b[i];
		for (int j = 0; j < SLOTS; j++) {
			if (b->ref[j] <= REF_DELETED) {
				if (b->ref[j] == REF_DELETED)
					t->tombs--;
				b->ref[j] = ref;
				b->tag[j] = tag_of(h);
				t->used++;
				return 0;
			}
		}
	}
	return -ENOMEM; /* cannot happen below the load limit */
}

static void table_clear_slot(struct table *t, size_t bi, int sj)
{
	struct bucket *b = &t->b[bi];
	if (bucket_has_empty(b)) { /* invariant 2 */
		b->ref[sj] = REF_EMPTY;
	} else {
		b->ref[sj] = REF_DELETED;
		t->tombs++;
	}
	t->used--;
}

/* --- resizing (invariant 3) ------------------------------------------------------------- */

static int start_resize(kv_keydir *kd)
{
	struct table *old = &kd->t[0];
	size_t nb = 1;
	/* the smallest table where the live keys fill at most half the slots */
	while (nb * SLOTS < old->used * 2 + SLOTS)
		nb <<= 1;
	if (nb < 16)
		nb = 16;
	int rc = table_init(&kd->t[1], nb, 0);
	if (rc)
		return rc;
	kd->resizing = 1;
	kd->rehash_idx = 0;
	return 0;
}

static void finish_resize(kv_keydir *kd)
{
	release_old(kd, SIZE_MAX); /* the one before, if any is left */
	kd->old_mem = (uint8_t *)kd->t[0].b;
	kd->old_len = kd->t[0].nb * sizeof(struct bucket);
	kd->t[0] = kd->t[1];
	memset(&kd->t[1], 0, sizeof kd->t[1]);
	kd->resizing = 0;
}

static void migrate_bucket(kv_keydir *kd, size_t i)
{
	struct table *old = &kd->t[0];
	struct bucket *b = &old->b[i];
	for (int j = 0; j < SLOTS; j++) {
		uint32_t ref = b->ref[j];
		if (ref <= REF_DELETED)
			continue;
		const uint8_t *e = ent_ptr(kd, ref);
		uint64_t h = kv_hash(e + ENT_HDR, ent_klen(e));
		table_place(&kd->t[1], h, ref); /* the new table is at most half full */
		b->ref[j] = REF_DELETED;
		old->used--;
		old->tombs++;
	}
}

int kv_keydir_step(kv_keydir *kd, unsigned n)
{
	if (kd->old_len) /* (unmapping copies nothing, even with a child alive) */
		release_old(kd, n >= 1024 ? 8 * RELEASE_SLICE : RELEASE_SLICE);
	if (!kd->resizing)
		return kd->old_len != 0;
	if (kd->frozen) /* invariant 4 */
		return 1;
	while (n-- && kd->rehash_idx < kd->t[0].nb)
		migrate_bucket(kd, kd->rehash_idx++);
	if (kd->rehash_idx >= kd->t[0].nb)
		finish_resize(kd);
	return kd->resizing || kd->old_len;
}

/* Called before an insert into the table that takes new keys. */
static int maybe_grow(kv_keydir *kd)
{
	if (kd->resizing) {
		struct table *t = &kd->t[1];
		/* a frozen, paused resize whose new table fills up: finish it */
		if ((t->used + t->tombs + 1) * 32 > t->nb * SLOTS * 31) {
			while (kd->resizing) {
				kd->frozen = 0;
				kv_keydir_step(kd, 1u << 20);
				kd->frozen = 1;
			}
		} else {
			return 0;
		}
	}
	struct table *t = &kd->t[0];
	size_t fill = t->used + t->tombs + 1, slots = t->nb * SLOTS;
	int over = fill * 8 > slots * 7;
	int full = fill * 32 > slots * 31;
	if (!over || (kd->frozen && !full))
		return 0;
	return start_resize(kd);
}

/* --- public API ------------------------------------------------------------------------- */

kv_keydir *kv_keydir_new(void)
{
	seed_once();
	kv_keydir *kd = calloc(1, sizeof *kd);
	if (!kd)
		return NULL;
	kd->freelist = calloc(MAX_UNITS + 1, sizeof *kd->freelist);
	if (!kd->freelist || table_init(&kd->t[0], 16, 0) != 0) {
		free(kd->freelist);
		free(kd);
		return NULL;
	}
	return kd;
}

void kv_keydir_free(kv_keydir *kd)
{
	if (!kd)
		return;
	table_free(&kd->t[0]);
	table_free(&kd->t[1]);
	release_old(kd, SIZE_MAX);
	for (uint32_t i = 0; i < kd->nblocks; i++)
		munmap(kd->blocks[i], BLOCK_BYTES);
	free(kd->freelist);
	free(kd);
}

/* Locate key: returns the table index (0/1) holding it, or -1. */
static int locate(kv_keydir *kd, uint64_t h, const void *key, size_t klen, size_t *bi, int *sj)
{
	if (table_find(kd, &kd->t[0], h, key, klen, bi, sj, NULL, NULL))
		return 0;
	if (kd->resizing && table_find(kd, &kd->t[1], h, key, klen, bi, sj, NULL, NULL))
		return 1;
	return -1;
}

int kv_keydir_get(kv_keydir *kd, const void *key, size_t klen, struct kv_loc *out)
{
	size_t bi;
	int sj;
	int ti = locate(kd, kv_hash(key, klen), key, klen, &bi, &sj);
	if (ti < 0)
		return 0;
	ent_get_loc(ent_ptr(kd, kd->t[ti].b[bi].ref[sj]), out);
	return 1;
}

int kv_keydir_put(kv_keydir *kd, const void *key, size_t klen, const struct kv_loc *loc,
		  struct kv_loc *old)
{
	uint64_t h = kv_hash(key, klen);
	size_t bi;
	int sj;
	kv_keydir_step(kd, 2);
	int ti = locate(kd, h, key, klen, &bi, &sj);
	if (ti >= 0) {
		uint8_t *e = ent_ptr(kd, kd->t[ti].b[bi].ref[sj]);
		if (old)
			ent_get_loc(e, old);
		ent_set_loc(e, loc);
		return 1;
	}
	int rc = maybe_grow(kd);
	if (rc)
		return rc;
	uint32_t units = units_for(klen);
	uint32_t ref = arena_alloc(kd, units);
	if (!ref)
		return -ENOMEM;
	uint8_t *e = ent_ptr(kd, ref);
	ent_set_loc(e, loc);
	uint16_t k = (uint16_t)(klen - 1);
	memcpy(e + 16, &k, 2);
	memcpy(e + ENT_HDR, key, klen);
	rc = table_place(&kd->t[kd->resizing ? 1 : 0], h, ref);
	if (rc) {
		arena_free(kd, ref);
		return rc;
	}
	kd->keys++;
	kd->key_bytes += klen;
	return 0;
}

int kv_keydir_del(kv_keydir *kd, const void *key, size_t klen, struct kv_loc *old)
{
	size_t bi;
	int sj;
	kv_keydir_step(kd, 2);
	int ti = locate(kd, kv_hash(key, klen), key, klen, &bi, &sj);
	if (ti < 0)
		return 0;
	struct table *t = &kd->t[ti];
	uint32_t ref = t->b[bi].ref[sj];
	if (old)
		ent_get_loc(ent_ptr(kd, ref), old);
	table_clear_slot(t, bi, sj);
	arena_free(kd, ref);
	kd->keys--;
	kd->key_bytes -= klen;
	return 1;
}

int kv_keydir_cas(kv_keydir *kd, const void *key, size_t klen, const struct kv_loc *from,
		  const struct kv_loc *to)
{
	size_t bi;
	int sj;
	int ti = locate(kd, kv_hash(key, klen), key, klen, &bi, &sj);
	if (ti < 0)
		return 0;
	uint8_t *e = ent_ptr(kd, kd->t[ti].b[bi].ref[sj]);
	struct kv_loc cur;
	ent_get_loc(e, &cur);
	if (cur.seg != from->seg || cur.off != from->off)
		return 0;
	ent_set_loc(e, to);
	return 1;
}

int kv_keydir_del_at(kv_keydir *kd, const void *key, size_t klen, const struct kv_loc *at)
{
	struct kv_loc cur;
	if (!kv_keydir_get(kd, key, klen, &cur) || cur.seg != at->seg || cur.off != at->off)
		return 0;
	return kv_keydir_del(kd, key, klen, NULL);
}

int kv_keydir_foreach(kv_keydir *kd,
		      int (*cb)(void *arg, const uint8_t *key, size_t klen, const struct kv_loc *loc),
		      void *arg)
{
	for (int ti = 0; ti < (kd->resizing ? 2 : 1); ti++) {
		struct table *t = &kd->t[ti];
		for (size_t i = 0; i < t->nb; i++) {
			for (int j = 0; j < SLOTS; j++) {
				uint32_t ref = t->b[i].ref[j];
				if (ref <= REF_DELETED)
					continue;
				const uint8_t *e = ent_ptr(kd, ref);
				struct kv_loc loc;
				ent_get_loc(e, &loc);
				int rc = cb(arg, e + ENT_HDR, ent_klen(e), &loc);
				if (rc)
					return rc;
			}
		}
	}
	return 0;
}

int kv_keydir_reserve(kv_keydir *kd, size_t n)
{
	if (kd->keys || kd->resizing)
		return 0;
	size_t nb = 16;
	while (nb * SLOTS * 7 / 8 < n + 1)
		nb <<= 1;
	if (nb <= kd->t[0].nb)
		return 0;
	struct table t;
	if (table_init(&t, nb, kd->populate))
		return -ENOMEM;
	table_free(&kd->t[0]);
	kd->t[0] = t;
	return 0;
}

void kv_keydir_populate(kv_keydir *kd, int on)
{
	kd->populate = on;
}

void kv_keydir_prefetch(const kv_keydir *kd, const void *key, size_t klen)
{
	const struct table *t = &kd->t[kd->resizing ? 1 : 0];
	__builtin_prefetch(&t->b[kv_hash(key, klen) & (t->nb - 1)]);
}

void kv_keydir_prefetch_entry(const kv_keydir *kd, const void *key, size_t klen)
{
	uint64_t h = kv_hash(key, klen);
	uint8_t tag = tag_of(h);
	for (int ti = 0; ti <= (kd->resizing ? 1 : 0); ti++) {
		const struct table *t = &kd->t[ti];
		const struct bucket *b = &t->b[h & (t->nb - 1)];
		for (int j = 0; j < SLOTS; j++)
			if (b->ref[j] > REF_DELETED && b->tag[j] == tag)
				__builtin_prefetch(ent_ptr(kd, b->ref[j]));
	}
}

void kv_keydir_freeze(kv_keydir *kd, int frozen)
{
	kd->frozen = frozen;
}

void kv_keydir_stats(const kv_keydir *kd, struct kv_keydir_stats *st)
{
	memset(st, 0, sizeof *st);
	st->keys = kd->keys;
	st->key_bytes = kd->key_bytes;
	st->table_bytes = (kd->t[0].nb + kd->t[1].nb) * sizeof(struct bucket) + kd->old_len;
	st->arena_bytes = kd->arena_units * 4u;
	st->garbage_bytes = kd->garbage_units * 4u;
	st->bytes = st->table_bytes + st->arena_bytes;
	st->buckets = kd->t[0].nb + kd->t[1].nb;
	st->resizing = kd->resizing;
}
