/*
 * kv_merge.c — compaction in a forked worker, with hint files and a keydir
 * swap by location compare-and-swap (Basho bitcask's protocol; reasoning in
 * DESIGN-NOTES "Merge").
 *
 * The job:
 *
 *            kv_engine_merge_start()               worker exits 0, all
 *   IDLE ---------------------------> RUNNING ---- reports applied ----+
 *    ^   seal active as R-1, reserve   |  kv_engine_merge_step():      |
 *    |   ids [R, R+k), new active R+k, |  read pipe, apply <= budget   v
 *    |   freeze keydir, fork           |  reports, waitpid(WNOHANG)  DELETING
 *    |                                 |                               |
 *    |      worker failed / killed /   |        no iterator open:      |
 *    +------ bad report: keep what  <--+        unlink inputs oldest   |
 *    |       was reported, remove the           first, fsync dir       |
 *    |       unreported outputs (FAILED)                               |
 *    +-----------------------------------------------------------------+
 *
 * Invariants:
 *  1. Inputs are every segment below R (a full merge), so a tombstone or an
 *     expired record can be dropped: any older value it shadows is an input
 *     too, and not live, so it is not copied either.
 *  2. Every write after the fork lands in segment R+k or later, above every
 *     output: (segment id, offset) order stays right, after a restart too.
 *  3. The worker copies only records its copy-on-write keydir snapshot
 *     points at, and reports an output only once it is durable.
 *  4. kvd moves an entry only if it still points at the reported old
 *     location (kv_keydir_cas), so a key written or deleted during the
 *     merge keeps its newer state.
 *  5. Inputs are deleted only after the worker succeeded, every report was
 *     applied, no input holds live bytes and no iterator is open; oldest
 *     first, so a crash between two unlinks cannot resurrect a value whose
 *     tombstone was dropped.
 *  6. While the worker lives the keydir does not resize (copy-on-write).
 *  7. A failed merge leaves no file kvd does not know about: outputs that
 *     were renamed but not reported are removed, so a later merge cannot
 *     drop a tombstone that such a file's copy would outlive.
 *
 * Pace: besides running at a low CPU priority (SCHED_IDLE or nice 10,
 * kv_merge_params.cpu) and the lowest best-effort I/O priority, the
 * worker may be given a rate limit (kv_merge_params, kvd's
 * merge-rate-limit): a token bucket over the bytes it reads from its
 * inputs, checked every THR_CHUNK bytes, sleeping while it is ahead of
 * schedule (struct throttle below). A slower merge leaves clients more
 * CPU, disk and page cache.
 */
#include "kv_merge.h"

#include "kv_engine.h"
#include "kv_engine_int.h"
#include "kv_format.h"
#include "kv_seg.h"
#include "kv_sys.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PIPE_BUF_CAP (256u << 10) /* parent: stop reading the pipe past this */
#define STEP_MAX_NS 200000u       /* parent: a step also ends after 0.2 ms ... */
#define STEP_CHUNK 64u            /* ... checked every this many reports, prefetched ahead */
#define OUT_FLUSH (1u << 20)    /* worker: write output in 1 MiB chunks */
#define REP_FLUSH (64u << 10)   /* worker: reports go to the pipe ~64 KiB at a time */
#define REP_BUF (REP_FLUSH + KV_MREP_HDR + KV_MAX_KEY) /* ... from a buffer this big */
#define THR_CHUNK (128u << 10)  /* worker: check the rate limit every 128 KiB read */

/* worker, rate limit: one sleep lasts at most 100 ms; unused pace is saved
 * up for at most 100 ms (the bucket's size) */
#define THR_MAX_SLEEP_NS 100000000ull
#define THR_BURST_NS 100000000ull

enum mstate { M_RUNNING, M_DELETING };

struct kv_merge {
	enum mstate state;
	pid_t pid;
	int fd;          /* read end of the report pipe, -1 after EOF */
	int exited;      /* the worker was reaped */
	int status;      /* its wait status */
	int done_seen;   /* DONE received */
	char error[200]; /* ERROR received or a protocol problem */
	uint32_t *in;    /* input ids, ascending */
	uint32_t nin;
	uint32_t R, k;   /* reserved output ids [R, R+k) */
	uint32_t nout;
	uint64_t in_bytes, out_bytes;
	uint32_t del_next; /* DELETING: next input to unlink (oldest first) */
	uint64_t freed;
	uint8_t *buf;    /* unparsed reports */
	size_t len, cap, pos;
	struct timespec t0;
	uint64_t rate_limit; /* bytes/s the worker reads, 0 = unlimited */
	int cpu;             /* KV_MERGE_CPU_LOW or _IDLE (kv_merge_params) */
};

/* ======================= the worker (child process) ======================= */

