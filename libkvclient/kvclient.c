/*
 * kvclient.c — libkvclient: one Unix-socket connection to kvd, the framing
 * of proto/PROTOCOL.md, blocking calls and the pipelined interface.
 *
 * A kvc_client owns its socket, an output buffer of request frames not yet
 * written, an input buffer of bytes read but not yet parsed, a ring of
 * outstanding requests, and two arenas that back protobuf-c: `tx` (request
 * messages being built, reset after each frame is packed) and `rx` (the
 * reply being handed to the caller, reset when the next reply is fetched).
 * Because both arenas keep their main block, steady-state traffic makes no
 * malloc per request; arena memory is released by arena_reset(), so the
 * kv__*__free_unpacked() walk (whose frees would be no-ops) is only called
 * for messages unpacked with the system allocator.
 *
 * Invariants:
 *  1. Every byte of out[off, len) belongs to a whole request frame whose
 *     entry is in the ring q; frames leave out in the order they entered.
 *  2. q holds one entry per request queued or written whose final reply has
 *     not been read, oldest first, which is the order kvd replies in. The
 *     head entry is the only one a reply may match (by id). quser counts the
 *     entries not abandoned (abandoned = the caller gave up after a timeout
 *     or a stopped scan; its replies are read and dropped).
 *  3. in[off, len) holds received bytes not yet parsed; a frame is consumed
 *     whole, after its 4-byte length was checked against KVC_MAX_FRAME and
 *     before anything is allocated for it.
 *  4. closed != 0 <=> fd == -1: the queue and both buffers are empty, and
 *     every later call fails with KVC_ECLOSED.
 *  5. Blocking calls start only when quser == 0, so the one live entry of a
 *     blocking call is always the newest (the tail of q).
 *
 * kvc_stats_json() lives in kvclient_json.c (pure formatting).
 *
 * Request frames are encoded as: be32 length, then the Envelope packed by
 * protobuf-c with its payload field left empty (fields 1 id, 2 method),
 * then field 3 appended by hand (tag 0x1a, varint length) followed by the
 * request packed by protobuf-c straight into the buffer. That is the
 * canonical encoding of the Envelope and saves copying values twice. The
 * length prefix and the varint come from proto/kv_wire.h (shared with kvd).
 */
#include "kvclient.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "kv.pb-c.h"
#include "kv_wire.h"

/* The public limit (kvclient.h cannot include proto/) is the wire's. */
_Static_assert(KVC_MAX_FRAME == KV_WIRE_FRAME_MAX, "KVC_MAX_FRAME differs from the wire limit");

#define IN_CHUNK (64u * 1024u)          /* minimum free space per recv() */
#define OUT_AUTOFLUSH (256u * 1024u)    /* queue calls try a write above this */
#define BUF_KEEP (1u << 20)             /* empty buffers above this are freed */
#define ARENA_INIT (16u * 1024u)
#define ARENA_KEEP_MAX (1u << 20)       /* the arena's main block never grows past this */
#define READ_ROUND_MAX (8u << 20)       /* bytes read per wake-up before writing again */
#define ERR_LEN 512                     /* last-error message buffer */

static const char *const method_names[] = {
	"Ping", "Get", "Put", "Delete", "Batch", "Scan", "Stats", "Merge", "Sync",
};
#define NMETHODS (sizeof method_names / sizeof method_names[0])

/* ---- arena: protobuf-c allocator with bump allocation ---------------------- */

#define ARENA_ALIGN (alignof(max_align_t))

union arena_big {
	union arena_big *next;
	max_align_t align;
};

struct arena {
	unsigned char *block; /* main block, kept across resets */
	size_t cap, used;
	union arena_big *big; /* allocations that did not fit; freed at reset */
	size_t overflow;      /* small-allocation bytes that did not fit since reset */
};

static void *arena_alloc(void *data, size_t size)
{
	struct arena *a = data;
	if (size > SIZE_MAX - ARENA_ALIGN - sizeof(union arena_big))
		return NULL;
	size_t need = (size + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
	if (a->block && need <= a->cap - a->used) {
		void *p = a->block + a->used;
		a->used += need;
		return p;
	}
	if (need <= ARENA_KEEP_MAX / 4)
		a->overflow += need;
	union arena_big *b = malloc(sizeof *b + need);
	if (!b)
		return NULL;
	b->next = a->big;
	a->big = b;
	return b + 1;
}

static void arena_free(void *data, void *p)
{
	(void)data; /* released wholesale by arena_reset() */
	(void)p;
}

/* Free everything allocated since the last reset. When small allocations
 * overflowed the main block, grow it (up to ARENA_KEEP_MAX) so the same
 * traffic fits next time. */
static void arena_reset(struct arena *a)
{
	while (a->big) {
		union arena_big *n = a->big->next;
		free(a->big);
		a->big = n;
	}
	if (a->overflow && a->cap < ARENA_KEEP_MAX) {
		size_t want = a->used + a->overflow;
		want = want < a->cap * 2 ? a->cap * 2 : want;
		want = want > ARENA_KEEP_MAX ? ARENA_KEEP_MAX : want;
		unsigned char *nb = malloc(want);
		if (nb) {
			free(a->block);
			a->block = nb;
			a->cap = want;
		}
	}
	a->used = 0;
	a->overflow = 0;
}

static void arena_destroy(struct arena *a)
{
	arena_reset(a);
	free(a->block);
	a->block = NULL;
	a->cap = 0;
}

/* ---- byte buffers --------------------------------------------------------- */

struct buf {
	unsigned char *p;
	size_t off, len, cap; /* live bytes: p[off, len) */
};

/* Make room for n more bytes at p + len, compacting first. 0 or -1 (ENOMEM). */
static int buf_reserve(struct buf *b, size_t n)
{
	if (b->cap - b->len >= n)
		return 0;
	if (b->off) {
		memmove(b->p, b->p + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
		if (b->cap - b->len >= n)
			return 0;
	}
	if (n > SIZE_MAX / 2 - b->len)
		return -1;
	size_t ncap = b->cap ? b->cap : IN_CHUNK;
	while (ncap - b->len < n)
		ncap *= 2;
	unsigned char *np = realloc(b->p, ncap);
	if (!np)
		return -1;
	b->p = np;
	b->cap = ncap;
	return 0;
}

/* Called when b may have become empty: rewind, and give back a large block. */
static void buf_settle(struct buf *b)
{
	if (b->off != b->len)
		return;
	b->off = b->len = 0;
	if (b->cap > BUF_KEEP) {
		free(b->p);
		b->p = NULL;
		b->cap = 0;
	}
}

static void buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof *b);
}

