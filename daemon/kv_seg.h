/*
 * kv_seg.h — segment and hint files: naming, creation, mapping, checked
 * scanning (with batch grouping), and durable hint files. No keydir here:
 * callers decide what a record means.
 *
 * Invariants:
 *  1. A scan reports a record only after its CRC checked, and reports the
 *     records of a batch only once the batch's COMMIT record checked, with
 *     the right count; an unfinished batch is part of the invalid tail.
 *  2. A hint file exists only complete: written to NAME.tmp, fsynced,
 *     renamed, then the directory fsynced (kv_hint_write).
 */
#ifndef KV_SEG_H
#define KV_SEG_H

#include "kv_format.h"

#include <stddef.h>
#include <stdint.h>

/* "<dir>/<10-digit id>.<ext>" into buf (PATH_MAX). */
void kv_seg_path(char *buf, size_t n, const char *dir, uint32_t id, const char *ext);

/* Create a new segment file (O_EXCL), write and fsync its header, fsync dir.
 * Returns an O_RDWR fd or -errno. */
int kv_seg_create(const char *dir, uint32_t id, uint64_t created);

/* Map a whole file read-only. *map and *len owned by the caller (munmap).
 * An empty file gives *map = NULL, *len = 0. 0 or -errno. */
int kv_map_file(const char *path, uint8_t **map, size_t *len);

typedef int (*kv_scan_cb)(void *arg, uint32_t off, const struct kv_rec *r);

struct kv_scan_result {
	uint64_t valid_end; /* end of the last whole, committed record */
	int bad;            /* 1: scanning stopped at an invalid record at bad_off */
	uint64_t bad_off;
	uint64_t dropped;   /* repair: bytes skipped */
	uint64_t records;
	uint64_t max_seq;
};

/*
 * Scan the records of a mapped segment (data includes the header). cb gets
 * every committed record in file order; a non-zero return stops the scan
 * and is returned. Without repair the scan stops at the first invalid
 * record (res->bad); with repair it skips to the next record that checks
 * and counts what it skipped. Returns 0 or cb's value.
 */
int kv_seg_scan(const uint8_t *data, size_t len, int repair, kv_scan_cb cb, void *arg,
		struct kv_scan_result *res);

/* One entry of a hint file. key points into the mapped file. */
struct kv_hint_ent {
	uint64_t seq;
	uint32_t expiry;
	uint32_t klen;
	uint8_t flags; /* KV_HF_TOMBSTONE */
	uint32_t off;
	uint32_t size;
	const uint8_t *key;
	const uint8_t *next_key; /* the following entry's key (NULL at the end): */
	uint32_t next_klen;      /* lets a loader prefetch its hash bucket */
};

/* Parse a mapped hint file of segment seg_id. Returns 0, KV_ECORRUPT (bad
 * size, CRC, magic, id, or an entry out of bounds; nothing was passed to cb)
 * or cb's non-zero value. The whole file is checked before cb is called. */
int kv_hint_parse(const uint8_t *data, size_t len, uint32_t seg_id,
		  int (*cb)(void *arg, const struct kv_hint_ent *h), void *arg);

/* Growable encoder for a hint file. */
struct kv_hint_buf {
	uint8_t *data;
	size_t len, cap;
	uint64_t count;
};
int kv_hint_begin(struct kv_hint_buf *hb, uint32_t seg_id);
int kv_hint_add(struct kv_hint_buf *hb, uint64_t seq, uint32_t expiry, const void *key,
		uint32_t klen, uint8_t flags, uint32_t off, uint32_t size);
/* Append the trailer and write <dir>/<id>.hint durably (invariant 2).
 * hb stays allocated (the caller may still read it); free it with
 * kv_hint_abort(). 0 or -errno. */
int kv_hint_commit(struct kv_hint_buf *hb, const char *dir, uint32_t seg_id);
void kv_hint_abort(struct kv_hint_buf *hb);

/*
 * A hint file written a little at a time (kvd builds the hint of a freshly
 * sealed segment in slices, between client requests): entries are
 * buffered and written to <dir>/<id>.hint.tmp with writeback started
 * early, so the final fsync in kv_hint_writer_commit() is short.
 * Same file format and durability recipe as kv_hint_commit().
 */
struct kv_hint_writer {
	int fd;
	uint32_t id;
	uint32_t crc;   /* CRC32C of everything written so far */
	uint64_t count; /* entries */
	uint64_t written, synced_to;
	struct kv_hint_buf buf;
	const char *dir; /* borrowed until commit or abort */
};
int kv_hint_writer_open(struct kv_hint_writer *w, const char *dir, uint32_t id);
int kv_hint_writer_add(struct kv_hint_writer *w, uint64_t seq, uint32_t expiry, const void *key,
		       uint32_t klen, uint8_t flags, uint32_t off, uint32_t size);
/* Trailer, fsync, rename, fsync dir. Releases w either way. 0 or -errno. */
int kv_hint_writer_commit(struct kv_hint_writer *w);
/* Close and remove the temp file. */
void kv_hint_writer_abort(struct kv_hint_writer *w);

#endif
