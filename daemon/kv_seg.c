/*
 * kv_seg.c — segment and hint files (see kv_seg.h).
 */
#include "kv_seg.h"

#include "kv_crc.h"
#include "kv_engine.h"
#include "kv_sys.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void kv_seg_path(char *buf, size_t n, const char *dir, uint32_t id, const char *ext)
{
	snprintf(buf, n, "%s/%010u.%s", dir, id, ext);
}

int kv_seg_create(const char *dir, uint32_t id, uint64_t created)
{
	char path[PATH_MAX];
	uint8_t hdr[KV_SEG_HDR];
	int rc;
	kv_seg_path(path, sizeof path, dir, id, "seg");
	int fd = kv_open(path, O_RDWR | O_CREAT | O_EXCL, 0640);
	if (fd < 0)
		return fd;
	kv_seg_hdr_encode(hdr, id, created);
	if ((rc = kv_write_all(fd, hdr, sizeof hdr)) != 0)
		goto out;
	if ((rc = kv_fsync(fd)) != 0)
		goto out;
	rc = kv_fsync_dir(dir);
out:
	if (rc) {
		kv_close(fd);
		kv_unlink(path);
		return rc;
	}
	return fd;
}

int kv_map_file(const char *path, uint8_t **map, size_t *len)
{
	struct stat st;
	int rc = 0;
	int fd = kv_open(path, O_RDONLY, 0);
	*map = NULL;
	*len = 0;
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if (st.st_size > 0) {
		void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED) {
			rc = -errno;
			goto out;
		}
		*map = m;
		*len = (size_t)st.st_size;
	}
out:
	kv_close(fd);
	return rc;
}

/* --- scanning ---------------------------------------------------------------------- */

struct pending {
	struct kv_rec *r;
	uint32_t *off;
	size_t n, cap;
};

static int pending_push(struct pending *p, uint32_t off, const struct kv_rec *r)
{
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		struct kv_rec *nr = realloc(p->r, cap * sizeof *nr);
		if (!nr)
			return -ENOMEM;
		p->r = nr;
		uint32_t *no = realloc(p->off, cap * sizeof *no);
		if (!no)
			return -ENOMEM;
		p->off = no;
		p->cap = cap;
	}
	p->r[p->n] = *r;
	p->off[p->n++] = off;
	return 0;
}

int kv_seg_scan(const uint8_t *data, size_t len, int repair, kv_scan_cb cb, void *arg,
		struct kv_scan_result *res)
{
	struct pending pb = {0};
	uint64_t off = KV_SEG_HDR;
	int rc = 0;
	memset(res, 0, sizeof *res);
	res->valid_end = len < KV_SEG_HDR ? len : KV_SEG_HDR;
	while (off < len) {
		struct kv_rec r;
		int d = kv_rec_decode(data + off, len - off, &r);
		int ok = d == KV_DEC_OK;
		if (ok && r.type == KV_REC_COMMIT) {
			ok = r.klen == 4 && kv_get32(r.key) == pb.n && pb.n > 0;
		} else if (ok && !(r.flags & KV_RF_BATCH) && pb.n > 0) {
			ok = 0; /* a batch interrupted by a plain record */
		}
		if (!ok) {
			uint64_t bad_at = pb.n ? pb.off[0] : off;
			pb.n = 0;
			if (!repair) {
				res->bad = 1;
				res->bad_off = bad_at;
				break;
			}
			/* repair: resynchronise on the next record that checks */
			uint64_t o = off + 1;
			for (; o + KV_REC_HDR <= len; o++) {
				struct kv_rec t;
				if (kv_rec_decode(data + o, len - o, &t) == KV_DEC_OK &&
				    t.type != KV_REC_COMMIT && !(t.flags & KV_RF_BATCH))
					break;
			}
			if (o + KV_REC_HDR > len)
				o = len;
			res->dropped += o - bad_at;
			if (!res->bad) {
				res->bad = 1;
				res->bad_off = bad_at;
			}
			off = o;
			continue;
		}
		if (r.seq > res->max_seq)
			res->max_seq = r.seq;
		if (r.flags & KV_RF_BATCH) {
			if ((rc = pending_push(&pb, (uint32_t)off, &r)) != 0)
				goto out;
		} else if (r.type == KV_REC_COMMIT) {
			for (size_t i = 0; i < pb.n; i++) {
				res->records++;
				if ((rc = cb(arg, pb.off[i], &pb.r[i])) != 0)
					goto out;
			}
			pb.n = 0;
			res->valid_end = off + r.size;
		} else {
			res->records++;
			if ((rc = cb(arg, (uint32_t)off, &r)) != 0)
				goto out;
			res->valid_end = off + r.size;
		}
		off += r.size;
	}
	if (pb.n > 0 && !res->bad) { /* a batch without its COMMIT: torn */
		res->bad = 1;
		res->bad_off = pb.off[0];
		if (repair)
			res->dropped += len - pb.off[0];
	}
out:
	free(pb.r);
	free(pb.off);
	return rc;
}