struct out {
	const char *dir;
	int wfd;            /* report pipe */
	uint8_t *rbuf;      /* reports not yet written to the pipe (REP_BUF bytes) */
	size_t rlen;
	uint32_t next_id, end_id;
	uint32_t id;        /* current output, 0 when none */
	int fd;
	uint64_t size;      /* bytes written + buffered */
	uint64_t wb_from;   /* writeback started below this offset */
	uint8_t *buf;
	size_t blen, bcap;
	struct kv_hint_buf hb;
	uint64_t *old;      /* (seg << 32 | off) per hint entry */
	size_t nold, capold;
	uint64_t max_size;
	uint64_t now;
	long crash_at, crash_n;
	uint32_t outputs;
};

/* Write the buffered reports to the pipe; a broken pipe kills the worker
 * (SIGPIPE). */
static int rep_flush(struct out *o)
{
	int rc = o->rlen ? kv_write_all(o->wfd, o->rbuf, o->rlen) : 0;
	o->rlen = 0;
	return rc;
}

/* A test's kill point: what was reported before it reaches kvd first. */
static void crash_point(struct out *o)
{
	if (o->crash_at > 0 && ++o->crash_n == o->crash_at) {
		(void)rep_flush(o);
		raise(SIGKILL);
	}
}

/* Queue one report. Reports are written once REP_FLUSH bytes are queued
 * (and by rep_flush() at the end of each output and of the job): one
 * write and one wake-up of kvd per ~1,300 moves instead of two writes per
 * move, which had kvd's loop reading the pipe in 48-byte pieces. Below
 * REP_FLUSH queued, a report of the largest key still fits in REP_BUF. */
static int send_rep(struct out *o, uint8_t type, uint32_t a, uint32_t b, uint32_t c, uint32_t d,
		    uint32_t e, uint32_t f, const void *key, uint32_t klen)
{
	if (klen > KV_MAX_KEY)
		return -EINVAL; /* never: keys come from decoded records */
	uint8_t *h = o->rbuf + o->rlen;
	memset(h, 0, KV_MREP_HDR);
	h[0] = type;
	kv_put32(h + 4, klen);
	kv_put32(h + 8, a);
	kv_put32(h + 12, b);
	kv_put32(h + 16, c);
	kv_put32(h + 20, d);
	kv_put32(h + 24, e);
	kv_put32(h + 28, f);
	if (klen)
		memcpy(h + KV_MREP_HDR, key, klen);
	o->rlen += KV_MREP_HDR + klen;
	return o->rlen >= REP_FLUSH ? rep_flush(o) : 0;
}

static int out_flush(struct out *o)
{
	int rc = o->blen ? kv_write_all(o->fd, o->buf, o->blen) : 0;
	o->blen = 0;
	/* start writeback as we go: the output's fsync finds little left, and
	 * kvd's own fdatasyncs do not queue behind a burst of merge pages */
	uint64_t written = o->size; /* everything buffered is written now */
	if (!rc && written - o->wb_from >= (8u << 20)) {
		sync_file_range(o->fd, (off_t)o->wb_from, (off_t)(written - o->wb_from),
				SYNC_FILE_RANGE_WRITE);
		o->wb_from = written;
	}
	return rc;
}

static int out_open(struct out *o)
{
	char tmp[PATH_MAX];
	uint8_t hdr[KV_SEG_HDR];
	if (o->next_id >= o->end_id)
		return -ENOSPC; /* ran out of reserved ids: cannot happen (k = inputs + 1) */
	o->id = o->next_id++;
	kv_seg_path(tmp, sizeof tmp, o->dir, o->id, "seg.tmp");
	kv_unlink(tmp);
	o->fd = kv_open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0640);
	if (o->fd < 0)
		return o->fd;
	crash_point(o);
	kv_seg_hdr_encode(hdr, o->id, o->now);
	memcpy(o->buf, hdr, sizeof hdr);
	o->blen = sizeof hdr;
	o->size = sizeof hdr;
	o->wb_from = 0;
	o->nold = 0;
	return kv_hint_begin(&o->hb, o->id);
}

