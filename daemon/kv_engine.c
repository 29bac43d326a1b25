/*
 * kv_engine.c — the storage engine: segments + keydir + recovery.
 *
 * Owns: the LOCK fd, the active segment's fd and tail buffer, the table of
 * segments (sealed ones mapped read-only — at open, then on demand — at
 * most max_mapped_segments at a time; kv_engine_tick() has them warmed
 * up, warm_step: 4 MiB ranges handed to the reaper thread), the keydir,
 * and the reaper thread that frees the files of removed segments
 * (invariant 8) and warms the mappings (warm_bg).
 *
 * Invariants (asserts refer to them by number):
 *  1. The keydir points at the newest committed record of every live key;
 *     "newer" is (segment id, offset) order, which recovery replays.
 *  2. Only the active segment is ever written, and only by appending; its
 *     file holds bytes [0, wbuf_off) and the tail buffer [wbuf_off, size).
 *  3. A segment that existed before open is never appended to: open always
 *     creates a new active segment with a higher id.
 *  4. seg->live is the sum of the sizes of the records the keydir points
 *     at in that segment; dead = size - header - live.
 *  5. After a failed write or fsync of the active segment, `failed` is set
 *     and every later write returns KV_EREADONLY until the engine is
 *     reopened; nothing retries an fsync.
 *  6. A sealed segment was fdatasync'ed before the segment after it got
 *     its first record, and the directory was fsynced after each create.
 *  7. Bytes [wbuf_off, alloc_end) of the active segment's file are zeros
 *     written ahead by prealloc_ahead() (never read, never part of a
 *     record); a sealed segment holds none: kv_eng_rotate() and
 *     kv_engine_close() cut them before the fdatasync that seals it, and
 *     recovery cuts a leftover zero tail of the newest segment.
 *  8. A removed segment (a merge input, an empty segment at open) leaves
 *     the store by a rename of its files to NNNNNNNNNN.dseg / .dhint, in
 *     the order removals happen; recovery never reads those names, only
 *     finishes their removal. The blocks are freed by the reaper thread
 *     (reaper_main), never by the loop, and only after a directory fsync
 *     made the rename durable (kv_eng_reap_release): with `discard` on ext4 one unlink
 *     of a 256 MiB file took 107 ms here, and freeing 256 KiB per tick
 *     in the loop still cost 0.5-1.5 ms a tick (up to 100 ms). The same
 *     thread unmaps the mappings of removed segments and finished hint
 *     jobs (unmap_later): the munmap of a resident 187 MiB segment took
 *     7 ms in the loop.
 *
 * PREALLOCATION (invariant 7). An fdatasync of a file that grew must also
 * write its inode (ext4 without a journal: one more synchronous I/O); one
 * of a file whose size did not change writes the data pages and flushes.
 * So after each fdatasync that finds less than PREALLOC_CHUNK/2 written
 * ahead, the next PREALLOC_CHUNK bytes are filled with zeros and their
 * writeback started: later group commits overwrite blocks that exist,
 * and only one fdatasync per chunk pays for the size change. Zeros, not
 * fallocate(): writing into unwritten extents makes ext4 convert them at
 * each fdatasync (PostgreSQL zero-fills its WAL for the same reason).
 * Measured on this machine's disk, 128-byte appends + fdatasync: 3,300-
 * 3,700/s growing the file, 4,900-5,200/s into zero-filled space.
 * Only kv_engine_sync() preallocates: a store that never syncs never
 * carries the zeros.
 */
#include "kv_engine.h"

#include "kv_engine_int.h"
#include "kv_format.h"
#include "kv_keydir.h"
#include "kv_seg.h"
#include "kv_sys.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FLUSH_AT (1u << 20)      /* write the tail buffer out past 1 MiB */
#define WBUF_KEEP (8u << 20)     /* shrink an idle tail buffer above this */
#define WRITEBACK_AT (8u << 20)  /* start writeback of the active segment every 8 MiB */
#define HINT_SLICE (64u << 10)   /* segment bytes a hint job reads per tick */
#define WARM_SLICE (64u << 10)   /* mapped data bytes warm_step() makes resident per tick */
#define WARM_BG (4u << 20)       /* ... or hands to the reaper thread per tick */
#define WARM_BG_QUEUED 2u        /* ... while fewer ranges than this wait there */
#define REAP_SLICE (8u << 20)    /* bytes of a removed file the reaper frees per ftruncate */
#define PREALLOC_CHUNK (1u << 20) /* zeros written ahead of the active segment's end */

/* --- small helpers -------------------------------------------------------------------- */

const char *kv_strerror(int rc)
{
	switch (rc) {
	case 0:
		return "success";
	case KV_ENOTFOUND:
		return "key not found";
	case KV_ETOOBIG:
		return "key or value too large";
	case KV_EBADKEY:
		return "empty key";
	case KV_ECORRUPT:
		return "data corruption: checksum mismatch";
	case KV_ELOCKED:
		return "data directory is locked by another process";
	case KV_EVERSION:
		return "unknown on-disk format version";
	case KV_EREADONLY:
		return "read-only after an I/O error";
	case KV_EBUSY:
		return "a merge is already running";
	default:
		return rc < 0 && rc > -4096 ? strerror(-rc) : "unknown error";
	}
}

void kv_options_init(struct kv_options *o)
{
	memset(o, 0, sizeof *o);
	o->max_segment_size = 256ull << 20;
	o->max_mapped_segments = 256;
}

void kv_buf_free(struct kv_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof *b);
}

static int buf_reserve(struct kv_buf *b, size_t n)
{
	if (n <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < n)
		cap *= 2;
	char *d = realloc(b->data, cap);
	if (!d)
		return -ENOMEM;
	b->data = d;
	b->cap = cap;
	return 0;
}

__attribute__((format(printf, 3, 4))) void kv_eng_log(kv_engine *e, int level, const char *fmt,
						       ...)
{
	if (!e->opt.log)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	e->opt.log(e->opt.log_arg, level, msg);
}

__attribute__((format(printf, 3, 4))) static void seterr(char *err, size_t n, const char *fmt, ...)
{
	if (!err || !n)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, n, fmt, ap);
	va_end(ap);
}

uint64_t kv_eng_now(const kv_engine *e)
{
	return e->opt.clock ? e->opt.clock(e->opt.clock_arg) : (uint64_t)time(NULL);
}

void kv_eng_fail(kv_engine *e, int rc, const char *what)
{
	if (e->failed)
		return;
	e->failed = rc;
	snprintf(e->failed_reason, sizeof e->failed_reason, "%s: %s", what, kv_strerror(rc));
	kv_eng_log(e, KV_LOG_ERROR, "engine is now read-only: %s", e->failed_reason);
}

int kv_engine_readonly(const kv_engine *e)
{
	return e->failed != 0;
}

const char *kv_engine_readonly_reason(const kv_engine *e)
{
	return e->failed ? e->failed_reason : "";
}

/* --- segment table ----------------------------------------------------------------------- */