/* --- hint files ----------------------------------------------------------------------- */

int kv_hint_parse(const uint8_t *data, size_t len, uint32_t seg_id,
		  int (*cb)(void *arg, const struct kv_hint_ent *h), void *arg)
{
	if (!data || len < KV_HINT_HDR + KV_HINT_TRL)
		return KV_ECORRUPT;
	const uint8_t *trl = data + len - KV_HINT_TRL;
	if (kv_get32(trl + 12) != KV_HINT_END || kv_crc32c(0, data, len - 8) != kv_get32(trl + 8))
		return KV_ECORRUPT;
	if (memcmp(data, KV_HINT_MAGIC, 8) != 0 || kv_get32(data + 8) != KV_FORMAT_VERSION ||
	    kv_get32(data + 12) != seg_id)
		return KV_ECORRUPT;
	uint64_t count = kv_get64(trl);
	/* first pass: bounds only, so a bad file passes nothing to cb */
	size_t off = KV_HINT_HDR, end = len - KV_HINT_TRL;
	uint64_t n = 0;
	while (off < end) {
		if (end - off < KV_HINT_ENT)
			return KV_ECORRUPT;
		size_t klen = (size_t)kv_get16(data + off + 12) + 1u;
		if (end - off - KV_HINT_ENT < klen)
			return KV_ECORRUPT;
		off += KV_HINT_ENT + klen;
		n++;
	}
	if (n != count)
		return KV_ECORRUPT;
	for (off = KV_HINT_HDR; off < end;) {
		struct kv_hint_ent h;
		const uint8_t *p = data + off;
		h.seq = kv_get64(p);
		h.expiry = kv_get32(p + 8);
		h.klen = (uint32_t)kv_get16(p + 12) + 1u;
		h.flags = p[14];
		h.off = kv_get32(p + 16);
		h.size = kv_get32(p + 20);
		h.key = p + KV_HINT_ENT;
		size_t next = off + KV_HINT_ENT + h.klen; /* bounds checked by the first pass */
		h.next_key = next < end ? data + next + KV_HINT_ENT : NULL;
		h.next_klen = next < end ? (uint32_t)kv_get16(data + next + 12) + 1u : 0;
		int rc = cb(arg, &h);
		if (rc)
			return rc;
		off += KV_HINT_ENT + h.klen;
	}
	return 0;
}

static int hb_reserve(struct kv_hint_buf *hb, size_t more)
{
	if (hb->len + more <= hb->cap)
		return 0;
	size_t cap = hb->cap ? hb->cap : 65536;
	while (cap < hb->len + more)
		cap *= 2;
	uint8_t *d = realloc(hb->data, cap);
	if (!d)
		return -ENOMEM;
	hb->data = d;
	hb->cap = cap;
	return 0;
}

int kv_hint_begin(struct kv_hint_buf *hb, uint32_t seg_id)
{
	memset(hb, 0, sizeof *hb);
	if (hb_reserve(hb, KV_HINT_HDR))
		return -ENOMEM;
	kv_hint_hdr_encode(hb->data, seg_id);
	hb->len = KV_HINT_HDR;
	return 0;
}

int kv_hint_add(struct kv_hint_buf *hb, uint64_t seq, uint32_t expiry, const void *key,
		uint32_t klen, uint8_t flags, uint32_t off, uint32_t size)
{
	if (hb_reserve(hb, KV_HINT_ENT + klen))
		return -ENOMEM;
	kv_hint_ent_encode(hb->data + hb->len, seq, expiry, klen, flags, off, size, key);
	hb->len += KV_HINT_ENT + klen;
	hb->count++;
	return 0;
}

void kv_hint_abort(struct kv_hint_buf *hb)
{
	free(hb->data);
	memset(hb, 0, sizeof *hb);
}