/* Make the current output durable, then report it (invariant 3). */
static int out_close(struct out *o)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	int rc;
	if (!o->id)
		return 0;
	if ((rc = out_flush(o)) != 0)
		goto out;
	crash_point(o);
	if ((rc = kv_fsync(o->fd)) != 0)
		goto out;
	crash_point(o);
	rc = kv_close(o->fd);
	o->fd = -1;
	if (rc)
		goto out;
	kv_seg_path(tmp, sizeof tmp, o->dir, o->id, "seg.tmp");
	kv_seg_path(path, sizeof path, o->dir, o->id, "seg");
	if ((rc = kv_rename(tmp, path)) != 0)
		goto out;
	crash_point(o);
	if ((rc = kv_fsync_dir(o->dir)) != 0)
		goto out;
	crash_point(o);
	int has_hint = kv_hint_commit(&o->hb, o->dir, o->id) == 0;
	crash_point(o);
	if ((rc = send_rep(o, KV_MREP_OUTPUT, o->id, (uint32_t)o->size, (uint32_t)has_hint, 0, 0, 0,
			   NULL, 0)) != 0)
		goto out;
	crash_point(o);
	/* the moves, read back from the hint entries */
	size_t off = KV_HINT_HDR;
	for (size_t i = 0; i < o->nold; i++) {
		const uint8_t *p = o->hb.data + off;
		uint32_t klen = (uint32_t)kv_get16(p + 12) + 1u;
		rc = send_rep(o, KV_MREP_MOVE, (uint32_t)(o->old[i] >> 32), (uint32_t)o->old[i], o->id,
			      kv_get32(p + 16), kv_get32(p + 20), kv_get32(p + 8), p + KV_HINT_ENT,
			      klen);
		if (rc)
			goto out;
		off += KV_HINT_ENT + klen;
		if (i == o->nold / 2)
			crash_point(o); /* mid-report */
	}
	if ((rc = rep_flush(o)) != 0)
		goto out;
	crash_point(o);
	o->outputs++;
out:
	if (o->fd >= 0)
		kv_close(o->fd);
	o->fd = -1;
	o->id = 0;
	kv_hint_abort(&o->hb);
	return rc;
}

/* Copy one live record into the outputs. */
static int out_copy(struct out *o, uint32_t seg, uint32_t off, const struct kv_rec *r)
{
	int rc;
	if (r->expiry && r->expiry <= o->now) /* expired: dropped (invariant 1) */
		return send_rep(o, KV_MREP_DROP, seg, off, 0, 0, r->size, 0, r->key, r->klen);
	if (o->id && o->size > KV_SEG_HDR && o->size + r->size > o->max_size)
		if ((rc = out_close(o)) != 0)
			return rc;
	if (!o->id && (rc = out_open(o)) != 0)
		return rc;
	if (o->blen + r->size > o->bcap) {
		if ((rc = out_flush(o)) != 0)
			return rc;
		if (r->size > o->bcap) {
			uint8_t *nb = realloc(o->buf, r->size);
			if (!nb)
				return -ENOMEM;
			o->buf = nb;
			o->bcap = r->size;
		}
	}
	uint32_t new_off = (uint32_t)o->size;
	/* re-encoded without the BATCH flag: a batch is whole by now */
	kv_rec_encode(o->buf + o->blen, KV_REC_PUT, (uint8_t)(r->flags & ~KV_RF_BATCH), r->seq,
		      r->expiry, r->key, r->klen, r->value, r->vlen);
	o->blen += r->size;
	o->size += r->size;
	if (o->blen >= OUT_FLUSH) {
		if ((rc = out_flush(o)) != 0)
			return rc;
		crash_point(o);
	}
	if ((rc = kv_hint_add(&o->hb, r->seq, r->expiry, r->key, r->klen, 0, new_off, r->size)))
		return rc;
	if (o->nold == o->capold) {
		size_t cap = o->capold ? o->capold * 2 : 4096;
		uint64_t *n = realloc(o->old, cap * sizeof *n);
		if (!n)
			return -ENOMEM;
		o->old = n;
		o->capold = cap;
	}
	o->old[o->nold++] = (uint64_t)seg << 32 | off;
	return 0;
}

/*
 * The worker's rate limit: a token bucket over the bytes it reads from its
 * inputs. Reads rather than writes, because reading is what every record
 * costs: a scan reads and checks the CRC of every record, dead ones
 * included, and a merge of mostly dead data writes little; each byte
 * written was read first, so the pace of reads bounds the writes too. Only
 * what is actually read is charged: with a hint file, the hint file and
 * the live records, not the dead records the hints let it skip.
 *
 * The bucket fills at rate bytes/s and holds at most THR_BURST_NS worth;
 * due is the time at which the bytes charged so far are paid for, so the
 * bucket is empty once due >= now. Every THR_CHUNK bytes the worker sleeps
 * until due, in sleeps of at most THR_MAX_SLEEP_NS, each one a ppoll() on
 * the report pipe: if kvd closed its end the sleep ends at once and the
 * worker stops (-EPIPE); kvd's death kills it through PR_SET_PDEATHSIG,
 * sleeping or not.
 */
struct throttle {
	uint64_t rate;    /* bytes per second; 0 = unlimited: never sleeps */
	uint64_t pending; /* bytes read since the last check */
	uint64_t due_ns;  /* CLOCK_MONOTONIC; 0 before the first check */
	int wfd;          /* the report pipe (write end) */
};

static uint64_t mono_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* Charge n bytes read; sleep while ahead of the rate. 0, or -EPIPE when
 * kvd closed the report pipe during a sleep. */