struct seg *kv_eng_seg_find(const kv_engine *e, uint32_t id)
{
	if (e->active && e->active->id == id)
		return e->active;
	size_t lo = 0, hi = e->nsegs;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (e->segs[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < e->nsegs && e->segs[lo]->id == id ? e->segs[lo] : NULL;
}

/* Insert keeping ascending ids. */
int kv_eng_seg_add(kv_engine *e, struct seg *s)
{
	if (e->nsegs == e->capsegs) {
		size_t cap = e->capsegs ? e->capsegs * 2 : 16;
		struct seg **n = realloc(e->segs, cap * sizeof *n);
		if (!n)
			return -ENOMEM;
		e->segs = n;
		e->capsegs = cap;
	}
	size_t i = e->nsegs;
	while (i > 0 && e->segs[i - 1]->id > s->id) {
		e->segs[i] = e->segs[i - 1];
		i--;
	}
	e->segs[i] = s;
	e->nsegs++;
	return 0;
}

static void unmap_later(kv_engine *e, void *map, size_t len);

void kv_eng_seg_unmap(kv_engine *e, struct seg *s)
{
	if (s->map) {
		unmap_later(e, s->map, s->mapres ? s->mapres : s->maplen);
		s->map = NULL;
		s->maplen = 0;
		s->mapres = 0;
		s->warmed = 0;
		e->nmapped--;
	}
}

/* Unmap the least recently used sealed segment when the cache is full. */
static void evict_map(kv_engine *e)
{
	if (e->nmapped < e->opt.max_mapped_segments)
		return;
	struct seg *victim = NULL;
	for (size_t i = 0; i < e->nsegs; i++)
		if (e->segs[i]->map && (!victim || e->segs[i]->lru < victim->lru))
			victim = e->segs[i];
	if (victim)
		kv_eng_seg_unmap(e, victim);
}

/* Map a sealed segment, evicting the least recently used mapping when the
 * cache is full. */
int kv_eng_seg_map(kv_engine *e, struct seg *s)
{
	char path[PATH_MAX];
	if (s->map) {
		s->lru = ++e->lru_clock;
		return 0;
	}
	evict_map(e);
	kv_seg_path(path, sizeof path, e->dir, s->id, "seg");
	int rc = kv_map_file(path, &s->map, &s->maplen);
	if (rc)
		return rc;
	if (s->map)
		e->nmapped++;
	s->lru = ++e->lru_clock;
	return 0;
}

/* --- reading --------------------------------------------------------------------------------- */

/*
 * Read and check the record at loc into b (b->data holds the whole record).
 * On success *r describes it, pointing into b->data or into a mapping.
 */
static int read_record(kv_engine *e, const struct kv_loc *loc, struct kv_buf *b, struct kv_rec *r)
{
	struct seg *s = kv_eng_seg_find(e, loc->seg);
	const uint8_t *p;
	if (!s)
		return KV_ECORRUPT;
	if (s->active) {
		if (loc->off >= e->wbuf_off) {
			p = e->wbuf + (loc->off - e->wbuf_off);
		} else if (e->amap && (uint64_t)loc->off + loc->size <= e->amaplen) {
			p = e->amap + loc->off; /* flushed: in the file, so in the mapping */
		} else {
			int rc = buf_reserve(b, loc->size);
			if (rc)
				return rc;
			rc = kv_pread_all(e->active_fd, b->data, loc->size, loc->off);
			if (rc)
				return rc == -ENODATA ? KV_ECORRUPT : rc;
			p = (const uint8_t *)b->data;
		}
	} else {
		int rc = kv_eng_seg_map(e, s);
		if (rc)
			return rc;
		if ((uint64_t)loc->off + loc->size > s->maplen)
			return KV_ECORRUPT;
		p = s->map + loc->off;
	}
	if (kv_rec_decode(p, loc->size, r) != KV_DEC_OK || r->size != loc->size ||
	    r->type != KV_REC_PUT)
		return KV_ECORRUPT;
	return 0;
}

static int check_key(size_t klen)
{
	if (klen == 0)
		return KV_EBADKEY;
	if (klen > KV_MAX_KEY)
		return KV_ETOOBIG;
	return 0;
}

static int expired(const kv_engine *e, uint32_t expiry)
{
	return expiry && expiry <= kv_eng_now(e);
}

int kv_engine_get(kv_engine *e, const void *key, size_t klen, struct kv_buf *out,
		  uint64_t *expires_at)
{
	struct kv_loc loc;
	struct kv_rec r;
	int rc = check_key(klen);
	if (rc)
		return rc;
	e->n_gets++;
	if (!kv_keydir_get(e->kd, key, klen, &loc) || expired(e, loc.expiry))
		return KV_ENOTFOUND;
	if ((rc = read_record(e, &loc, out, &r)) != 0) {
		if (rc == KV_ECORRUPT)
			kv_eng_log(e, KV_LOG_ERROR, "record of segment %u at offset %u fails its checksum",
			     loc.seg, loc.off);
		return rc;
	}
	if (r.klen != klen || memcmp(r.key, key, klen) != 0)
		return KV_ECORRUPT;
	if ((rc = buf_reserve(out, r.vlen ? r.vlen : 1)) != 0)
		return rc;
	memmove(out->data, r.value, r.vlen); /* r.value may point into out->data */
	out->len = r.vlen;
	if (expires_at)
		*expires_at = loc.expiry;
	return 0;
}

void kv_engine_prefetch(kv_engine *e, const void *key, size_t klen, int stage)
{
	struct kv_loc loc;
	if (check_key(klen))
		return;
	if (stage == 0) {
		kv_keydir_prefetch(e->kd, key, klen);
		return;
	}
	if (stage == 1) {
		kv_keydir_prefetch_entry(e->kd, key, klen);
		return;
	}
	if (!kv_keydir_get(e->kd, key, klen, &loc))
		return;
	/* where read_record() will look, without mapping anything */
	const struct seg *s = kv_eng_seg_find(e, loc.seg);
	const uint8_t *p = NULL;
	if (!s)
		return;
	if (s->active && loc.off >= e->wbuf_off)
		p = e->wbuf + (loc.off - e->wbuf_off);
	else if (s->active && e->amap && (uint64_t)loc.off + loc.size <= e->amaplen)
		p = e->amap + loc.off;
	else if (!s->active && s->map && (uint64_t)loc.off + loc.size <= s->maplen)
		p = s->map + loc.off;
	if (!p)
		return;
	for (uint32_t o = 0; o < loc.size && o < 256; o += 64) /* header, key, some value */
		__builtin_prefetch(p + o);
}

/* --- writing --------------------------------------------------------------------------------- */

int kv_engine_flush(kv_engine *e)
{
	if (e->failed)
		return KV_EREADONLY;
	if (e->wlen == 0)
		return 0;
	int rc = kv_write_all(e->active_fd, e->wbuf, e->wlen);
	if (rc) {
		kv_eng_fail(e, rc, "write to the active segment");
		return rc;
	}
	e->wbuf_off += e->wlen;
	e->wlen = 0;
	if (e->wbuf_off - e->range_synced >= WRITEBACK_AT) {
		/* start writeback now, so the fdatasync at sealing (or of the
		 * next group commit) finds little left to write */
		sync_file_range(e->active_fd, (off_t)e->range_synced,
				(off_t)(e->wbuf_off - e->range_synced), SYNC_FILE_RANGE_WRITE);
		e->range_synced = e->wbuf_off;
	}
	if (e->wcap > WBUF_KEEP) {
		free(e->wbuf);
		e->wbuf = NULL;
		e->wcap = 0;
	}
	return 0;
}

/* Invariant 7: keep at least PREALLOC_CHUNK/2 zeros written ahead of the
 * active segment's data (never past max_segment_size), and start their
 * writeback so that the next fdatasync finds them on disk. A failure is a
 * failed write of the active segment. */
static int prealloc_ahead(kv_engine *e)
{
	static const uint8_t zeros[64 << 10];
	uint64_t from = e->alloc_end > e->wbuf_off ? e->alloc_end : e->wbuf_off;
	if (from >= e->wbuf_off + PREALLOC_CHUNK / 2 || from >= e->opt.max_segment_size)
		return 0;
	uint64_t to = e->wbuf_off + PREALLOC_CHUNK;
	if (to > e->opt.max_segment_size)
		to = e->opt.max_segment_size;
	for (uint64_t off = from; off < to; off += sizeof zeros) {
		size_t n = to - off < sizeof zeros ? (size_t)(to - off) : sizeof zeros;
		int rc = kv_pwrite_all(e->active_fd, zeros, n, (off_t)off);
		if (rc) {
			kv_eng_fail(e, rc, "preallocating the active segment");
			return rc;
		}
		e->alloc_end = off + n;
	}
	sync_file_range(e->active_fd, (off_t)from, (off_t)(to - from), SYNC_FILE_RANGE_WRITE);
	return 0;
}

/* Invariant 7: cut the zeros written ahead, before the active segment is
 * sealed or closed (the fdatasync that follows makes the size durable). */
static int trim_active(kv_engine *e)
{
	if (e->alloc_end <= e->wbuf_off)
		return 0;
	int rc = kv_ftruncate(e->active_fd, (off_t)e->wbuf_off);
	if (rc) {
		kv_eng_fail(e, rc, "cutting the preallocated tail of the active segment");
		return rc;
	}
	e->alloc_end = e->wbuf_off;
	e->unsynced++; /* the new size must reach the disk */
	return 0;
}

static int sync_active(kv_engine *e, int prealloc)
{
	int rc = kv_engine_flush(e);
	if (rc)
		return rc;
	if (e->unsynced == 0 && !e->dir_dirty)
		return 0;
	if ((rc = kv_fdatasync(e->active_fd)) != 0) {
		kv_eng_fail(e, rc, "fdatasync of the active segment");
		return rc;
	}
	e->n_syncs++;
	if (e->dir_dirty) {
		if ((rc = kv_fsync_dir(e->dir)) != 0) {
			kv_eng_fail(e, rc, "fsync of the data directory");
			return rc;
		}
		e->dir_dirty = 0;
		kv_eng_reap_release(e);
	}
	e->unsynced = 0;
	return prealloc ? prealloc_ahead(e) : 0;
}

int kv_engine_sync(kv_engine *e)
{
	return sync_active(e, 1);
}

int kv_engine_sync_begin(kv_engine *e, struct kv_sync_job *j)
{
	j->seg = 0;
	j->dir = 0;
	j->dirpath = e->dir;
	int rc = kv_engine_flush(e);
	if (rc)
		return rc;
	if (e->unsynced == 0 && !e->dir_dirty)
		return 0;
	j->seg = e->active->id;
	j->dir = e->dir_dirty;
	e->dir_dirty = 0;
	e->unsynced = 0;
	return 1;
}

int kv_engine_sync_run(struct kv_sync_fd *sf, const struct kv_sync_job *j)
{
	char path[PATH_MAX];
	int rc;
	if (sf->fd < 0 || sf->seg != j->seg) {
		/* a descriptor of the thread's own: a rotation may close active_fd */
		kv_engine_sync_fd_close(sf);
		kv_seg_path(path, sizeof path, j->dirpath, j->seg, "seg");
		int fd = kv_open(path, O_RDONLY, 0);
		if (fd < 0)
			return fd;
		sf->fd = fd;
		sf->seg = j->seg;
	}
	if ((rc = kv_fdatasync(sf->fd)) == 0 && j->dir)
		rc = kv_fsync_dir(j->dirpath);
	return rc;
}

void kv_engine_sync_fd_close(struct kv_sync_fd *sf)
{
	if (sf->fd >= 0)
		kv_close(sf->fd);
	sf->fd = -1;
	sf->seg = 0;
}

int kv_engine_sync_end(kv_engine *e, const struct kv_sync_job *j, int rc)
{
	if (rc == -ENOENT && (!e->active || e->active->id != j->seg))
		rc = 0; /* sealed (and fdatasync'ed) since, then merged away */
	if (rc) {
		kv_eng_fail(e, rc, j->dir ? "fdatasync of the active segment or the directory"
					  : "fdatasync of the active segment");
		return rc;
	}
	e->n_syncs++;
	return e->failed || !e->active ? 0 : prealloc_ahead(e);
}

uint64_t kv_engine_unsynced(const kv_engine *e)
{
	return e->unsynced + (e->dir_dirty ? 1 : 0);
}

static int wbuf_reserve(kv_engine *e, size_t more)
{
	if (e->wlen + more <= e->wcap)
		return 0;
	size_t cap = e->wcap ? e->wcap : (1u << 16);
	while (cap < e->wlen + more)
		cap *= 2;
	uint8_t *n = realloc(e->wbuf, cap);
	if (!n)
		return -ENOMEM;
	e->wbuf = n;
	e->wcap = cap;
	return 0;
}

/*
 * Which records of a sealed segment its hint file lists: every tombstone,
 * and every PUT except one the keydir shows superseded by a later record of
 * the same segment. A record superseded by a newer segment stays listed:
 * that newer record may not be durable yet, and the hint must never hide a
 * durable value behind a write a power cut could still take back. Replaying
 * the hint in offset order gives exactly what a scan of the segment gives.
 */
static int hint_wants(kv_engine *e, const struct seg *s, uint32_t off, const struct kv_rec *r)
{
	struct kv_loc loc;
	if (r->type == KV_REC_DEL)
		return 1;
	if (r->type != KV_REC_PUT)
		return 0;
	return !(kv_keydir_get(e->kd, r->key, r->klen, &loc) && loc.seg == s->id && loc.off != off);
}

struct hint_ctx {
	kv_engine *e;
	struct seg *s;
	struct kv_hint_buf hb;
};

static int hint_cb(void *arg, uint32_t off, const struct kv_rec *r)
{
	struct hint_ctx *h = arg;
	if (!hint_wants(h->e, h->s, off, r))
		return 0;
	return kv_hint_add(&h->hb, r->seq, r->expiry, r->key, r->klen,
			   r->type == KV_REC_DEL ? KV_HF_TOMBSTONE : 0, off, r->size);
}

static int write_hint(kv_engine *e, struct seg *s, int repair)
{
	struct hint_ctx h = {.e = e, .s = s};
	struct kv_scan_result res;
	int rc = kv_eng_seg_map(e, s);
	if (rc)
		return rc;
	if ((rc = kv_hint_begin(&h.hb, s->id)) != 0)
		return rc;
	rc = kv_seg_scan(s->map, s->maplen, repair, hint_cb, &h, &res);
	if (rc == 0 && res.bad && !repair)
		rc = KV_ECORRUPT;
	if (rc) {
		kv_hint_abort(&h.hb);
		return rc;
	}
	if ((rc = kv_hint_commit(&h.hb, e->dir, s->id)) == 0)
		s->has_hint = 1;
	kv_hint_abort(&h.hb);
	return rc;
}

static int open_active(kv_engine *e, uint32_t id)
{
	struct seg *s = calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	int fd = kv_seg_create(e->dir, id, kv_eng_now(e));
	if (fd < 0) {
		free(s);
		return fd;
	}
	s->id = id;
	s->active = 1;
	s->size = KV_SEG_HDR;
	int rc = kv_eng_seg_add(e, s);
	if (rc) {
		kv_close(fd);
		free(s);
		return rc;
	}
	e->active = s;
	e->active_fd = fd;
	e->wbuf_off = KV_SEG_HDR;
	e->alloc_end = KV_SEG_HDR;
	e->awarmed = 0;
	e->range_synced = 0;
	e->wlen = 0;
	/* Reads of flushed records go through a shared read-only mapping of
	 * the whole future segment (the page cache keeps it coherent with
	 * write()); without it they fall back to pread. */
	void *m = mmap(NULL, (size_t)e->opt.max_segment_size, PROT_READ, MAP_SHARED, fd, 0);
	if (m != MAP_FAILED) {
		e->amap = m;
		e->amaplen = (size_t)e->opt.max_segment_size;
	}
	return 0;
}

static void unmap_active(kv_engine *e)
{
	if (e->amap)
		munmap(e->amap, e->amaplen);
	e->amap = NULL;
	e->amaplen = 0;
}

/* The segment being sealed keeps the active mapping (same file, pages
 * already mapped and warm) instead of a fresh mmap on its next read: no
 * burst of page faults for the reads that follow every rotation. The
 * mapping reserves max_segment_size; only [0, size) is ever read. */
static void keep_active_map(kv_engine *e, struct seg *s)
{
	if (!e->amap)
		return;
	evict_map(e);
	s->map = e->amap;
	s->maplen = (size_t)e->wbuf_off;
	s->mapres = e->amaplen;
	s->warmed = e->awarmed < s->maplen ? (size_t)e->awarmed : s->maplen;
	s->lru = ++e->lru_clock;
	e->nmapped++;
	e->amap = NULL;
	e->amaplen = 0;
}

/* Seal the active segment and open id next_id as the new one
 * (invariant 6). Any failure is fatal to further writes. */
int kv_eng_rotate(kv_engine *e, uint32_t next_id)
{
	struct seg *s = e->active;
	int rc = kv_engine_flush(e);
	if (rc || (rc = trim_active(e)) != 0)
		return rc;
	if ((rc = kv_fdatasync(e->active_fd)) != 0) {
		kv_eng_fail(e, rc, "fdatasync of the segment being sealed");
		return rc;
	}
	e->n_syncs++;
	e->unsynced = 0;
	keep_active_map(e, s);
	kv_close(e->active_fd);
	e->active_fd = -1;
	s->active = 0;
	e->active = NULL;
	s->hint_wanted = 1; /* written in slices by kv_engine_tick() */
	if ((rc = open_active(e, next_id)) != 0) {
		kv_eng_fail(e, rc, "creating a new segment");
		return rc;
	}
	return 0;
}

/* Make room for `need` more bytes in the active segment. */
static int ensure_room(kv_engine *e, uint64_t need)
{
	if (e->active->size > KV_SEG_HDR && e->active->size + need > e->opt.max_segment_size)
		return kv_eng_rotate(e, e->active->id + 1);
	return 0;
}

static uint32_t expiry_for(const kv_engine *e, uint32_t ttl)
{
	if (!ttl)
		return 0;
	uint64_t x = kv_eng_now(e) + ttl;
	return x > UINT32_MAX ? UINT32_MAX : (uint32_t)x;
}

/* Append one record to the tail buffer; *loc receives its location. */
static void append_rec(kv_engine *e, uint8_t type, uint8_t flags, uint32_t expiry, const void *key,
		       uint32_t klen, const void *val, uint32_t vlen, struct kv_loc *loc)
{
	uint32_t size = KV_REC_HDR + klen + vlen;
	loc->seg = e->active->id;
	loc->off = (uint32_t)(e->wbuf_off + e->wlen);
	loc->size = size;
	loc->expiry = expiry;
	kv_rec_encode(e->wbuf + e->wlen, type, flags, ++e->seq, expiry, key, klen, val, vlen);
	e->wlen += size;
	e->active->size += size;
	e->unsynced += size;
}

void kv_eng_account_replace(kv_engine *e, const struct kv_loc *old)
{
	struct seg *s = kv_eng_seg_find(e, old->seg);
	assert(s && s->live >= old->size); /* invariant 4 */
	if (s)
		s->live -= old->size;
}

static int writable(const kv_engine *e)
{
	return e->failed ? KV_EREADONLY : 0;
}

int kv_engine_put(kv_engine *e, const void *key, size_t klen, const void *val, size_t vlen,
		  uint32_t ttl_seconds)
{
	int rc = check_key(klen);
	if (rc)
		return rc;
	if (vlen > KV_MAX_VALUE)
		return KV_ETOOBIG;
	if ((rc = writable(e)) != 0)
		return rc;
	uint32_t size = KV_REC_HDR + (uint32_t)klen + (uint32_t)vlen;
	if ((rc = ensure_room(e, size)) != 0)
		return rc;
	if ((rc = wbuf_reserve(e, size)) != 0)
		return rc;
	size_t mark = e->wlen;
	uint64_t seq_mark = e->seq;
	struct kv_loc loc, old;
	append_rec(e, KV_REC_PUT, 0, expiry_for(e, ttl_seconds), key, (uint32_t)klen, val,
		   (uint32_t)vlen, &loc);
	rc = kv_keydir_put(e->kd, key, klen, &loc, &old);
	if (rc < 0) { /* nothing reached the file: take the record back */
		e->wlen = mark;
		e->seq = seq_mark;
		e->active->size -= size;
		e->unsynced -= size;
		return rc;
	}
	if (rc == 1)
		kv_eng_account_replace(e, &old);
	e->active->live += size;
	e->n_puts++;
	if (e->wlen >= FLUSH_AT)
		return kv_engine_flush(e);
	return 0;
}

int kv_engine_delete(kv_engine *e, const void *key, size_t klen)
{
	struct kv_loc loc, old;
	int rc = check_key(klen);
	if (rc)
		return rc;
	if ((rc = writable(e)) != 0)
		return rc;
	if (!kv_keydir_get(e->kd, key, klen, &old))
		return KV_ENOTFOUND;
	int was_expired = expired(e, old.expiry);
	uint32_t size = KV_REC_HDR + (uint32_t)klen;
	if ((rc = ensure_room(e, size)) != 0)
		return rc;
	if ((rc = wbuf_reserve(e, size)) != 0)
		return rc;
	append_rec(e, KV_REC_DEL, 0, 0, key, (uint32_t)klen, NULL, 0, &loc);
	kv_keydir_del(e->kd, key, klen, &old);
	kv_eng_account_replace(e, &old);
	e->n_dels++;
	if (e->wlen >= FLUSH_AT && (rc = kv_engine_flush(e)) != 0)
		return rc;
	return was_expired ? KV_ENOTFOUND : 0;
}

int kv_engine_batch(kv_engine *e, const struct kv_batch_op *ops, size_t n)
{
	uint64_t total = KV_REC_HDR + 4; /* the COMMIT record */
	int rc;
	if (n == 0)
		return 0;
	if (n > UINT32_MAX)
		return KV_ETOOBIG;
	for (size_t i = 0; i < n; i++) {
		if ((rc = check_key(ops[i].klen)) != 0)
			return rc;
		if (ops[i].type == KV_OP_PUT && ops[i].vlen > KV_MAX_VALUE)
			return KV_ETOOBIG;
		if (ops[i].type != KV_OP_PUT && ops[i].type != KV_OP_DELETE)
			return -EINVAL;
		total += KV_REC_HDR + ops[i].klen + (ops[i].type == KV_OP_PUT ? ops[i].vlen : 0);
	}
	if (total > UINT32_MAX / 2)
		return KV_ETOOBIG;
	if ((rc = writable(e)) != 0)
		return rc;
	if ((rc = ensure_room(e, total)) != 0)
		return rc;
	if ((rc = wbuf_reserve(e, total)) != 0)
		return rc;
	/* 1. all records, then the COMMIT: nothing is visible before it checks */
	size_t first = e->wlen;
	for (size_t i = 0; i < n; i++) {
		struct kv_loc loc;
		const struct kv_batch_op *op = &ops[i];
		if (op->type == KV_OP_PUT)
			append_rec(e, KV_REC_PUT, KV_RF_BATCH, expiry_for(e, op->ttl_seconds), op->key,
				   (uint32_t)op->klen, op->val, (uint32_t)op->vlen, &loc);
		else
			append_rec(e, KV_REC_DEL, KV_RF_BATCH, 0, op->key, (uint32_t)op->klen, NULL, 0,
				   &loc);
	}
	uint8_t cnt[4];
	struct kv_loc cloc;
	kv_put32(cnt, (uint32_t)n);
	append_rec(e, KV_REC_COMMIT, 0, 0, cnt, 4, NULL, 0, &cloc);
	/* 2. apply to the keydir, in order */
	size_t off = first;
	for (size_t i = 0; i < n; i++) {
		struct kv_loc loc, old;
		struct kv_rec r;
		kv_rec_decode(e->wbuf + off, e->wlen - off, &r);
		loc.seg = e->active->id;
		loc.off = (uint32_t)(e->wbuf_off + off);
		loc.size = r.size;
		loc.expiry = r.expiry;
		off += r.size;
		if (r.type == KV_REC_PUT) {
			rc = kv_keydir_put(e->kd, r.key, r.klen, &loc, &old);
			if (rc < 0) {
				/* the batch is in the tail buffer: keep memory and
				 * disk in step by refusing further writes */
				kv_eng_fail(e, rc, "keydir allocation during a batch");
				return rc;
			}
			if (rc == 1)
				kv_eng_account_replace(e, &old);
			e->active->live += r.size;
		} else if (kv_keydir_del(e->kd, r.key, r.klen, &old)) {
			kv_eng_account_replace(e, &old);
		}
	}
	e->n_batches++;
	if (e->wlen >= FLUSH_AT && (rc = kv_engine_flush(e)) != 0)
		return rc;
	return (int)n;
}

/* --- iteration ---------------------------------------------------------------------------------- */

struct it_item {
	size_t koff;
	uint32_t klen;
	struct kv_loc loc;
};

struct kv_iter {
	kv_engine *e;
	struct it_item *items;
	size_t n, cap, pos;
	uint8_t *keys;
	size_t klen_total, kcap;
	struct kv_buf rec;
	const void *prefix;
	size_t plen;
	uint64_t now;
};

static int iter_collect(void *arg, const uint8_t *key, size_t klen, const struct kv_loc *loc)
{
	struct kv_iter *it = arg;
	if (it->plen && (klen < it->plen || memcmp(key, it->prefix, it->plen) != 0))
		return 0;
	if (loc->expiry && loc->expiry <= it->now)
		return 0;
	if (it->n == it->cap) {
		size_t cap = it->cap ? it->cap * 2 : 256;
		struct it_item *ni = realloc(it->items, cap * sizeof *ni);
		if (!ni)
			return -ENOMEM;
		it->items = ni;
		it->cap = cap;
	}
	if (it->klen_total + klen > it->kcap) {
		size_t cap = it->kcap ? it->kcap * 2 : 4096;
		while (cap < it->klen_total + klen)
			cap *= 2;
		uint8_t *nk = realloc(it->keys, cap);
		if (!nk)
			return -ENOMEM;
		it->keys = nk;
		it->kcap = cap;
	}
	memcpy(it->keys + it->klen_total, key, klen);
	it->items[it->n++] = (struct it_item){it->klen_total, (uint32_t)klen, *loc};
	it->klen_total += klen;
	return 0;
}

int kv_iter_open(kv_engine *e, const void *prefix, size_t plen, kv_iter **out)
{
	kv_iter *it = calloc(1, sizeof *it);
	if (!it)
		return -ENOMEM;
	it->e = e;
	it->prefix = prefix;
	it->plen = plen;
	it->now = kv_eng_now(e);
	int rc = kv_keydir_foreach(e->kd, iter_collect, it);
	it->prefix = NULL; /* borrowed for the collection pass only */
	if (rc) {
		e->iters++;
		kv_iter_close(it);
		return rc;
	}
	e->iters++;
	*out = it;
	return 0;
}

int kv_iter_next(kv_iter *it, const void **key, size_t *klen, struct kv_buf *val)
{
	if (it->pos >= it->n)
		return 0;
	struct it_item *item = &it->items[it->pos++];
	*key = it->keys + item->koff;
	*klen = item->klen;
	if (val) {
		struct kv_rec r;
		int rc = read_record(it->e, &item->loc, &it->rec, &r);
		if (rc)
			return rc;
		if ((rc = buf_reserve(val, r.vlen ? r.vlen : 1)) != 0)
			return rc;
		memcpy(val->data, r.value, r.vlen);
		val->len = r.vlen;
	}
	return 1;
}

void kv_iter_close(kv_iter *it)
{
	if (!it)
		return;
	it->e->iters--;
	free(it->items);
	free(it->keys);
	kv_buf_free(&it->rec);
	free(it);
}

int kv_engine_foreach(kv_engine *e, const void *prefix, size_t plen,
		      int (*cb)(void *arg, const void *key, size_t klen, const void *val,
				size_t vlen),
		      void *arg)
{
	kv_iter *it;
	struct kv_buf v = {0};
	int rc = kv_iter_open(e, prefix, plen, &it);
	if (rc)
		return rc;
	for (;;) {
		const void *k;
		size_t kl;
		rc = kv_iter_next(it, &k, &kl, &v);
		if (rc <= 0)
			break;
		if ((rc = cb(arg, k, kl, v.data, v.len)) != 0)
			break;
	}
	kv_iter_close(it);
	kv_buf_free(&v);
	return rc;
}

/* --- stats ---------------------------------------------------------------------------------------- */

int kv_engine_stats(kv_engine *e, struct kv_stats *st)
{
	struct kv_keydir_stats ks;
	memset(st, 0, sizeof *st);
	kv_keydir_stats(e->kd, &ks);
	st->keys = ks.keys;
	st->key_bytes = ks.key_bytes;
	st->keydir_bytes = ks.bytes;
	st->keydir_bytes_per_key = ks.keys ? (double)ks.bytes / (double)ks.keys : 0.0;
	st->seq = e->seq;
	st->syncs = e->n_syncs;
	st->puts = e->n_puts;
	st->deletes = e->n_dels;
	st->gets = e->n_gets;
	st->batches = e->n_batches;
	st->read_only = e->failed != 0;
	kv_engine_merge_info(e, &st->merge);
	st->seg = calloc(e->nsegs ? e->nsegs : 1, sizeof *st->seg);
	if (!st->seg)
		return -ENOMEM;
	st->nsegs = e->nsegs;
	st->segments = e->nsegs;
	for (size_t i = 0; i < e->nsegs; i++) {
		const struct seg *s = e->segs[i];
		struct kv_seg_stats *o = &st->seg[i];
		o->id = s->id;
		o->bytes = s->size;
		o->live_bytes = s->live;
		o->dead_bytes = s->size - KV_SEG_HDR - s->live;
		o->active = s->active;
		o->has_hint = s->has_hint;
		st->disk_bytes += s->size;
		st->live_bytes += s->live;
		st->dead_bytes += o->dead_bytes;
	}
	return 0;
}

void kv_stats_free(struct kv_stats *st)
{
	free(st->seg);
	st->seg = NULL;
	st->nsegs = 0;
}

static void hint_job_end(kv_engine *e, int commit)
{
	struct seg *s = e->hseg;
	if (!s)
		return;
	if (commit) {
		int rc = kv_hint_writer_commit(&e->hw);
		if (rc == 0)
			s->has_hint = 1;
		else
			kv_eng_log(e, KV_LOG_WARN, "segment %u: cannot write its hint file (%s); it will "
				   "be scanned at the next start", s->id, kv_strerror(rc));
	} else {
		kv_hint_writer_abort(&e->hw);
	}
	if (e->hmap)
		unmap_later(e, e->hmap, e->hlen);
	e->hmap = NULL;
	e->hseg = NULL;
}

/* Advance the hint job by about budget bytes of segment. Returns 1 while
 * hint work remains. */
static int hint_step(kv_engine *e, size_t budget)
{
	char path[PATH_MAX];
	/* A running merge rewrites every segment sealed before it began, with
	 * hint files of its own: a hint job for one of those would be thrown
	 * away with it, and competes with clients for the loop meanwhile. So
	 * hint jobs wait for the merge to end (a failed merge keeps its
	 * inputs; they, and segments sealed since, get their hints then). */
	if (!e->hseg && e->merge)
		return 0;
	if (!e->hseg) {
		struct seg *s = NULL;
		for (size_t i = 0; i < e->nsegs && !s; i++)
			if (e->segs[i]->hint_wanted && !e->segs[i]->active)
				s = e->segs[i];
		if (!s)
			return 0;
		s->hint_wanted = 0;
		kv_seg_path(path, sizeof path, e->dir, s->id, "seg");
		int rc = kv_map_file(path, &e->hmap, &e->hlen);
		if (rc == 0)
			rc = kv_hint_writer_open(&e->hw, e->dir, s->id);
		if (rc) {
			kv_eng_log(e, KV_LOG_WARN, "segment %u: cannot start its hint file: %s", s->id,
				   kv_strerror(rc));
			if (e->hmap)
				munmap(e->hmap, e->hlen);
			e->hmap = NULL;
			return 1;
		}
		e->hseg = s;
		e->hoff = KV_SEG_HDR;
	}
	size_t done = 0;
	while (e->hoff < e->hlen && done < budget) {
		struct kv_rec r;
		uint32_t off = (uint32_t)e->hoff;
		if (kv_rec_decode(e->hmap + off, e->hlen - off, &r) != KV_DEC_OK) {
			kv_eng_log(e, KV_LOG_WARN, "segment %u: bad record at offset %u while writing its "
				   "hint file; no hint", e->hseg->id, off);
			hint_job_end(e, 0);
			return 1;
		}
		if (hint_wants(e, e->hseg, off, &r) &&
		    kv_hint_writer_add(&e->hw, r.seq, r.expiry, r.key, r.klen,
				       r.type == KV_REC_DEL ? KV_HF_TOMBSTONE : 0, off, r.size) != 0) {
			hint_job_end(e, 0);
			return 1;
		}
		e->hoff += r.size;
		done += r.size;
	}
	if (e->hoff >= e->hlen)
		hint_job_end(e, 1);
	return 1;
}

/* Make the pages of [from, to) of a read-only mapping (page aligned, at
 * most WARM_SLICE) resident in our page tables, if they are in the page
 * cache: never read from disk for it. A read's first touch of a mapped page
 * costs a page fault (and, under a hypervisor with shadow paging, a trap to
 * the host) that can cost far more than the read itself: doing it here, a
 * slice per tick, keeps it off the requests. */
static void warm_range(const uint8_t *map, size_t from, size_t to)
{
	unsigned char vec[WARM_SLICE / 4096];
	size_t pages = (to - from + 4095) / 4096;
	if (to <= from || pages > sizeof vec || mincore((void *)(map + from), to - from, vec) != 0)
		return;
	size_t resident = 0;
	for (size_t i = 0; i < pages; i++)
		resident += vec[i] & 1;
#ifdef MADV_POPULATE_READ
	if (resident == pages) /* page tables filled in one call */
		(void)madvise((void *)(map + from), to - from, MADV_POPULATE_READ);
#endif
	volatile uint8_t sink = 0;
	for (size_t i = 0; i < pages; i++)
		if (vec[i] & 1)
			sink ^= map[from + i * 4096];
	(void)sink;
}

static int warm_later(kv_engine *e, const uint8_t *map, size_t from, size_t to);

/* Warm up [from, end) of map, page aligned, a part per tick: WARM_BG
 * handed to the reaper thread while fewer than WARM_BG_QUEUED ranges wait
 * there (a burst of writes of 100+ MB/s outruns WARM_SLICE per 10 ms
 * tick, and each page left cold costs a request a fault); WARM_SLICE in
 * the loop when there is no thread. Returns how far it got: from when
 * the thread's queue is full (try again next tick). */
static size_t warm_some(kv_engine *e, const uint8_t *map, size_t from, size_t end)
{
	size_t to = end - from > WARM_BG ? from + WARM_BG : end;
	int r = warm_later(e, map, from, to);
	if (r > 0)
		return to;
	if (r == 0)
		return from;
	to = end - from > WARM_SLICE ? from + WARM_SLICE : end;
	warm_range(map, from, to);
	return to;
}

/* Warm-up of the mapped data, newest first: sealed segments (mapped at
 * open, or on demand later), then what the active segment has flushed.
 * One part (warm_some) per call. Returns 1 while more remains. */
static int warm_step(kv_engine *e)
{
	for (size_t i = e->nsegs; i-- > 0;) {
		struct seg *s = e->segs[i];
		if (s->active || !s->map || s->warmed >= s->maplen)
			continue;
		s->warmed = warm_some(e, s->map, s->warmed, s->maplen);
		return 1;
	}
	uint64_t end = e->wbuf_off & ~(uint64_t)4095; /* whole pages in the file */
	if (e->amap && e->awarmed < end && end <= e->amaplen) {
		e->awarmed = warm_some(e, e->amap, (size_t)e->awarmed, (size_t)end);
		return e->awarmed < end;
	}
	return 0;
}

/* Free one removed file's blocks from the end, REAP_SLICE at a time, then
 * unlink it. Runs in the reaper thread, so it calls the system directly,
 * not through the kv_sys seam (whose fault injection belongs to the loop's
 * durable writes): nothing here is needed for durability, a failure
 * leaves a file that the next open queues again. */
static void reap_file(kv_engine *e, const char *path)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		struct stat st;
		off_t sz = fstat(fd, &st) == 0 ? st.st_size : 0;
		while (sz > 0) {
			/* a stop leaves the rest for the next open, at once */
			if (__atomic_load_n(&e->reap_stop, __ATOMIC_RELAXED)) {
				close(fd);
				return;
			}
			sz = sz > (off_t)REAP_SLICE ? sz - (off_t)REAP_SLICE : 0;
			if (ftruncate(fd, sz) != 0)
				break;
		}
		close(fd);
	}
	unlink(path);
}