/* ---- the client --------------------------------------------------------------- */

struct pend {
	uint64_t id;
	uint8_t method;    /* enum kvc_method */
	uint8_t abandoned; /* see invariant 2 */
};

struct kvc_client {
	int fd;
	int timeout_ms;
	int closed;      /* 0, or the status that closed the client (invariant 4) */
	int wr_closed;   /* kvd stopped reading (EPIPE): output dropped, read on */
	int rd_eof;      /* kvd closed its side: nothing more will arrive */
	uint64_t next_id;
	struct buf out, in;
	struct pend *q; /* ring of qcap (power of two) entries */
	size_t qcap, qhead, qlen, quser;
	struct arena rx, tx;
	ProtobufCAllocator rx_alloc, tx_alloc;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char err[ERR_LEN];
	char closed_msg[ERR_LEN];
};

static void clean_line(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = ' ';
}

__attribute__((format(printf, 3, 4))) static int fail(kvc_client *c, int status, const char *fmt,
						       ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof c->err, fmt, ap);
	va_end(ap);
	clean_line(c->err);
	return status;
}

static void q_clear(kvc_client *c)
{
	c->qhead = c->qlen = c->quser = 0;
}

/* Close the client for good with status and a message (invariant 4). */
__attribute__((format(printf, 3, 4))) static int die(kvc_client *c, int status, const char *fmt,
						      ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof c->err, fmt, ap);
	va_end(ap);
	clean_line(c->err);
	memcpy(c->closed_msg, c->err, sizeof c->closed_msg);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->closed = status ? status : KVC_ECLOSED;
	q_clear(c);
	buf_free(&c->out);
	buf_free(&c->in);
	return status;
}

/* Start of every call: refuse on a closed client, clear the last error. */
static int usable(kvc_client *c)
{
	if (c->closed)
		return fail(c, KVC_ECLOSED, "connection to %s is closed (%s)", c->path, c->closed_msg);
	c->err[0] = '\0';
	return KVC_OK;
}

static int map_status(uint32_t code)
{
	return code <= KVC_UNAUTHENTICATED ? (int)code : KVC_UNKNOWN;
}

static int q_push(kvc_client *c, uint64_t id, int method)
{
	if (c->qlen == c->qcap) {
		size_t ncap = c->qcap ? c->qcap * 2 : 64;
		struct pend *nq = malloc(ncap * sizeof *nq);
		if (!nq)
			return -1;
		for (size_t i = 0; i < c->qlen; i++)
			nq[i] = c->q[(c->qhead + i) & (c->qcap - 1)];
		free(c->q);
		c->q = nq;
		c->qcap = ncap;
		c->qhead = 0;
	}
	struct pend *p = &c->q[(c->qhead + c->qlen) & (c->qcap - 1)];
	p->id = id;
	p->method = (uint8_t)method;
	p->abandoned = 0;
	c->qlen++;
	c->quser++;
	return 0;
}

static void q_pop(kvc_client *c)
{
	assert(c->qlen > 0);
	if (!c->q[c->qhead].abandoned)
		c->quser--;
	c->qhead = (c->qhead + 1) & (c->qcap - 1);
	c->qlen--;
}

/* The caller of a blocking call gives up on its request (invariant 5). */
static void abandon_tail(kvc_client *c)
{
	if (!c->qlen)
		return;
	struct pend *p = &c->q[(c->qhead + c->qlen - 1) & (c->qcap - 1)];
	if (!p->abandoned) {
		p->abandoned = 1;
		c->quser--;
	}
}

/* ---- time ----------------------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Absolute deadline for a timeout; -1 = none. */
static int64_t deadline_in(int timeout_ms)
{
	return timeout_ms > 0 ? now_ms() + timeout_ms : -1;
}

/* poll() timeout until the deadline: -1 = forever, 0 = expired. */
static int remaining(int64_t deadline)
{
	if (deadline < 0)
		return -1;
	int64_t r = deadline - now_ms();
	return r <= 0 ? 0 : r > INT_MAX ? INT_MAX : (int)r;
}

/* ---- connect / close ------------------------------------------------------------ */

KVC_API const char *kvc_version(void)
{
	return KVC_VERSION;
}

static int connect_fail(char *err, size_t errlen, const char *path, int e, const char *what)
{
	if (err && errlen)
		snprintf(err, errlen, "cannot connect to %s: %s", path, what ? what : strerror(e));
	errno = e;
	return e == ENOMEM ? KVC_ENOMEM : KVC_ECONNECT;
}

/* Connect fd to sa within the deadline. 0, or an errno value. */
static int connect_deadline(int fd, const struct sockaddr_un *sa, int64_t deadline)
{
	for (;;) {
		if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0)
			return 0;
		int e = errno;
		if (e == EINTR)
			continue;
		if (e == EAGAIN) { /* listen backlog full: retry until the deadline */
			int r = remaining(deadline);
			if (r == 0)
				return ETIMEDOUT;
			struct timespec ts = { 0, (r < 0 || r > 10 ? 10 : r) * 1000000L };
			nanosleep(&ts, NULL);
			continue;
		}
		if (e != EINPROGRESS)
			return e;
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		int n;
		do
			n = poll(&p, 1, remaining(deadline));
		while (n < 0 && errno == EINTR);
		if (n < 0)
			return errno;
		if (n == 0)
			return ETIMEDOUT;
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			return errno;
		return soerr;
	}
}