static int throttle(struct throttle *t, uint64_t n)
{
	if (!t->rate)
		return 0;
	t->pending += n;
	if (t->pending < THR_CHUNK)
		return 0;
	uint64_t now = mono_ns();
	if (t->due_ns + THR_BURST_NS < now)
		t->due_ns = now - THR_BURST_NS; /* a full bucket holds no more */
	/* pending is a chunk plus one record or hint file: far below the 18 GB
	 * at which pending * 10^9 would overflow */
	t->due_ns += t->pending * 1000000000ull / t->rate;
	t->pending = 0;
	while (now < t->due_ns) {
		uint64_t ns = t->due_ns - now;
		if (ns > THR_MAX_SLEEP_NS)
			ns = THR_MAX_SLEEP_NS;
		struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
		/* events 0: only POLLERR (no reader left) or POLLHUP wake it */
		struct pollfd pfd = {t->wfd, 0, 0};
		int r = ppoll(&pfd, 1, &ts, NULL);
		if (r > 0 && (pfd.revents & (POLLERR | POLLHUP | POLLNVAL)))
			return -EPIPE;
		now = mono_ns();
	}
	return 0;
}

struct child_scan {
	kv_engine *e;
	struct out *o;
	struct throttle *thr;
	uint32_t seg;
	const uint8_t *data;
	size_t len;
	int thr_rc; /* the throttle's error, kept apart from the hint's own */
};

static int is_live(struct child_scan *c, const uint8_t *key, uint32_t klen, uint32_t off)
{
	struct kv_loc loc;
	return kv_keydir_get(c->e->kd, key, klen, &loc) && loc.seg == c->seg && loc.off == off;
}

static int child_rec(void *arg, uint32_t off, const struct kv_rec *r)
{
	struct child_scan *c = arg;
	int rc = throttle(c->thr, r->size); /* the scan read it, live or not */
	if (rc)
		return c->thr_rc = rc;
	if (r->type != KV_REC_PUT || !is_live(c, r->key, r->klen, off))
		return 0; /* tombstones and dead records are dropped */
	return out_copy(c->o, c->seg, off, r);
}

static int child_hint(void *arg, const struct kv_hint_ent *h)
{
	struct child_scan *c = arg;
	struct kv_rec r;
	if ((h->flags & KV_HF_TOMBSTONE) || !is_live(c, h->key, h->klen, h->off))
		return 0;
	int rc = throttle(c->thr, h->size); /* only live records are read */
	if (rc)
		return c->thr_rc = rc;
	if ((uint64_t)h->off + h->size > c->len ||
	    kv_rec_decode(c->data + h->off, h->size, &r) != KV_DEC_OK || r.type != KV_REC_PUT)
		return KV_ECORRUPT;
	return out_copy(c->o, c->seg, h->off, &r);
}

static int child_merge(kv_engine *e, struct kv_merge *m, struct out *o, struct throttle *thr,
		       char *err, size_t errlen)
{
	char path[PATH_MAX];
	int rc = 0;
	for (uint32_t i = 0; i < m->nin && !rc; i++) {
		struct child_scan c = {e, o, thr, m->in[i], NULL, 0, 0};
		uint8_t *data = NULL, *hdata = NULL;
		size_t len = 0, hlen = 0;
		kv_seg_path(path, sizeof path, e->dir, c.seg, "seg");
		if ((rc = kv_map_file(path, &data, &len)) != 0) {
			snprintf(err, errlen, "segment %u: %s", c.seg, kv_strerror(rc));
			break;
		}
		c.data = data;
		c.len = len;
		struct seg *s = kv_eng_seg_find(e, c.seg);
		int done = 0;
		if (s && s->has_hint) {
			kv_seg_path(path, sizeof path, e->dir, c.seg, "hint");
			if (kv_map_file(path, &hdata, &hlen) == 0) {
				/* the hint is read whole (its CRC) */
				c.thr_rc = throttle(thr, hlen);
				if (!c.thr_rc &&
				    kv_hint_parse(hdata, hlen, c.seg, child_hint, &c) == 0)
					done = 1; /* a corrupt hint passes nothing: scan instead */
				if (hdata)
					munmap(hdata, hlen);
			}
			if (c.thr_rc) {
				rc = c.thr_rc;
				snprintf(err, errlen, "segment %u: %s", c.seg, kv_strerror(rc));
			} else if (!done && o->id) {
				/* an error after some copies: outputs are not reported
				 * yet, but their hint entries are; a scan would copy
				 * twice */
				rc = KV_ECORRUPT;
				snprintf(err, errlen, "segment %u: hint file failed mid-merge", c.seg);
			}
		}
		if (!done && !rc) {
			struct kv_scan_result res;
			rc = kv_seg_scan(data, len, e->opt.repair, child_rec, &c, &res);
			if (!rc && res.bad && !e->opt.repair)
				rc = KV_ECORRUPT;
			if (rc)
				snprintf(err, errlen, "segment %u: %s", c.seg, kv_strerror(rc));
		}
		if (data)
			munmap(data, len);
	}
	if (!rc && (rc = out_close(o)) != 0)
		snprintf(err, errlen, "writing merge output: %s", kv_strerror(rc));
	return rc;
}