/* Make the pages of [map, map + len) that are in the page cache present
 * in our page tables, in the reaper thread (warm_step), and read a byte
 * of each: under a hypervisor with shadow paging the first access from
 * user space still traps to the host after madvise() filled the guest's
 * page table (measured: GETs right after a burst of puts had a p99 of
 * 5.2-7.2 ms with madvise alone, as without warming, and 1.5-2.4 ms, as
 * in the next run, with the reads). Pages not in the page cache are skipped:
 * nothing is read from disk. The reads are safe because the range stays
 * mapped and inside its file meanwhile: a mapping is unmapped by this
 * thread (queued after this range), by free_engine() after reaper_stop(),
 * or, when a queue push fails, by unmap_later() after warm_cancel(); and
 * the file of a live segment never shrinks below what was warmed, while
 * a removed one is truncated by this thread, after every range queued
 * while it was live. */
static void warm_bg(const uint8_t *map, size_t len)
{
#ifdef MADV_POPULATE_READ
	unsigned char vec[256];
	for (size_t off = 0; off < len; off += sizeof vec * 4096) {
		size_t n = len - off < sizeof vec * 4096 ? len - off : sizeof vec * 4096;
		size_t pages = (n + 4095) / 4096;
		if (mincore((void *)(map + off), n, vec) != 0)
			return;
		for (size_t i = 0; i < pages;) {
			size_t j = i;
			while (j < pages && (vec[j] & 1))
				j++;
			if (j > i && madvise((void *)(map + off + i * 4096), (j - i) * 4096,
					     MADV_POPULATE_READ) == 0) {
				volatile uint8_t sink = 0;
				for (size_t k = i; k < j; k++)
					sink ^= map[off + k * 4096];
				(void)sink;
			}
			i = j + 1;
		}
	}
#else
	(void)map;
	(void)len;
#endif
}