KVC_API int kvc_connect(const char *socket_path, int timeout_ms, kvc_client **out, char *err,
			size_t errlen)
{
	kvc_client *c = NULL;
	int fd = -1, rc;
	struct sockaddr_un sa;

	if (err && errlen)
		err[0] = '\0';
	if (!out || !socket_path)
		return connect_fail(err, errlen, socket_path ? socket_path : "(null)", EINVAL, NULL);
	*out = NULL;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	size_t plen = strlen(socket_path);
	if (plen == 0)
		return connect_fail(err, errlen, "\"\"", EINVAL, "empty socket path");
	if (plen >= sizeof sa.sun_path) {
		char why[96];
		snprintf(why, sizeof why, "socket path is %zu bytes, the limit is %zu", plen,
			 sizeof sa.sun_path - 1);
		return connect_fail(err, errlen, socket_path, ENAMETOOLONG, why);
	}
	memcpy(sa.sun_path, socket_path, plen + 1);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		rc = connect_fail(err, errlen, socket_path, errno, NULL);
		goto out;
	}
	int e = connect_deadline(fd, &sa, deadline_in(timeout_ms));
	if (e) {
		rc = connect_fail(err, errlen, socket_path, e,
				  e == ETIMEDOUT ? "timed out (kvd is not accepting connections)" : NULL);
		goto out;
	}
	c = calloc(1, sizeof *c);
	if (!c || !(c->rx.block = malloc(ARENA_INIT)) || !(c->tx.block = malloc(ARENA_INIT))) {
		rc = connect_fail(err, errlen, socket_path, ENOMEM, NULL);
		goto out;
	}
	c->rx.cap = c->tx.cap = ARENA_INIT;
	c->rx_alloc = (ProtobufCAllocator){ arena_alloc, arena_free, &c->rx };
	c->tx_alloc = (ProtobufCAllocator){ arena_alloc, arena_free, &c->tx };
	c->fd = fd;
	fd = -1;
	c->timeout_ms = timeout_ms;
	c->next_id = 1;
	memcpy(c->path, socket_path, plen + 1);
	*out = c;
	c = NULL;
	rc = KVC_OK;
out:;
	int saved = errno;
	if (fd >= 0)
		close(fd);
	if (c) {
		arena_destroy(&c->rx);
		arena_destroy(&c->tx);
		free(c);
	}
	errno = saved;
	return rc;
}

KVC_API void kvc_close(kvc_client *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	buf_free(&c->out);
	buf_free(&c->in);
	free(c->q);
	arena_destroy(&c->rx);
	arena_destroy(&c->tx);
	free(c);
}

KVC_API void kvc_set_timeout(kvc_client *c, int timeout_ms)
{
	if (c)
		c->timeout_ms = timeout_ms;
}

KVC_API int kvc_get_timeout(const kvc_client *c)
{
	return c ? c->timeout_ms : 0;
}

KVC_API const char *kvc_last_error(const kvc_client *c)
{
	return c ? c->err : "no client";
}

KVC_API int kvc_connected(const kvc_client *c)
{
	return c && !c->closed;
}

KVC_API void kvc_free(void *p)
{
	free(p);
}

KVC_API const char *kvc_method_name(int method)
{
	return method >= 0 && (size_t)method < NMETHODS ? method_names[method] : "?";
}

KVC_API const char *kvc_status_str(int status)
{
	static const char *const canon[] = {
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
		"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
		"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
		"UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
	};
	static const char *const local[] = {
		"CANNOT_CONNECT", "CONNECTION_CLOSED", "TIMEOUT", "PROTOCOL_ERROR",
		"OUT_OF_MEMORY", "USAGE",
	};
	if (status >= 0 && status <= KVC_UNAUTHENTICATED)
		return canon[status];
	if (status >= KVC_ECONNECT && status <= KVC_EUSAGE)
		return local[status - KVC_ECONNECT];
	return "UNKNOWN_STATUS";
}

/* ---- frames out ------------------------------------------------------------------ */

/* Append one request frame to c->out and its entry to q (invariant 1). */
static int enqueue(kvc_client *c, int method, const ProtobufCMessage *req)
{
	if (c->wr_closed)
		return die(c, KVC_ECLOSED, "kvd at %s closed the connection", c->path);
	size_t plen = protobuf_c_message_get_packed_size(req);
	Kv__Envelope env = KV__ENVELOPE__INIT;
	env.id = c->next_id;
	env.method = (char *)method_names[method];
	size_t hlen = kv__envelope__get_packed_size(&env);
	size_t flen = hlen + (plen ? 1 + kv_wire_varint_len(plen) + plen : 0);
	if (flen > KVC_MAX_FRAME)
		return fail(c, KVC_RESOURCE_EXHAUSTED,
			    "%s request is %zu bytes, above the %u-byte frame maximum",
			    method_names[method], flen, KVC_MAX_FRAME);
	if (buf_reserve(&c->out, 4 + flen) < 0 || q_push(c, env.id, method) < 0)
		return fail(c, KVC_ENOMEM, "out of memory queueing a %zu-byte %s request", flen,
			    method_names[method]);
	uint8_t *p = c->out.p + c->out.len;
	kv_wire_put_len(p, (uint32_t)flen);
	p += 4;
	size_t n = kv__envelope__pack(&env, p);
	assert(n == hlen);
	p += n;
	if (plen) {
		*p++ = 0x1a; /* field 3 (payload), wire type 2 (length-delimited) */
		p += kv_wire_varint_put(p, plen);
		n = protobuf_c_message_pack(req, p);
		assert(n == plen);
	}
	c->out.len += 4 + flen;
	c->next_id++;
	return KVC_OK;
}

/* ---- socket I/O --------------------------------------------------------------------- */

/* Write what the socket takes now. KVC_OK (possibly partial) or a death. */
static int do_write(kvc_client *c)
{
	while (c->out.off < c->out.len) {
		ssize_t n = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			c->out.off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
			/* kvd closed; its last words (a refusal) may still be readable */
			c->wr_closed = 1;
			c->out.off = c->out.len;
			break;
		}
		return die(c, KVC_ECLOSED, "write to kvd at %s failed: %s", c->path,
			   n < 0 ? strerror(errno) : "short write");
	}
	buf_settle(&c->out);
	return KVC_OK;
}