static void child_run(kv_engine *e, struct kv_merge *m, int wfd)
{
	struct out o = {0};
	char err[200] = "";
	const char *crash = getenv(KV_MERGE_CRASH_ENV);
	o.dir = e->dir;
	o.wfd = wfd;
	o.next_id = m->R;
	o.end_id = m->R + m->k;
	o.fd = -1;
	o.max_size = e->opt.max_segment_size;
	o.now = kv_eng_now(e);
	o.crash_at = crash ? atol(crash) : 0;
	o.bcap = OUT_FLUSH + (1u << 16);
	o.buf = malloc(o.bcap);
	o.rbuf = malloc(REP_BUF);
	struct throttle thr = {m->rate_limit, 0, 0, wfd};
	int rc = o.buf && o.rbuf ? child_merge(e, m, &o, &thr, err, sizeof err) : -ENOMEM;
	if (rc) {
		if (!err[0])
			snprintf(err, sizeof err, "%s", kv_strerror(rc));
		if (o.rbuf) {
			send_rep(&o, KV_MREP_ERROR, 0, 0, 0, 0, 0, 0, err, (uint32_t)strlen(err));
			rep_flush(&o);
		}
		_exit(1);
	}
	crash_point(&o);
	send_rep(&o, KV_MREP_DONE, m->nin, o.outputs, 0, 0, 0, 0, NULL, 0);
	rep_flush(&o);
	crash_point(&o);
	_exit(0);
}

/* ======================= kvd's side (parent) ======================= */

static void merge_free(kv_engine *e, struct kv_merge *m)
{
	if (m->fd >= 0)
		close(m->fd);
	free(m->in);
	free(m->buf);
	free(m);
	e->merge = NULL;
	kv_keydir_freeze(e->kd, 0); /* invariant 6 */
}

static uint64_t ms_since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)(t.tv_sec - t0->tv_sec) * 1000u +
	       (uint64_t)((t.tv_nsec - t0->tv_nsec) / 1000000);
}

int kv_engine_merge_wanted(const kv_engine *e, double min_dead_ratio, uint64_t min_dead_bytes)
{
	uint64_t total = 0, dead = 0;
	if (e->merge || e->failed)
		return 0;
	for (size_t i = 0; i < e->nsegs; i++) {
		const struct seg *s = e->segs[i];
		if (s->active)
			continue;
		total += s->size - KV_SEG_HDR;
		dead += s->size - KV_SEG_HDR - s->live;
	}
	if (dead == 0)
		return 0;
	return dead >= min_dead_bytes || (double)dead >= min_dead_ratio * (double)total;
}

int kv_engine_merge_start(kv_engine *e, void (*child_init)(void *arg), void *arg)
{
	struct kv_merge_params p = {0, child_init, arg, KV_MERGE_CPU_LOW};
	return kv_engine_merge_start_with(e, &p);
}