/* One job of the reaper thread: a removed file to free (path, owned), a
 * mapping to unmap (path NULL), or a range of one to warm up (warm). */
struct reap_item {
	char *path;
	void *map;
	size_t len;
	int warm;
};

static void reap_do(kv_engine *e, struct reap_item *it)
{
	if (it->path)
		reap_file(e, it->path);
	else if (it->warm)
		warm_bg(it->map, it->len);
	else
		munmap(it->map, it->len);
	free(it->path);
}

static void *reaper_main(void *arg)
{
	kv_engine *e = arg;
	/* housekeeping yields the CPU to the loop, as the merge worker does;
	 * on Linux nice is per thread. Failure only means it competes more. */
	(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
	pthread_mutex_lock(&e->reap_mu);
	for (;;) {
		while (!e->reap_stop && e->nreap == 0)
			pthread_cond_wait(&e->reap_cv, &e->reap_mu);
		if (e->reap_stop)
			break;
		struct reap_item it = e->reap[0];
		memmove(&e->reap[0], &e->reap[1], (e->nreap - 1) * sizeof *e->reap);
		e->nreap--;
		e->reap_busy = 1;
		pthread_mutex_unlock(&e->reap_mu);
		reap_do(e, &it);
		pthread_mutex_lock(&e->reap_mu);
		e->reap_busy = 0;
		if (it.warm) {
			e->nwarm--;
			pthread_cond_broadcast(&e->warm_cv);
		}
	}
	pthread_mutex_unlock(&e->reap_mu);
	return NULL;
}

/* Room for one more element of size elem in a list of n: grows it
 * (doubling, from 16) when full. 1, or 0 when out of memory. */
static int list_room(void *listp, size_t n, size_t *cap, size_t elem)
{
	void **list = listp;
	if (n < *cap)
		return 1;
	size_t nc = *cap ? *cap * 2 : 16;
	void *na = realloc(*list, nc * elem);
	if (!na)
		return 0;
	*list = na;
	*cap = nc;
	return 1;
}

/* Hand one job to the reaper thread (started on first use, with every
 * signal blocked). 1 when queued; 0 without memory or a thread, and the
 * caller does the work itself, at once. Loop thread only. */
static int reap_queue(kv_engine *e, struct reap_item it)
{
	int queued = 0;
	if (!e->reaper_on) {
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		e->reaper_on = pthread_create(&e->reaper, NULL, reaper_main, e) == 0;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (!e->reaper_on)
			return 0;
	}
	pthread_mutex_lock(&e->reap_mu);
	if (list_room(&e->reap, e->nreap, &e->capreap, sizeof *e->reap)) {
		e->reap[e->nreap++] = it;
		e->nwarm += it.warm ? 1 : 0;
		queued = 1;
		pthread_cond_signal(&e->reap_cv);
	}
	pthread_mutex_unlock(&e->reap_mu);
	return queued;
}

/* Queue a renamed file for the reaper; path is copied. Without memory or
 * a thread the file is unlinked here at once, the old, slower way. */
static void reap_push(kv_engine *e, const char *path)
{
	struct reap_item it = {strdup(path), NULL, 0, 0};
	if (!it.path || !reap_queue(e, it)) {
		kv_unlink(path);
		free(it.path);
	}
}

/* Drop the warm-up ranges still queued and wait for the one in hand (a
 * few ms at most): after it, no thread reads a data mapping. Loop only. */
static void warm_cancel(kv_engine *e)
{
	pthread_mutex_lock(&e->reap_mu);
	size_t k = 0;
	for (size_t i = 0; i < e->nreap; i++) {
		if (e->reap[i].warm)
			e->nwarm--;
		else
			e->reap[k++] = e->reap[i];
	}
	e->nreap = k;
	while (e->nwarm > 0)
		pthread_cond_wait(&e->warm_cv, &e->reap_mu);
	pthread_mutex_unlock(&e->reap_mu);
}

/* Unmap [map, map + len), which nothing refers to any more, in the reaper
 * thread (invariant 8); here at once if it cannot be queued. */
static void unmap_later(kv_engine *e, void *map, size_t len)
{
	struct reap_item it = {NULL, map, len, 0};
	if (!reap_queue(e, it)) {
		warm_cancel(e);
		munmap(map, len);
	}
}

/* Queue [map + from, map + to) for warm_bg() in the reaper thread: 1;
 * 0 when WARM_BG_QUEUED ranges wait there already; -1 without memory or
 * a thread (the caller warms in the loop). */
static int warm_later(kv_engine *e, const uint8_t *map, size_t from, size_t to)
{
	pthread_mutex_lock(&e->reap_mu);
	int full = e->reaper_on && e->nwarm >= WARM_BG_QUEUED;
	pthread_mutex_unlock(&e->reap_mu);
	if (full)
		return 0;
	struct reap_item it = {NULL, (void *)(map + from), to - from, 1};
	return reap_queue(e, it) ? 1 : -1;
}

/* Remove a file of the store (invariant 8): rename it to `to`; the
 * reaper gets it after the next directory fsync (kv_eng_reap_release), so
 * its blocks are never freed before the rename is durable: a power cut
 * could otherwise bring the name back over a truncated file. If the
 * rename fails, unlink it at once. */
static void retire_file(kv_engine *e, const char *from, const char *to)
{
	if (kv_rename(from, to) != 0) {
		kv_unlink(from);
		return;
	}
	char *p = NULL;
	if (list_room(&e->retired, e->nretired, &e->capretired, sizeof *e->retired) &&
	    (p = strdup(to)) != NULL)
		e->retired[e->nretired++] = p;
	/* else: left as a .dseg/.dhint for the next open */
}

void kv_eng_reap_release(kv_engine *e)
{
	for (size_t i = 0; i < e->nretired; i++) {
		reap_push(e, e->retired[i]);
		free(e->retired[i]);
	}
	e->nretired = 0;
}

/* Stop the reaper: it stops after the ftruncate in hand (one 8 MiB
 * slice); the file in hand and the queued ones stay on disk for the next
 * open. Queued mappings are unmapped here. */
static void reaper_stop(kv_engine *e)
{
	if (e->reaper_on) {
		pthread_mutex_lock(&e->reap_mu);
		__atomic_store_n(&e->reap_stop, 1, __ATOMIC_RELAXED);
		pthread_cond_signal(&e->reap_cv);
		pthread_mutex_unlock(&e->reap_mu);
		pthread_join(e->reaper, NULL);
		e->reaper_on = 0;
	}
	for (size_t i = 0; i < e->nreap; i++) {
		if (!e->reap[i].path && !e->reap[i].warm)
			munmap(e->reap[i].map, e->reap[i].len);
		free(e->reap[i].path);
	}
	free(e->reap);
	e->reap = NULL;
	e->nreap = e->capreap = 0;
	e->nwarm = 0;
	for (size_t i = 0; i < e->nretired; i++)
		free(e->retired[i]);
	free(e->retired);
	e->retired = NULL;
	e->nretired = e->capretired = 0;
}

int kv_engine_reap_pending(kv_engine *e)
{
	pthread_mutex_lock(&e->reap_mu);
	int n = (int)e->nreap + e->reap_busy;
	pthread_mutex_unlock(&e->reap_mu);
	return n;
}

int kv_engine_tick(kv_engine *e)
{
	int more = kv_keydir_step(e->kd, 4096);
	more |= hint_step(e, HINT_SLICE);
	more |= warm_step(e);
	return kv_engine_merge_step(e, 512) > 0 || more;
}

/* --- recovery ---------------------------------------------------------------------------------------- */

/* Replay one record or hint entry into the keydir (invariant 1). */
static int replay(kv_engine *e, struct seg *s, int tomb, const uint8_t *key, uint32_t klen,
		  uint32_t off, uint32_t size, uint32_t expiry, uint64_t seq)
{
	struct kv_loc old;
	if (seq > e->seq)
		e->seq = seq;
	if (tomb) {
		if (kv_keydir_del(e->kd, key, klen, &old))
			kv_eng_account_replace(e, &old);
		return 0;
	}
	struct kv_loc loc = {s->id, off, size, expiry};
	int rc = kv_keydir_put(e->kd, key, klen, &loc, &old);
	if (rc < 0)
		return rc;
	if (rc == 1)
		kv_eng_account_replace(e, &old);
	s->live += size;
	return 0;
}

struct replay_ctx {
	kv_engine *e;
	struct seg *s;
};

static int replay_rec(void *arg, uint32_t off, const struct kv_rec *r)
{
	struct replay_ctx *c = arg;
	if (r->type == KV_REC_COMMIT)
		return 0;
	return replay(c->e, c->s, r->type == KV_REC_DEL, r->key, r->klen, off, r->size, r->expiry,
		      r->seq);
}

static int replay_hint(void *arg, const struct kv_hint_ent *h)
{
	struct replay_ctx *c = arg;
	if ((uint64_t)h->off + h->size > c->s->size || h->off < KV_SEG_HDR)
		return KV_ECORRUPT;
	if (h->next_key)
		kv_keydir_prefetch(c->e->kd, h->next_key, h->next_klen);
	return replay(c->e, c->s, h->flags & KV_HF_TOMBSTONE, h->key, h->klen, h->off, h->size,
		      h->expiry, h->seq);
}

static int load_hint(kv_engine *e, struct seg *s)
{
	char path[PATH_MAX];
	uint8_t *map;
	size_t len;
	kv_seg_path(path, sizeof path, e->dir, s->id, "hint");
	int rc = kv_map_file(path, &map, &len);
	if (rc)
		return rc;
	struct replay_ctx c = {e, s};
	rc = kv_hint_parse(map, len, s->id, replay_hint, &c);
	if (map)
		munmap(map, len);
	return rc;
}

/* Check a segment's header. 0, KV_ECORRUPT, KV_EVERSION or -errno. */
static int check_header(struct seg *s, char *err, size_t errlen, const char *path)
{
	uint32_t id, version;
	if (s->maplen < KV_SEG_HDR) {
		seterr(err, errlen, "%s: shorter than a segment header", path);
		return KV_ECORRUPT;
	}
	int rc = kv_seg_hdr_decode(s->map, &id, &version);
	if (rc == KV_EVERSION) {
		seterr(err, errlen, "%s: format version %u is not supported (this kvd reads %u)",
		       path, version, KV_FORMAT_VERSION);
		return rc;
	}
	if (rc || id != s->id) {
		seterr(err, errlen, "%s: bad segment header", path);
		return KV_ECORRUPT;
	}
	return 0;
}

/* Load segment s: hint when it checks, else a scan. newest: a torn tail is
 * cut (and fsynced); otherwise an invalid record is corruption. */
static int all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

static int load_segment(kv_engine *e, struct seg *s, int newest, int *remove, char *err,
			size_t errlen)
{
	char path[PATH_MAX];
	struct kv_scan_result res;
	int rc;
	*remove = 0;
	kv_seg_path(path, sizeof path, e->dir, s->id, "seg");
	if ((rc = kv_eng_seg_map(e, s)) != 0) {
		seterr(err, errlen, "%s: %s", path, kv_strerror(rc));
		return rc;
	}
	s->size = s->maplen;
	rc = check_header(s, err, errlen, path);
	if (rc == KV_ECORRUPT && newest && s->maplen < KV_SEG_HDR + KV_REC_HDR) {
		/* created but its header never completed: a crash at rotation */
		kv_eng_log(e, KV_LOG_WARN, "%s: torn segment header, removing the empty segment", path);
		*remove = 1;
		return 0;
	}
	if (rc)
		return rc;
	if (s->has_hint) {
		rc = load_hint(e, s);
		if (rc == 0)
			return 0;
		kv_eng_log(e, KV_LOG_WARN, "segment %u: hint file unusable (%s), scanning the segment",
		     s->id, kv_strerror(rc));
		s->has_hint = 0;
		if (rc != KV_ECORRUPT && rc != -ENOENT)
			return rc;
		/* a corrupt hint passed nothing to the keydir: scan cleanly */
	}
	struct replay_ctx c = {e, s};
	rc = kv_seg_scan(s->map, s->maplen, e->opt.repair && !newest, replay_rec, &c, &res);
	if (rc) {
		seterr(err, errlen, "%s: %s", path, kv_strerror(rc));
		return rc;
	}
	if (res.max_seq > e->seq)
		e->seq = res.max_seq;
	if (res.bad && newest) {
		uint64_t cut = s->maplen - res.valid_end;
		if (all_zero(s->map + res.valid_end, (size_t)cut))
			kv_eng_log(e, KV_LOG_INFO,
			     "%s: cut %llu bytes of preallocated space after offset %llu", path,
			     (unsigned long long)cut, (unsigned long long)res.valid_end);
		else
			kv_eng_log(e, KV_LOG_WARN,
			     "%s: torn tail: cut %llu bytes after offset %llu (crash during a write)",
			     path, (unsigned long long)cut, (unsigned long long)res.valid_end);
		kv_eng_seg_unmap(e, s);
		int fd = kv_open(path, O_RDWR, 0);
		if (fd < 0)
			return fd;
		rc = kv_ftruncate(fd, (off_t)res.valid_end);
		if (!rc)
			rc = kv_fsync(fd);
		kv_close(fd);
		if (rc) {
			seterr(err, errlen, "%s: cannot cut the torn tail: %s", path, kv_strerror(rc));
			return rc;
		}
		s->size = res.valid_end;
	} else if (res.bad && !e->opt.repair) {
		seterr(err, errlen,
		       "%s: corrupt record at offset %llu (a sealed segment); start with --repair "
		       "to keep every record that checks and drop the rest",
		       path, (unsigned long long)res.bad_off);
		return KV_ECORRUPT;
	} else if (res.bad) {
		kv_eng_log(e, KV_LOG_WARN, "%s: repair dropped %llu bytes starting at offset %llu", path,
		     (unsigned long long)res.dropped, (unsigned long long)res.bad_off);
	}
	if (res.records == 0) {
		*remove = 1; /* holds nothing */
		return 0;
	}
	/* sealed from now on: give it a hint file for the next start */
	if ((rc = write_hint(e, s, e->opt.repair && !newest)) != 0)
		kv_eng_log(e, KV_LOG_WARN, "segment %u: cannot write its hint file: %s", s->id,
		     kv_strerror(rc));
	return 0;
}

/* Sum of the entry counts in the hint files' trailers (an upper bound of
 * the keys they hold); read without checking: it only sizes the keydir. */
static size_t hint_entries(kv_engine *e)
{
	char path[PATH_MAX];
	uint8_t trl[KV_HINT_TRL];
	size_t total = 0;
	for (size_t i = 0; i < e->nsegs; i++) {
		if (!e->segs[i]->has_hint)
			continue;
		kv_seg_path(path, sizeof path, e->dir, e->segs[i]->id, "hint");
		int fd = kv_open(path, O_RDONLY, 0);
		if (fd < 0)
			continue;
		struct stat st;
		if (fstat(fd, &st) == 0 && st.st_size >= (off_t)(KV_HINT_HDR + KV_HINT_TRL) &&
		    kv_pread_all(fd, trl, sizeof trl, st.st_size - (off_t)KV_HINT_TRL) == 0) {
			uint64_t n = kv_get64(trl);
			if (n <= (uint64_t)st.st_size / KV_HINT_ENT)
				total += (size_t)n;
		}
		kv_close(fd);
	}
	return total;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* List segment ids (sorted), note hint files, remove temp files. */
static int scan_dir(kv_engine *e, uint32_t **ids_out, size_t *n_out, uint32_t **hints_out,
		    size_t *nh_out)
{
	DIR *d = opendir(e->dir);
	uint32_t *ids = NULL, *hints = NULL;
	size_t n = 0, cap = 0, nh = 0, caph = 0;
	int rc = 0, removed = 0;
	struct dirent *de;
	if (!d)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		const char *name = de->d_name;
		size_t len = strlen(name);
		char path[PATH_MAX];
		if (len > 4 && strcmp(name + len - 4, ".tmp") == 0) {
			snprintf(path, sizeof path, "%s/%s", e->dir, name);
			kv_eng_log(e, KV_LOG_INFO, "removing leftover temp file %s", path);
			kv_unlink(path);
			removed = 1;
			continue;
		}
		unsigned id;
		char ext[8];
		int used = 0;
		if (sscanf(name, "%10u.%5[a-z]%n", &id, ext, &used) != 2 || (size_t)used != len ||
		    len != 10 + 1 + strlen(ext))
			continue;
		uint32_t **arr = NULL;
		size_t *cnt = NULL, *cp = NULL;
		if (strcmp(ext, "seg") == 0) {
			arr = &ids;
			cnt = &n;
			cp = &cap;
		} else if (strcmp(ext, "hint") == 0) {
			arr = &hints;
			cnt = &nh;
			cp = &caph;
		} else if (strcmp(ext, "dseg") == 0 || strcmp(ext, "dhint") == 0) {
			/* removed before a stop or crash (invariant 8): never read */
			snprintf(path, sizeof path, "%s/%s", e->dir, name);
			kv_eng_log(e, KV_LOG_INFO, "finishing the removal of %s", path);
			retire_file(e, path, path); /* a rename onto itself: queued */
			continue;
		} else {
			continue;
		}
		if (*cnt == *cp) {
			size_t nc = *cp ? *cp * 2 : 64;
			uint32_t *na = realloc(*arr, nc * sizeof *na);
			if (!na) {
				rc = -ENOMEM;
				goto out;
			}
			*arr = na;
			*cp = nc;
		}
		(*arr)[(*cnt)++] = id;
	}
	if (n)
		qsort(ids, n, sizeof *ids, cmp_u32);
	if (nh)
		qsort(hints, nh, sizeof *hints, cmp_u32);
	if (removed)
		rc = kv_fsync_dir(e->dir);
out:
	closedir(d);
	if (rc) {
		free(ids);
		free(hints);
		return rc;
	}
	*ids_out = ids;
	*n_out = n;
	*hints_out = hints;
	*nh_out = nh;
	return 0;
}

static int take_lock(kv_engine *e, char *err, size_t errlen)
{
	char path[PATH_MAX], pidbuf[32];
	snprintf(path, sizeof path, "%s/LOCK", e->dir);
	int fd = kv_open(path, O_RDWR | O_CREAT, 0640);
	if (fd < 0) {
		seterr(err, errlen, "%s: %s", path, kv_strerror(fd));
		return fd;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int rc = errno == EWOULDBLOCK ? KV_ELOCKED : -errno;
		ssize_t r = pread(fd, pidbuf, sizeof pidbuf - 1, 0);
		pidbuf[r > 0 ? r : 0] = 0;
		if (rc == KV_ELOCKED)
			seterr(err, errlen, "data directory %s is locked by pid %ld", e->dir,
			       strtol(pidbuf, NULL, 10));
		else
			seterr(err, errlen, "%s: flock: %s", path, kv_strerror(rc));
		kv_close(fd);
		return rc;
	}
	int len = snprintf(pidbuf, sizeof pidbuf, "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pidbuf, (size_t)len, 0) != len) {
		int rc = -errno;
		seterr(err, errlen, "%s: cannot record our pid: %s", path, kv_strerror(rc));
		kv_close(fd);
		return rc;
	}
	e->lock_fd = fd;
	return 0;
}

/* mkdir dir if missing, fsyncing its parent so the new name is durable. */
static int make_dir(const char *dir)
{
	if (mkdir(dir, 0750) == 0) {
		char parent[PATH_MAX];
		snprintf(parent, sizeof parent, "%s", dir);
		char *slash = strrchr(parent, '/');
		if (slash == parent)
			slash[1] = 0;
		else if (slash)
			*slash = 0;
		else
			snprintf(parent, sizeof parent, ".");
		return kv_fsync_dir(parent);
	}
	return errno == EEXIST ? 0 : -errno;
}

static void free_engine(kv_engine *e)
{
	hint_job_end(e, 0);
	reaper_stop(e); /* before any munmap: it may be reading a mapping (warm_bg) */
	for (size_t i = 0; i < e->nsegs; i++) {
		if (e->segs[i]->map)
			munmap(e->segs[i]->map, e->segs[i]->mapres ? e->segs[i]->mapres
								   : e->segs[i]->maplen);
		free(e->segs[i]);
	}
	free(e->segs);
	unmap_active(e);
	if (e->active_fd >= 0)
		kv_close(e->active_fd);
	if (e->lock_fd >= 0)
		kv_close(e->lock_fd);
	kv_keydir_free(e->kd);
	pthread_cond_destroy(&e->reap_cv);
	pthread_cond_destroy(&e->warm_cv);
	pthread_mutex_destroy(&e->reap_mu);
	free(e->wbuf);
	free(e->dir);
	free(e);
}

void kv_eng_seg_remove(kv_engine *e, struct seg *s)
{
	char path[PATH_MAX];
	size_t idx = 0;
	while (idx < e->nsegs && e->segs[idx] != s)
		idx++;
	assert(idx < e->nsegs);
	if (e->hseg == s)
		hint_job_end(e, 0);
	kv_eng_seg_unmap(e, s);
	char to[PATH_MAX];
	kv_seg_path(path, sizeof path, e->dir, s->id, "hint");
	kv_seg_path(to, sizeof to, e->dir, s->id, "dhint");
	retire_file(e, path, to);
	kv_seg_path(path, sizeof path, e->dir, s->id, "seg");
	kv_seg_path(to, sizeof to, e->dir, s->id, "dseg");
	retire_file(e, path, to);
	memmove(&e->segs[idx], &e->segs[idx + 1], (e->nsegs - idx - 1) * sizeof *e->segs);
	e->nsegs--;
	free(s);
	e->dir_dirty = 1;
}

int kv_engine_open(const char *dir, const struct kv_options *opt, kv_engine **out, char *err,
		   size_t errlen)
{
	uint32_t *ids = NULL, *hints = NULL;
	size_t n = 0, nh = 0;
	int rc;
	kv_engine *e = calloc(1, sizeof *e);
	if (!e)
		return -ENOMEM;
	e->lock_fd = -1;
	e->active_fd = -1;
	pthread_mutex_init(&e->reap_mu, NULL);
	pthread_cond_init(&e->reap_cv, NULL);
	pthread_cond_init(&e->warm_cv, NULL);
	if (opt)
		e->opt = *opt;
	else
		kv_options_init(&e->opt);
	if (e->opt.max_segment_size < 4096)
		e->opt.max_segment_size = 4096;
	if (e->opt.max_segment_size > UINT32_MAX)
		e->opt.max_segment_size = UINT32_MAX;
	if (e->opt.max_mapped_segments < 4)
		e->opt.max_mapped_segments = 4;
	e->dir = strdup(dir);
	e->kd = kv_keydir_new();
	if (!e->dir || !e->kd) {
		rc = -ENOMEM;
		goto out;
	}
	if ((rc = make_dir(dir)) != 0) {
		seterr(err, errlen, "cannot create data directory %s: %s", dir, kv_strerror(rc));
		goto out;
	}
	if ((rc = take_lock(e, err, errlen)) != 0)
		goto out;
	if ((rc = scan_dir(e, &ids, &n, &hints, &nh)) != 0) {
		seterr(err, errlen, "cannot list %s: %s", dir, kv_strerror(rc));
		goto out;
	}
	for (size_t i = 0, h = 0; i < n; i++) {
		struct seg *s = calloc(1, sizeof *s);
		if (!s) {
			rc = -ENOMEM;
			goto out;
		}
		s->id = ids[i];
		while (h < nh && hints[h] < ids[i])
			h++;
		s->has_hint = h < nh && hints[h] == ids[i];
		if ((rc = kv_eng_seg_add(e, s)) != 0) {
			free(s);
			goto out;
		}
	}
	/* size the keydir once from the hint files' entry counts, pre-faulted
	 * while loading (page faults are a large part of a start) */
	kv_keydir_populate(e->kd, 1);
	kv_keydir_reserve(e->kd, hint_entries(e));
	/* replay in id order (invariant 1) */
	for (size_t i = 0; i < e->nsegs;) {
		int remove;
		int newest = i == e->nsegs - 1;
		rc = load_segment(e, e->segs[i], newest, &remove, err, errlen);
		if (rc)
			goto out;
		if (remove)
			kv_eng_seg_remove(e, e->segs[i]);
		else
			i++;
	}
	kv_keydir_populate(e->kd, 0);
	/* Sealed segments stay mapped (at most max_mapped_segments, the
	 * newest): kv_engine_tick() warms them up (warm_step). */
	uint32_t next = e->nsegs ? e->segs[e->nsegs - 1]->id + 1 : 1;
	if ((rc = open_active(e, next)) != 0) { /* invariant 3 */
		seterr(err, errlen, "cannot create segment %u in %s: %s", next, dir, kv_strerror(rc));
		goto out;
	}
	e->dir_dirty = 0; /* kv_seg_create fsynced the directory */
	kv_eng_reap_release(e);
	if (e->seq) {
		struct kv_keydir_stats ks;
		kv_keydir_stats(e->kd, &ks);
		kv_eng_log(e, KV_LOG_INFO, "opened %s: %zu segments, %llu keys, last sequence %llu", dir,
		     e->nsegs, (unsigned long long)ks.keys, (unsigned long long)e->seq);
	}
out:
	free(ids);
	free(hints);
	if (rc) {
		if (err && errlen && !err[0])
			seterr(err, errlen, "%s: %s", dir, kv_strerror(rc));
		free_engine(e);
		return rc;
	}
	*out = e;
	return 0;
}

int kv_engine_close(kv_engine *e)
{
	if (!e)
		return 0;
	kv_merge_abandon(e);
	int rc = 0;
	if (!e->failed && (rc = kv_engine_flush(e)) == 0 && (rc = trim_active(e)) == 0)
		rc = sync_active(e, 0);
	/* hint_on_close: the active segment is complete and durable now, and
	 * the next open seals it (invariant 3): give it its hint file too, so
	 * the next start reads hints instead of scanning it. */
	if (e->opt.hint_on_close && rc == 0 && !e->failed && e->active &&
	    e->active->size > KV_SEG_HDR) {
		e->active->active = 0;
		e->active->hint_wanted = 1;
	}
	while (hint_step(e, SIZE_MAX)) /* finish the hint files: a fast next start */
		;
	free_engine(e);
	return rc;
}