/* Read what is available. KVC_OK (rd_eof may now be set) or a death. */
static int frame_ready(kvc_client *c);

static int do_read(kvc_client *c)
{
	size_t got = 0;
	while (got < READ_ROUND_MAX) {
		size_t want = IN_CHUNK, avail = c->in.len - c->in.off;
		if (avail >= 4) {
			uint32_t n = kv_wire_get_len(c->in.p + c->in.off);
			if (n > KVC_MAX_FRAME)
				return frame_ready(c) < 0 ? c->closed : KVC_OK; /* reports it */
			if (4 + (size_t)n > avail && 4 + (size_t)n - avail > want)
				want = 4 + (size_t)n - avail;
		}
		if (buf_reserve(&c->in, want) < 0)
			return die(c, KVC_ENOMEM, "out of memory reading a reply from kvd");
		size_t space = c->in.cap - c->in.len;
		ssize_t n = recv(c->fd, c->in.p + c->in.len, space, MSG_DONTWAIT);
		if (n > 0) {
			c->in.len += (size_t)n;
			got += (size_t)n;
			if ((size_t)n < space)
				break; /* drained: skip the recv that would say EAGAIN */
			continue;
		}
		if (n == 0) {
			c->rd_eof = 1;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		if (errno == ECONNRESET) {
			c->rd_eof = 1;
			break;
		}
		return die(c, KVC_ECLOSED, "read from kvd at %s failed: %s", c->path, strerror(errno));
	}
	return KVC_OK;
}

/* 1 when a whole frame is at in.off, 0 when more is needed, <0 (a death)
 * when the announced length is above the maximum (invariant 3). */
static int frame_ready(kvc_client *c)
{
	size_t avail = c->in.len - c->in.off;
	if (avail < 4)
		return 0;
	uint32_t n = kv_wire_get_len(c->in.p + c->in.off);
	if (n > KVC_MAX_FRAME) {
		die(c, KVC_EPROTO, "kvd at %s sent a %u-byte frame, above the %u-byte maximum",
		    c->path, n, KVC_MAX_FRAME);
		return -1;
	}
	return avail - 4 >= n;
}

enum { WANT_FLUSH, WANT_FRAME };

/*
 * Drive the socket until the goal holds: WANT_FLUSH = out is empty,
 * WANT_FRAME = a whole frame is in `in`. Reads whenever kvd sends (so a
 * long pipeline never deadlocks against kvd's backpressure) and writes
 * whenever there is output. KVC_OK, KVC_ETIMEOUT (client intact), or the
 * status of a death.
 */
static int io_run(kvc_client *c, int64_t deadline, int want)
{
	int polled = 0;
	/* The socket almost always takes a request at once: write before
	 * polling (one send instead of poll + send). */
	if (!c->closed && c->out.off < c->out.len) {
		int rc = do_write(c);
		if (rc)
			return rc;
	}
	for (;;) {
		if (c->closed)
			return c->closed;
		int pending_out = c->out.off < c->out.len;
		if (want == WANT_FRAME) {
			int r = frame_ready(c);
			if (r < 0)
				return c->closed;
			if (r > 0)
				return KVC_OK;
			if (c->rd_eof) {
				size_t avail = c->in.len - c->in.off;
				if (avail)
					return die(c, KVC_ECLOSED,
						   "kvd at %s closed the connection in the middle of a reply",
						   c->path);
				return die(c, KVC_ECLOSED,
					   "kvd at %s closed the connection (%zu request%s unanswered)",
					   c->path, c->qlen, c->qlen == 1 ? "" : "s");
			}
		} else if (!pending_out) {
			return KVC_OK;
		}
		int tmo = remaining(deadline);
		if (polled && tmo == 0)
			return fail(c, KVC_ETIMEOUT, "no %s kvd at %s before the deadline",
				    want == WANT_FRAME ? "reply from" : "progress writing to", c->path);
		struct pollfd p = { .fd = c->fd, .events = 0 };
		if (!c->rd_eof)
			p.events |= POLLIN;
		if (pending_out)
			p.events |= POLLOUT;
		int n;
		if (tmo == 0 && !polled) {
			/* Zero timeout (kvc_pipe_next(c, r, 0) in an event loop): the
			 * socket is non-blocking, so try the I/O itself instead of
			 * asking poll() first. */
			p.revents = p.events;
			n = 1;
		} else {
			n = poll(&p, 1, tmo);
		}
		polled = 1;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return die(c, KVC_ECLOSED, "poll on the connection to %s failed: %s", c->path,
				   strerror(errno));
		}
		if (n == 0)
			continue; /* the deadline check above reports it */
		if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && !c->rd_eof) {
			int rc = do_read(c);
			if (rc)
				return rc;
		}
		if (pending_out && (p.revents & (POLLOUT | POLLHUP | POLLERR))) {
			int rc = do_write(c);
			if (rc)
				return rc;
		}
		if (p.revents & POLLNVAL)
			return die(c, KVC_ECLOSED, "connection to %s: invalid descriptor", c->path);
	}
}

/* ---- frames in ---------------------------------------------------------------------- */

/*
 * Fetch the next reply that belongs to a live request, dropping replies of
 * abandoned ones (invariant 2). On KVC_OK *envp lives in the rx arena until
 * the next fetch, *methodp is the request's method and *finalp says whether
 * the request is complete (then it has left q). Non-OK: as io_run(), or a
 * protocol death; kvd's refusal of the connection (a reply with id 0 and a
 * status) closes the client with kvd's status.
 */