int kv_engine_merge_start_with(kv_engine *e, const struct kv_merge_params *mp)
{
	static const struct kv_merge_params none;
	int p[2] = {-1, -1}, rc;
	if (!mp)
		mp = &none;
	if (e->merge)
		return KV_EBUSY;
	if (e->failed)
		return KV_EREADONLY;
	uint64_t dead = 0;
	for (size_t i = 0; i < e->nsegs; i++)
		dead += e->segs[i]->size - KV_SEG_HDR - e->segs[i]->live;
	if (dead == 0)
		return 1;
	struct kv_merge *m = calloc(1, sizeof *m);
	if (!m)
		return -ENOMEM;
	m->fd = -1;
	m->rate_limit = mp->rate_limit;
	m->cpu = mp->cpu;
	clock_gettime(CLOCK_MONOTONIC, &m->t0);
	/* inputs: every segment, the active one included once sealed */
	m->in = calloc(e->nsegs, sizeof *m->in);
	if (!m->in) {
		free(m);
		return -ENOMEM;
	}
	for (size_t i = 0; i < e->nsegs; i++) {
		m->in[m->nin++] = e->segs[i]->id;
		m->in_bytes += e->segs[i]->size;
	}
	m->R = e->active->id + 1;
	m->k = m->nin + 1;
	if ((uint64_t)m->R + m->k >= UINT32_MAX) {
		rc = -EOVERFLOW;
		goto fail;
	}
	/* invariant 2: the new active segment sorts above every output */
	if ((rc = kv_eng_rotate(e, m->R + m->k)) != 0)
		goto fail;
	if (pipe2(p, O_CLOEXEC) < 0) {
		rc = -errno;
		goto fail;
	}
	kv_keydir_freeze(e->kd, 1); /* invariant 6 */
	e->merge = m;
	pid_t pid = fork();
	if (pid < 0) {
		rc = -errno;
		e->merge = NULL;
		kv_keydir_freeze(e->kd, 0);
		goto fail;
	}
	if (pid == 0) { /* the worker */
		/* the caller's hook (which may still use its descriptors), then
		 * descriptors at once: until they are closed, a kvd killed now
		 * would leave its listener open in this child, and a restarted
		 * kvd would find "another kvd" answering on its socket */
		if (mp->child_init)
			mp->child_init(mp->child_arg);
		if (p[1] != 3) {
			dup2(p[1], 3);
			close(p[1]);
		}
		closefrom(4); /* listener, clients, LOCK, active segment, the read end */
		/* quit with kvd: an orphaned worker must not write on */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() == 1)
			_exit(1);
		/* clients first: the worker yields the CPU and the disk to kvd
		 * (SCHED_IDLE or nice 10; lowest best-effort I/O priority).
		 * Neither can fail for lack of privilege (both only lower the
		 * priority); a failure is not fatal: the merge competes harder. */
		if (m->cpu == KV_MERGE_CPU_IDLE) {
			struct sched_param sp = {0};
			(void)sched_setscheduler(0, SCHED_IDLE, &sp);
		} else {
			(void)setpriority(PRIO_PROCESS, 0, 10);
		}
		syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, 0,
			(2 << 13) | 7 /* IOPRIO_CLASS_BE, level 7 */);
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		for (int sig = 1; sig < NSIG; sig++)
			if (sig != SIGKILL && sig != SIGSTOP)
				signal(sig, SIG_DFL);
		child_run(e, m, 3);
	}
	close(p[1]);
	m->pid = pid;
	m->fd = p[0];
	fcntl(m->fd, F_SETFL, fcntl(m->fd, F_GETFL) | O_NONBLOCK);
	m->state = M_RUNNING;
	e->minfo.pid = pid;
	e->minfo.last_error[0] = 0;
	char pace[48];
	if (!m->rate_limit)
		snprintf(pace, sizeof pace, "no rate limit");
	else if (m->rate_limit % (1u << 20) == 0)
		snprintf(pace, sizeof pace, "rate limit %llu MiB/s",
			 (unsigned long long)(m->rate_limit >> 20));
	else
		snprintf(pace, sizeof pace, "rate limit %llu bytes/s",
			 (unsigned long long)m->rate_limit);
	kv_eng_log(e, KV_LOG_INFO,
		   "merge started: worker pid %d, %u input segments, outputs %u..%u, %s", (int)pid,
		   m->nin, m->R, m->R + m->k - 1, pace);
	return 0;
fail:
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	free(m->in);
	free(m);
	return rc;
}

int kv_engine_merge_fd(const kv_engine *e)
{
	return e->merge && e->merge->state == M_RUNNING ? e->merge->fd : -1;
}

static void set_error(struct kv_merge *m, const char *msg)
{
	if (!m->error[0])
		snprintf(m->error, sizeof m->error, "%s", msg);
}

/* Apply one report; returns its size, 0 when incomplete, -1 when bad. */
static long apply_one(kv_engine *e, struct kv_merge *m, const uint8_t *p, size_t avail)
{
	if (avail < KV_MREP_HDR)
		return 0;
	uint8_t type = p[0];
	uint32_t klen = kv_get32(p + 4), a = kv_get32(p + 8), b = kv_get32(p + 12),
		 c = kv_get32(p + 16), d = kv_get32(p + 20), sz = kv_get32(p + 24),
		 f = kv_get32(p + 28);
	if (klen > KV_MAX_KEY || ((type == KV_MREP_MOVE || type == KV_MREP_DROP) && klen == 0))
		return -1;
	if (avail - KV_MREP_HDR < klen)
		return 0;
	const uint8_t *key = p + KV_MREP_HDR;
	switch (type) {
	case KV_MREP_OUTPUT: {
		if (a < m->R || a >= m->R + m->k || kv_eng_seg_find(e, a))
			return -1;
		struct seg *s = calloc(1, sizeof *s);
		if (!s)
			return -1;
		s->id = a;
		s->size = b;
		s->has_hint = c != 0;
		if (kv_eng_seg_add(e, s) != 0) {
			free(s);
			return -1;
		}
		m->nout++;
		m->out_bytes += b;
		break;
	}
	case KV_MREP_MOVE: {
		struct kv_loc from = {a, b, sz, 0}, to = {c, d, sz, f};
		struct seg *ns = kv_eng_seg_find(e, c);
		if (!ns || c < m->R || c >= m->R + m->k)
			return -1;
		if (kv_keydir_cas(e->kd, key, klen, &from, &to)) { /* invariant 4 */
			kv_eng_account_replace(e, &from);
			ns->live += sz;
		}
		break;
	}
	case KV_MREP_DROP: {
		struct kv_loc at = {a, b, sz, 0};
		if (kv_keydir_del_at(e->kd, key, klen, &at))
			kv_eng_account_replace(e, &at);
		break;
	}
	case KV_MREP_DONE:
		m->done_seen = 1;
		break;
	case KV_MREP_ERROR: {
		char msg[200];
		snprintf(msg, sizeof msg, "worker: %.*s", (int)(klen < 180 ? klen : 180),
			 (const char *)key);
		set_error(m, msg);
		break;
	}
	default:
		return -1;
	}
	return (long)(KV_MREP_HDR + klen);
}