int kv_hint_commit(struct kv_hint_buf *hb, const char *dir, uint32_t seg_id)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	int fd = -1, rc;
	if ((rc = hb_reserve(hb, KV_HINT_TRL)) != 0)
		goto out;
	uint8_t *trl = hb->data + hb->len;
	kv_put64(trl, hb->count);
	kv_put32(trl + 8, kv_crc32c(0, hb->data, hb->len + 8));
	kv_put32(trl + 12, KV_HINT_END);
	hb->len += KV_HINT_TRL;

	kv_seg_path(path, sizeof path, dir, seg_id, "hint");
	kv_seg_path(tmp, sizeof tmp, dir, seg_id, "hint.tmp");
	kv_unlink(tmp); /* a leftover of a crash */
	fd = kv_open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0640);
	if (fd < 0) {
		rc = fd;
		goto out;
	}
	if ((rc = kv_write_all(fd, hb->data, hb->len)) != 0)
		goto out;
	if ((rc = kv_fsync(fd)) != 0)
		goto out;
	rc = kv_close(fd);
	fd = -1;
	if (rc)
		goto out;
	if ((rc = kv_rename(tmp, path)) != 0)
		goto out;
	rc = kv_fsync_dir(dir);
out:
	if (fd >= 0)
		kv_close(fd);
	if (rc)
		kv_unlink(tmp);
	return rc;
}

/* --- streaming hint writer ----------------------------------------------------------------- */

#define HW_CHUNK (1u << 20)

static int hw_flush(struct kv_hint_writer *w)
{
	if (!w->buf.len)
		return 0;
	int rc = kv_write_all(w->fd, w->buf.data, w->buf.len);
	if (rc)
		return rc;
	w->crc = kv_crc32c(w->crc, w->buf.data, w->buf.len);
	w->written += w->buf.len;
	w->buf.len = 0;
	if (w->written - w->synced_to >= 8u * HW_CHUNK) { /* start writeback early */
		sync_file_range(w->fd, (off_t)w->synced_to, (off_t)(w->written - w->synced_to),
				SYNC_FILE_RANGE_WRITE);
		w->synced_to = w->written;
	}
	return 0;
}

int kv_hint_writer_open(struct kv_hint_writer *w, const char *dir, uint32_t id)
{
	char tmp[PATH_MAX];
	memset(w, 0, sizeof *w);
	w->fd = -1;
	w->dir = dir;
	w->id = id;
	kv_seg_path(tmp, sizeof tmp, dir, id, "hint.tmp");
	kv_unlink(tmp);
	int fd = kv_open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0640);
	if (fd < 0)
		return fd;
	w->fd = fd;
	int rc = kv_hint_begin(&w->buf, id);
	if (rc)
		kv_hint_writer_abort(w);
	return rc;
}

int kv_hint_writer_add(struct kv_hint_writer *w, uint64_t seq, uint32_t expiry, const void *key,
		       uint32_t klen, uint8_t flags, uint32_t off, uint32_t size)
{
	int rc = kv_hint_add(&w->buf, seq, expiry, key, klen, flags, off, size);
	if (rc)
		return rc;
	w->count++;
	return w->buf.len >= HW_CHUNK ? hw_flush(w) : 0;
}

void kv_hint_writer_abort(struct kv_hint_writer *w)
{
	char tmp[PATH_MAX];
	if (w->fd >= 0) {
		kv_close(w->fd);
		kv_seg_path(tmp, sizeof tmp, w->dir, w->id, "hint.tmp");
		kv_unlink(tmp);
	}
	w->fd = -1;
	kv_hint_abort(&w->buf);
}

int kv_hint_writer_commit(struct kv_hint_writer *w)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	uint8_t trl[KV_HINT_TRL];
	int rc = hw_flush(w);
	if (rc)
		goto out;
	kv_put64(trl, w->count);
	kv_put32(trl + 8, kv_crc32c(w->crc, trl, 8));
	kv_put32(trl + 12, KV_HINT_END);
	if ((rc = kv_write_all(w->fd, trl, sizeof trl)) != 0)
		goto out;
	if ((rc = kv_fsync(w->fd)) != 0)
		goto out;
	rc = kv_close(w->fd);
	w->fd = -1;
	if (rc)
		goto out;
	kv_seg_path(tmp, sizeof tmp, w->dir, w->id, "hint.tmp");
	kv_seg_path(path, sizeof path, w->dir, w->id, "hint");
	if ((rc = kv_rename(tmp, path)) != 0)
		goto out;
	rc = kv_fsync_dir(w->dir);
out:
	if (rc)
		kv_hint_writer_abort(w);
	kv_hint_abort(&w->buf);
	return rc;
}