static int get_reply(kvc_client *c, int64_t deadline, Kv__Envelope **envp, int *methodp,
		     int *finalp)
{
	for (;;) {
		arena_reset(&c->rx);
		if (!c->qlen)
			return fail(c, KVC_EUSAGE, "no request is waiting for a reply");
		int rc = io_run(c, deadline, WANT_FRAME);
		if (rc)
			return rc;
		uint32_t n = kv_wire_get_len(c->in.p + c->in.off);
		Kv__Envelope *env = kv__envelope__unpack(&c->rx_alloc, n, c->in.p + c->in.off + 4);
		c->in.off += 4 + (size_t)n;
		buf_settle(&c->in);
		if (!env)
			return die(c, KVC_EPROTO, "kvd at %s sent a malformed reply envelope (%u bytes)",
				   c->path, n);
		struct pend *h = &c->q[c->qhead];
		if (env->id != h->id) {
			const char *msg = env->status_message ? env->status_message : "";
			if (env->id == 0 && env->status_code != 0)
				return die(c, map_status(env->status_code),
					   "kvd at %s refused the connection: %s%s%s", c->path,
					   kvc_status_str(map_status(env->status_code)), *msg ? ": " : "",
					   msg);
			return die(c, KVC_EPROTO,
				   "kvd at %s sent a reply for id %llu, expected id %llu", c->path,
				   (unsigned long long)env->id, (unsigned long long)h->id);
		}
		int method = h->method, abandoned = h->abandoned;
		int final = env->end_of_stream || env->status_code != 0 || method != KVC_M_SCAN;
		if (final)
			q_pop(c);
		if (abandoned)
			continue;
		*envp = env;
		*methodp = method;
		*finalp = final;
		return KVC_OK;
	}
}

/* ---- blocking calls ---------------------------------------------------------------- */

/* Queue req and write it out. On a timeout the request is abandoned. */
static int call_begin(kvc_client *c, int method, const ProtobufCMessage *req, int64_t *deadline)
{
	int rc = usable(c);
	if (rc)
		return rc;
	if (c->quser)
		return fail(c, KVC_EUSAGE, "%zu pipelined replies must be collected first", c->quser);
	*deadline = deadline_in(c->timeout_ms);
	rc = enqueue(c, method, req);
	arena_reset(&c->tx);
	if (rc)
		return rc;
	rc = io_run(c, *deadline, WANT_FLUSH);
	if (rc == KVC_ETIMEOUT)
		abandon_tail(c);
	return rc;
}

/* Wait for the next reply to the request of call_begin(). A non-OK status
 * from kvd is returned with its message as the last error. */
static int call_reply(kvc_client *c, int64_t deadline, Kv__Envelope **env, int *final)
{
	int method;
	int rc = get_reply(c, deadline, env, &method, final);
	if (rc == KVC_ETIMEOUT)
		abandon_tail(c);
	if (rc)
		return rc;
	if ((*env)->status_code) {
		int st = map_status((*env)->status_code);
		const char *m = (*env)->status_message;
		if (st == KVC_UNKNOWN && (*env)->status_code != KVC_UNKNOWN)
			return fail(c, st, "status %u: %s", (*env)->status_code, m ? m : "");
		return fail(c, st, "%s", m && *m ? m : kvc_status_str(st));
	}
	return KVC_OK;
}

static int unary(kvc_client *c, int method, const ProtobufCMessage *req, Kv__Envelope **env)
{
	int64_t deadline;
	int final;
	int rc = call_begin(c, method, req, &deadline);
	if (rc)
		return rc;
	return call_reply(c, deadline, env, &final);
}

static int bad_payload(kvc_client *c, const char *what, size_t len)
{
	return fail(c, KVC_EPROTO, "kvd at %s sent a malformed %s payload (%zu bytes)", c->path, what,
		    len);
}

static int check_key(kvc_client *c, const void *key, size_t klen)
{
	if (klen == 0 || !key)
		return fail(c, KVC_INVALID_ARGUMENT, "empty key");
	if (klen > KVC_MAX_KEY)
		return fail(c, KVC_RESOURCE_EXHAUSTED, "key is %zu bytes, the maximum is %u (64 KiB)",
			    klen, KVC_MAX_KEY);
	return KVC_OK;
}

static int check_value(kvc_client *c, const void *value, size_t vlen)
{
	if (vlen > KVC_MAX_VALUE)
		return fail(c, KVC_RESOURCE_EXHAUSTED,
			    "value is %zu bytes, the maximum is %u (64 MiB)", vlen, KVC_MAX_VALUE);
	if (vlen && !value)
		return fail(c, KVC_INVALID_ARGUMENT, "NULL value with a non-zero length");
	return KVC_OK;
}

static uint8_t *unconst(const void *p)
{
	return (uint8_t *)(uintptr_t)p;
}

KVC_API int kvc_ping(kvc_client *c, struct kvc_ping_info *info)
{
	Kv__PingRequest req = KV__PING_REQUEST__INIT;
	Kv__Envelope *env;
	if (info)
		memset(info, 0, sizeof *info);
	if (!c)
		return KVC_EUSAGE;
	int rc = unary(c, KVC_M_PING, &req.base, &env);
	if (rc || !info)
		return rc;
	Kv__PingReply *r = kv__ping_reply__unpack(&c->rx_alloc, env->payload.len, env->payload.data);
	if (!r)
		return bad_payload(c, "PingReply", env->payload.len);
	snprintf(info->version, sizeof info->version, "%s", r->version ? r->version : "");
	info->uptime_ms = r->uptime_ms;
	return KVC_OK;
}

KVC_API int kvc_get(kvc_client *c, const void *key, size_t klen, void **value, size_t *vlen,
		    uint64_t *expires_at)
{
	Kv__GetRequest req = KV__GET_REQUEST__INIT;
	Kv__Envelope *env;
	Kv__GetReply *r = NULL;
	int rc;

	if (value)
		*value = NULL;
	if (vlen)
		*vlen = 0;
	if (expires_at)
		*expires_at = 0;
	if (!c || !value || !vlen)
		return c ? fail(c, KVC_EUSAGE, "kvc_get: value and vlen are required") : KVC_EUSAGE;
	if ((rc = usable(c)) || (rc = check_key(c, key, klen)))
		return rc;
	req.key.data = unconst(key);
	req.key.len = klen;
	if ((rc = unary(c, KVC_M_GET, &req.base, &env)))
		goto out;
	/* System allocator: the value's buffer is handed to the caller as is. */
	r = kv__get_reply__unpack(NULL, env->payload.len, env->payload.data);
	if (!r) {
		rc = bad_payload(c, "GetReply", env->payload.len);
		goto out;
	}
	void *v = r->value.data;
	if (!v && !(v = malloc(1))) {
		rc = fail(c, KVC_ENOMEM, "out of memory");
		goto out;
	}
	*value = v;
	*vlen = r->value.len;
	if (expires_at)
		*expires_at = r->expires_at;
	r->value.data = NULL;
	r->value.len = 0;
	rc = KVC_OK;
out:
	if (r)
		kv__get_reply__free_unpacked(r, NULL);
	return rc;
}