/* Remove files in the reserved range that kvd does not know (invariant 7). */
static void remove_unreported(kv_engine *e, struct kv_merge *m)
{
	static const char *const ext[] = {"seg", "hint", "seg.tmp", "hint.tmp"};
	char path[PATH_MAX];
	for (uint32_t id = m->R; id < m->R + m->k; id++) {
		if (kv_eng_seg_find(e, id))
			continue;
		for (size_t i = 0; i < sizeof ext / sizeof *ext; i++) {
			kv_seg_path(path, sizeof path, e->dir, id, ext[i]);
			kv_unlink(path);
		}
	}
	kv_fsync_dir(e->dir);
}

static int finish_failed(kv_engine *e, struct kv_merge *m)
{
	if (!m->error[0]) {
		char msg[200];
		if (m->exited && WIFSIGNALED(m->status))
			snprintf(msg, sizeof msg, "worker killed by signal %d", WTERMSIG(m->status));
		else if (m->exited)
			snprintf(msg, sizeof msg, "worker exited with status %d",
				 WEXITSTATUS(m->status));
		else
			snprintf(msg, sizeof msg, "merge failed");
		set_error(m, msg);
	}
	remove_unreported(e, m);
	snprintf(e->minfo.last_error, sizeof e->minfo.last_error, "%s", m->error);
	e->minfo.failures++;
	e->minfo.pid = 0;
	kv_eng_log(e, KV_LOG_ERROR, "merge failed: %s (%u outputs kept, inputs kept)", m->error,
		   m->nout);
	merge_free(e, m);
	return -EIO;
}

/* Delete up to max inputs, oldest first (invariant 5), a few per step so
 * no client waits on a long run of unlinks. Returns 1 while inputs remain. */
static int delete_inputs(kv_engine *e, struct kv_merge *m, unsigned max)
{
	unsigned n = 0;
	for (; m->del_next < m->nin && n < max; m->del_next++) {
		struct seg *s = kv_eng_seg_find(e, m->in[m->del_next]);
		if (!s)
			continue;
		if (s->live) { /* never expected: keep it and everything newer */
			kv_eng_log(e, KV_LOG_ERROR,
				   "merge: input segment %u still holds %llu live bytes; keeping "
				   "it and the newer inputs",
				   s->id, (unsigned long long)s->live);
			m->del_next = m->nin;
			break;
		}
		m->freed += s->size;
		kv_eng_seg_remove(e, s);
		n++;
	}
	if (n) {
		if (kv_fsync_dir(e->dir) == 0)
			kv_eng_reap_release(e); /* the renames are durable */
		e->dir_dirty = 0;
	}
	if (m->del_next < m->nin)
		return 1;
	uint64_t out = 0, freed = m->freed;
	for (uint32_t id = m->R; id < m->R + m->k; id++) {
		struct seg *s = kv_eng_seg_find(e, id);
		if (s)
			out += s->size;
	}
	e->minfo.merges++;
	e->minfo.last_ms = ms_since(&m->t0);
	e->minfo.last_reclaimed = freed > out ? freed - out : 0;
	e->minfo.total_reclaimed += e->minfo.last_reclaimed;
	e->minfo.last_inputs = m->nin;
	e->minfo.last_outputs = m->nout;
	e->minfo.pid = 0;
	kv_eng_log(e, KV_LOG_INFO,
		   "merge done in %llu ms: %u inputs (%llu bytes) -> %u outputs (%llu bytes), "
		   "%llu bytes reclaimed",
		   (unsigned long long)e->minfo.last_ms, m->nin, (unsigned long long)freed, m->nout,
		   (unsigned long long)out, (unsigned long long)e->minfo.last_reclaimed);
	merge_free(e, m);
	return 0;
}

/* Read what the pipe holds without blocking. */
static void read_pipe(struct kv_merge *m)
{
	while (m->fd >= 0 && m->len - m->pos < PIPE_BUF_CAP) {
		if (m->pos > 0 && m->pos == m->len) {
			m->pos = m->len = 0;
		} else if (m->pos > m->cap / 2) {
			memmove(m->buf, m->buf + m->pos, m->len - m->pos);
			m->len -= m->pos;
			m->pos = 0;
		}
		if (m->cap - m->len < 65536) {
			size_t cap = m->cap ? m->cap * 2 : 262144;
			uint8_t *n = realloc(m->buf, cap);
			if (!n)
				return;
			m->buf = n;
			m->cap = cap;
		}
		ssize_t r = read(m->fd, m->buf + m->len, m->cap - m->len);
		if (r > 0) {
			m->len += (size_t)r;
		} else if (r == 0) {
			close(m->fd);
			m->fd = -1;
		} else if (errno != EINTR) {
			if (errno != EAGAIN) {
				close(m->fd);
				m->fd = -1;
			}
			return;
		}
	}
}