static void fill_put(Kv__PutRequest *req, const void *key, size_t klen, const void *value,
		     size_t vlen, uint32_t ttl, unsigned flags)
{
	req->key.data = unconst(key);
	req->key.len = klen;
	req->value.data = unconst(value);
	req->value.len = vlen;
	req->ttl_seconds = ttl;
	req->sync = (flags & KVC_SYNC) != 0;
}

KVC_API int kvc_put(kvc_client *c, const void *key, size_t klen, const void *value, size_t vlen,
		    uint32_t ttl_seconds, unsigned flags)
{
	Kv__PutRequest req = KV__PUT_REQUEST__INIT;
	Kv__Envelope *env;
	int rc;
	if (!c)
		return KVC_EUSAGE;
	if ((rc = usable(c)) || (rc = check_key(c, key, klen)) || (rc = check_value(c, value, vlen)))
		return rc;
	fill_put(&req, key, klen, value, vlen, ttl_seconds, flags);
	return unary(c, KVC_M_PUT, &req.base, &env);
}

KVC_API int kvc_del(kvc_client *c, const void *key, size_t klen, unsigned flags)
{
	Kv__DeleteRequest req = KV__DELETE_REQUEST__INIT;
	Kv__Envelope *env;
	int rc;
	if (!c)
		return KVC_EUSAGE;
	if ((rc = usable(c)) || (rc = check_key(c, key, klen)))
		return rc;
	req.key.data = unconst(key);
	req.key.len = klen;
	req.sync = (flags & KVC_SYNC) != 0;
	return unary(c, KVC_M_DELETE, &req.base, &env);
}

/* Validate ops and build a BatchRequest in the tx arena (freed by the
 * caller's arena_reset). */
static int build_batch(kvc_client *c, const struct kvc_op *ops, size_t nops, unsigned flags,
		       Kv__BatchRequest *req)
{
	/* Each op costs at least 5 bytes on the wire: refuse hopeless batches
	 * before allocating anything for them. */
	if (nops > KVC_MAX_FRAME / 5)
		return fail(c, KVC_RESOURCE_EXHAUSTED, "batch of %zu operations cannot fit in a frame",
			    nops);
	if (nops && !ops)
		return fail(c, KVC_INVALID_ARGUMENT, "NULL ops with nops > 0");
	size_t total = 0;
	for (size_t i = 0; i < nops; i++) {
		int rc;
		if (ops[i].op != KVC_OP_PUT && ops[i].op != KVC_OP_DEL)
			return fail(c, KVC_INVALID_ARGUMENT, "batch op %zu: unknown type %d", i,
				    (int)ops[i].op);
		if ((rc = check_key(c, ops[i].key, ops[i].klen)))
			return fail(c, rc, "batch op %zu: %.200s", i, c->err);
		if (ops[i].op == KVC_OP_PUT && (rc = check_value(c, ops[i].value, ops[i].vlen)))
			return fail(c, rc, "batch op %zu: %.200s", i, c->err);
		total += ops[i].klen + (ops[i].op == KVC_OP_PUT ? ops[i].vlen : 0);
		if (total > KVC_MAX_FRAME)
			return fail(c, KVC_RESOURCE_EXHAUSTED,
				    "batch keys and values exceed the %u-byte frame maximum",
				    KVC_MAX_FRAME);
	}
	Kv__BatchOp *bops = NULL;
	Kv__BatchOp **ptrs = NULL;
	if (nops) {
		bops = arena_alloc(&c->tx, nops * sizeof *bops);
		ptrs = arena_alloc(&c->tx, nops * sizeof *ptrs);
		if (!bops || !ptrs)
			return fail(c, KVC_ENOMEM, "out of memory building a batch of %zu", nops);
	}
	for (size_t i = 0; i < nops; i++) {
		kv__batch_op__init(&bops[i]);
		bops[i].op = ops[i].op == KVC_OP_PUT ? KV__BATCH_OP__OP__PUT : KV__BATCH_OP__OP__DELETE;
		bops[i].key.data = unconst(ops[i].key);
		bops[i].key.len = ops[i].klen;
		if (ops[i].op == KVC_OP_PUT) {
			bops[i].value.data = unconst(ops[i].value);
			bops[i].value.len = ops[i].vlen;
			bops[i].ttl_seconds = ops[i].ttl_seconds;
		}
		ptrs[i] = &bops[i];
	}
	req->n_ops = nops;
	req->ops = ptrs;
	req->sync = (flags & KVC_SYNC) != 0;
	return KVC_OK;
}

KVC_API int kvc_batch(kvc_client *c, const struct kvc_op *ops, size_t nops, unsigned flags,
		      uint32_t *applied)
{
	Kv__BatchRequest req = KV__BATCH_REQUEST__INIT;
	Kv__Envelope *env;
	int rc;
	if (applied)
		*applied = 0;
	if (!c)
		return KVC_EUSAGE;
	if ((rc = usable(c)))
		return rc;
	if ((rc = build_batch(c, ops, nops, flags, &req))) {
		arena_reset(&c->tx);
		return rc;
	}
	if ((rc = unary(c, KVC_M_BATCH, &req.base, &env)) || !applied)
		return rc;
	Kv__BatchReply *r = kv__batch_reply__unpack(&c->rx_alloc, env->payload.len, env->payload.data);
	if (!r)
		return bad_payload(c, "BatchReply", env->payload.len);
	*applied = r->applied;
	return KVC_OK;
}

KVC_API int kvc_scan(kvc_client *c, const void *prefix, size_t plen, uint32_t limit,
		     unsigned flags, kvc_scan_cb cb, void *arg)
{
	Kv__ScanRequest req = KV__SCAN_REQUEST__INIT;
	Kv__Envelope *env;
	int64_t deadline;
	int rc, final = 0;

	if (!c)
		return KVC_EUSAGE;
	if ((rc = usable(c)))
		return rc;
	if (!cb)
		return fail(c, KVC_EUSAGE, "kvc_scan: callback required");
	if (plen > KVC_MAX_KEY)
		return fail(c, KVC_RESOURCE_EXHAUSTED, "prefix is %zu bytes, the maximum is %u", plen,
			    KVC_MAX_KEY);
	if (plen && !prefix)
		return fail(c, KVC_INVALID_ARGUMENT, "NULL prefix with a non-zero length");
	req.prefix.data = unconst(prefix);
	req.prefix.len = plen;
	req.limit = limit;
	req.keys_only = (flags & KVC_SCAN_KEYS_ONLY) != 0;
	if ((rc = call_begin(c, KVC_M_SCAN, &req.base, &deadline)))
		return rc;
	while (!final) {
		if ((rc = call_reply(c, deadline, &env, &final)))
			return rc;
		Kv__ScanReply *r =
			kv__scan_reply__unpack(&c->rx_alloc, env->payload.len, env->payload.data);
		if (!r) {
			if (!final)
				abandon_tail(c);
			return bad_payload(c, "ScanReply", env->payload.len);
		}
		for (size_t i = 0; i < r->n_items; i++) {
			const Kv__KeyValue *kv = r->items[i];
			if (cb(arg, kv->key.data ? kv->key.data : (const uint8_t *)"", kv->key.len,
			       kv->value.data ? kv->value.data : (const uint8_t *)"", kv->value.len)) {
				if (!final)
					abandon_tail(c);
				return fail(c, KVC_CANCELLED, "scan stopped by the caller");
			}
		}
		deadline = deadline_in(c->timeout_ms);
	}
	return KVC_OK;
}

static char *dupstr(const char *s)
{
	return strdup(s ? s : "");
}

KVC_API void kvc_stats_free(struct kvc_stats *s)
{
	if (!s)
		return;
	free(s->version);
	free(s->read_only_reason);
	free(s->sync_mode);
	free(s->merge_state);
	free(s->segment);
	free(s);
}

KVC_API int kvc_stats(kvc_client *c, struct kvc_stats **out)
{
	Kv__StatsRequest req = KV__STATS_REQUEST__INIT;
	Kv__Envelope *env;
	struct kvc_stats *s = NULL;
	int rc;

	if (out)
		*out = NULL;
	if (!c)
		return KVC_EUSAGE;
	if (!out)
		return fail(c, KVC_EUSAGE, "kvc_stats: out is required");
	if ((rc = unary(c, KVC_M_STATS, &req.base, &env)))
		goto out;
	Kv__StatsReply *r = kv__stats_reply__unpack(&c->rx_alloc, env->payload.len, env->payload.data);
	if (!r) {
		rc = bad_payload(c, "StatsReply", env->payload.len);
		goto out;
	}
	rc = fail(c, KVC_ENOMEM, "out of memory");
	if (!(s = calloc(1, sizeof *s)))
		goto out;
	s->version = dupstr(r->version);
	s->read_only_reason = dupstr(r->read_only_reason);
	s->sync_mode = dupstr(r->sync_mode);
	s->merge_state = dupstr(r->merge_state);
	if (!s->version || !s->read_only_reason || !s->sync_mode || !s->merge_state)
		goto out;
	if (r->n_segment && !(s->segment = calloc(r->n_segment, sizeof *s->segment)))
		goto out;
	for (size_t i = 0; i < r->n_segment; i++) {
		const Kv__SegmentStats *g = r->segment[i];
		s->segment[i] = (struct kvc_segment_stats){ g->id, g->bytes, g->live_bytes,
							    g->dead_bytes, g->active, g->has_hint };
	}
	s->nsegment = r->n_segment;
	s->uptime_ms = r->uptime_ms;
	s->keys = r->keys;
	s->segments = r->segments;
	s->disk_bytes = r->disk_bytes;
	s->live_bytes = r->live_bytes;
	s->dead_bytes = r->dead_bytes;
	s->keydir_bytes = r->keydir_bytes;
	s->keydir_bytes_per_key = r->keydir_bytes_per_key;
	s->key_bytes = r->key_bytes;
	s->connections = r->connections;
	s->requests = r->requests;
	s->read_only = r->read_only;
	s->syncs = r->syncs;
	s->synced_writes = r->synced_writes;
	s->sync_time_us = r->sync_time_us;
	s->poll_time_us = r->poll_time_us;
	s->poll_hits = r->poll_hits;
	s->poll_misses = r->poll_misses;
	s->poll_window_us = r->poll_window_us;
	s->io_uring = r->io_uring;
	s->io_batches = r->io_batches;
	s->io_batched_ops = r->io_batched_ops;
	s->merges = r->merges;
	s->merge_last_ms = r->merge_last_ms;
	s->merge_reclaimed_bytes = r->merge_reclaimed_bytes;
	*out = s;
	s = NULL;
	c->err[0] = '\0';
	rc = KVC_OK;
out:
	kvc_stats_free(s);
	return rc;
}

KVC_API int kvc_merge(kvc_client *c, int wait, struct kvc_merge_info *info)
{
	Kv__MergeRequest req = KV__MERGE_REQUEST__INIT;
	Kv__Envelope *env;
	if (info)
		memset(info, 0, sizeof *info);
	if (!c)
		return KVC_EUSAGE;
	req.wait = wait != 0;
	int rc = unary(c, KVC_M_MERGE, &req.base, &env);
	if (rc || !info)
		return rc;
	Kv__MergeReply *r = kv__merge_reply__unpack(&c->rx_alloc, env->payload.len, env->payload.data);
	if (!r)
		return bad_payload(c, "MergeReply", env->payload.len);
	snprintf(info->state, sizeof info->state, "%s", r->state ? r->state : "");
	info->reclaimed_bytes = r->reclaimed_bytes;
	info->duration_ms = r->duration_ms;
	return KVC_OK;
}