/* The keydir lookups of the next reports are random memory accesses:
 * start them ahead (bucket, then the matching entries), as Get does, so
 * that applying a slice waits on one cache miss at a time at most. */
#define PREFETCH_MAX 512
static void prefetch_reports(kv_engine *e, const struct kv_merge *m, unsigned budget)
{
	size_t off[PREFETCH_MAX], n = 0, pos = m->pos;
	while (n < budget && n < PREFETCH_MAX && m->len - pos >= KV_MREP_HDR) {
		uint32_t klen = kv_get32(m->buf + pos + 4);
		if (klen > KV_MAX_KEY || m->len - pos - KV_MREP_HDR < klen)
			break;
		uint8_t type = m->buf[pos];
		if ((type == KV_MREP_MOVE || type == KV_MREP_DROP) && klen > 0)
			off[n++] = pos;
		pos += KV_MREP_HDR + klen;
	}
	for (size_t i = 0; i < n; i++)
		kv_keydir_prefetch(e->kd, m->buf + off[i] + KV_MREP_HDR, kv_get32(m->buf + off[i] + 4));
	for (size_t i = 0; i < n; i++)
		kv_keydir_prefetch_entry(e->kd, m->buf + off[i] + KV_MREP_HDR,
					 kv_get32(m->buf + off[i] + 4));
}

/* Apply at most budget buffered reports, for at most STEP_MAX_NS: a move
 * costs a keydir lookup, and its first write to a keydir page after the
 * fork a copy-on-write fault, so a fixed count alone could hold the loop
 * for milliseconds (512 moves took 1.5-2 ms here). */
static void apply_reports(kv_engine *e, struct kv_merge *m, unsigned budget)
{
	uint64_t t0 = mono_ns();
	while (budget > 0 && m->pos < m->len) {
		unsigned chunk = budget < STEP_CHUNK ? budget : STEP_CHUNK;
		prefetch_reports(e, m, chunk);
		for (unsigned i = 0; i < chunk; i++) {
			long n = apply_one(e, m, m->buf + m->pos, m->len - m->pos);
			if (n < 0) {
				set_error(m, "malformed report from the worker");
				kill(m->pid, SIGKILL);
				return;
			}
			if (n == 0)
				return;
			m->pos += (size_t)n;
		}
		budget -= chunk;
		if (mono_ns() - t0 >= STEP_MAX_NS)
			return;
	}
}

/* A complete report is buffered: the next step has work at once. */
static int backlog(const struct kv_merge *m)
{
	return m->state == M_RUNNING && !m->error[0] && m->len - m->pos >= KV_MREP_HDR &&
	       m->len - m->pos - KV_MREP_HDR >= kv_get32(m->buf + m->pos + 4);
}

int kv_engine_merge_backlog(const kv_engine *e)
{
	return e->merge ? backlog(e->merge) : 0;
}

int kv_engine_merge_step(kv_engine *e, unsigned budget)
{
	struct kv_merge *m = e->merge;
	if (!m)
		return 0;
	if (m->state == M_RUNNING) {
		read_pipe(m);
		apply_reports(e, m, budget);
		if (!m->exited) {
			pid_t r = waitpid(m->pid, &m->status, WNOHANG);
			if (r == m->pid)
				m->exited = 1;
		}
		if (m->error[0] && !m->exited)
			return 1; /* killed above; reaped on a later step */
		if (!m->exited || m->fd >= 0)
			return 1;
		/* the worker is gone and the pipe is drained of complete reports */
		if (backlog(m))
			return 1; /* complete reports are left to apply */
		int ok = !m->error[0] && m->done_seen && WIFEXITED(m->status) &&
			 WEXITSTATUS(m->status) == 0;
		if (!ok)
			return finish_failed(e, m);
		m->state = M_DELETING;
	}
	if (e->iters > 0)
		return 1; /* an iterator may still read the inputs */
	return delete_inputs(e, m, 4);
}

void kv_merge_abandon(kv_engine *e)
{
	struct kv_merge *m = e->merge;
	if (!m)
		return;
	if (!m->exited) {
		kill(m->pid, SIGKILL);
		waitpid(m->pid, &m->status, 0);
	}
	/* unreported outputs are left for recovery: with every file known
	 * again at the next open, they replay in the right order */
	merge_free(e, m);
}

void kv_engine_merge_info(const kv_engine *e, struct kv_merge_info *mi)
{
	*mi = e->minfo;
	mi->state = !e->merge ? "idle" : e->merge->state == M_RUNNING ? "running" : "deleting";
}