KVC_API int kvc_sync(kvc_client *c)
{
	Kv__SyncRequest req = KV__SYNC_REQUEST__INIT;
	Kv__Envelope *env;
	if (!c)
		return KVC_EUSAGE;
	return unary(c, KVC_M_SYNC, &req.base, &env);
}

/* ---- pipelined interface ------------------------------------------------------------ */

/* After a request was queued: one opportunistic write when a lot is waiting. */
static int pipe_queued(kvc_client *c, int rc)
{
	arena_reset(&c->tx);
	if (rc == KVC_OK && c->out.len - c->out.off > OUT_AUTOFLUSH)
		rc = do_write(c);
	return rc;
}

KVC_API int kvc_pipe_ping(kvc_client *c)
{
	Kv__PingRequest req = KV__PING_REQUEST__INIT;
	int rc;
	if (!c)
		return KVC_EUSAGE;
	if ((rc = usable(c)))
		return rc;
	return pipe_queued(c, enqueue(c, KVC_M_PING, &req.base));
}

KVC_API int kvc_pipe_get(kvc_client *c, const void *key, size_t klen)
{
	Kv__GetRequest req = KV__GET_REQUEST__INIT;
	int rc;
	if (!c)
		return KVC_EUSAGE;
	if ((rc = usable(c)) || (rc = check_key(c, key, klen)))
		return rc;
	req.key.data = unconst(key);
	req.key.len = klen;
	return pipe_queued(c, enqueue(c, KVC_M_GET, &req.base));
}

KVC_API int kvc_pipe_put(kvc_client *c, const void *key, size_t klen, const void *value,
			 size_t vlen, uint32_t ttl_seconds, unsigned flags)
{
	Kv__PutRequest req = KV__PUT_REQUEST__INIT;
	int rc;
	if (!c)
		return KVC_EUSAGE;
	if ((rc = usable(c)) || (rc = check_key(c, key, klen)) || (rc = check_value(c, value, vlen)))
		return rc;
	fill_put(&req, key, klen, value, vlen, ttl_seconds, flags);
	return pipe_queued(c, enqueue(c, KVC_M_PUT, &req.base));
}

KVC_API int kvc_pipe_del(kvc_client *c, const void *key, size_t klen, unsigned flags)
{
	Kv__DeleteRequest req = KV__DELETE_REQUEST__INIT;
	int rc;
	if (!c)
		return KVC_EUSAGE;
	if ((rc = usable(c)) || (rc = check_key(c, key, klen)))
		return rc;
	req.key.data = unconst(key);
	req.key.len = klen;
	req.sync = (flags & KVC_SYNC) != 0;
	return pipe_queued(c, enqueue(c, KVC_M_DELETE, &req.base));
}

KVC_API int kvc_pipe_batch(kvc_client *c, const struct kvc_op *ops, size_t nops, unsigned flags)
{
	Kv__BatchRequest req = KV__BATCH_REQUEST__INIT;
	int rc;
	if (!c)
		return KVC_EUSAGE;
	if ((rc = usable(c)))
		return rc;
	if ((rc = build_batch(c, ops, nops, flags, &req)))
		return pipe_queued(c, rc);
	return pipe_queued(c, enqueue(c, KVC_M_BATCH, &req.base));
}

KVC_API int kvc_pipe_flush(kvc_client *c)
{
	int rc;
	if (!c)
		return KVC_EUSAGE;
	if ((rc = usable(c)))
		return rc;
	return io_run(c, deadline_in(c->timeout_ms), WANT_FLUSH);
}

KVC_API int kvc_pipe_send(kvc_client *c)
{
	int rc;
	if (!c)
		return KVC_EUSAGE;
	if ((rc = usable(c)))
		return rc;
	if ((rc = do_write(c)))
		return rc;
	if (c->out.off < c->out.len)
		return fail(c, KVC_ETIMEOUT, "the socket to kvd at %s is full", c->path);
	return KVC_OK;
}

KVC_API int kvc_fd(const kvc_client *c)
{
	return c && !c->closed ? c->fd : -1;
}

KVC_API size_t kvc_pipe_pending(const kvc_client *c)
{
	return c ? c->quser : 0;
}

KVC_API int kvc_pipe_next(kvc_client *c, struct kvc_reply *r, int timeout_ms)
{
	Kv__Envelope *env;
	int rc, method, final;

	if (r)
		memset(r, 0, sizeof *r);
	if (!c)
		return KVC_EUSAGE;
	if ((rc = usable(c)))
		return rc;
	if (!r)
		return fail(c, KVC_EUSAGE, "kvc_pipe_next: r is required");
	if (!c->quser)
		return fail(c, KVC_EUSAGE, "no pipelined request is pending");
	int64_t deadline = timeout_ms < 0 ? deadline_in(c->timeout_ms) : now_ms() + timeout_ms;
	if ((rc = get_reply(c, deadline, &env, &method, &final)))
		return rc;
	r->id = env->id;
	r->method = method;
	r->status = map_status(env->status_code);
	r->message = env->status_message ? env->status_message : "";
	if (r->status != KVC_OK)
		return KVC_OK;
	if (method == KVC_M_GET) {
		Kv__GetReply *g =
			kv__get_reply__unpack(&c->rx_alloc, env->payload.len, env->payload.data);
		if (!g) {
			r->status = KVC_EPROTO;
			r->message = "malformed GetReply payload";
			return KVC_OK;
		}
		r->value = g->value.data ? g->value.data : (const uint8_t *)"";
		r->vlen = g->value.len;
		r->expires_at = g->expires_at;
	} else if (method == KVC_M_BATCH) {
		Kv__BatchReply *b =
			kv__batch_reply__unpack(&c->rx_alloc, env->payload.len, env->payload.data);
		if (!b) {
			r->status = KVC_EPROTO;
			r->message = "malformed BatchReply payload";
			return KVC_OK;
		}
		r->applied = b->applied;
	}
	return KVC_OK;
}
