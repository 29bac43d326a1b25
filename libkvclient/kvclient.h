/*
 * kvclient.h — libkvclient, the C client of kvd. The only public header.
 *
 * A kvc_client is one Unix-socket connection to kvd speaking the protocol
 * of proto/PROTOCOL.md (length-prefixed kv.Envelope frames). It offers
 *   - blocking calls, one per method of `service KV` (kvc_ping ...
 *     kvc_sync), each bounded by the client's timeout;
 *   - a pipelined interface (kvc_pipe_*): queue many requests into one
 *     output buffer without waiting, then collect the replies in order.
 *     Frames are built in one buffer, written and read in large chunks:
 *     no syscall and (in steady state) no malloc per request.
 *
 * Threads: a client is used by one thread at a time; distinct clients are
 * independent. The library never prints, never exits, and never raises
 * SIGPIPE (it writes with MSG_NOSIGNAL).
 *
 * Bytes: keys, values and prefixes are byte arrays with explicit lengths
 * (binary safe, no NUL termination). Buffers passed in are borrowed for the
 * duration of the call only: the library copies what it keeps.
 *
 * Return values: every function returning int returns a kvc_status: 0 on
 * success, a gRPC canonical code (1..16) when kvd (or the client-side
 * validation, which uses the code kvd would use) refused the request, or a
 * client-side code >= 100 (KVC_ECONNECT ...) when the transport failed.
 * kvc_last_error() gives a one-line explanation of the latest failure.
 *
 * Connection state: after KVC_ECLOSED or KVC_EPROTO, or after kvd refused
 * the connection (a reply with id 0: UNAVAILABLE "too many connections",
 * PERMISSION_DENIED ...), the client is closed for good: every later call
 * returns KVC_ECLOSED and kvc_connected() returns 0; free it with
 * kvc_close() and connect again. A timeout (KVC_ETIMEOUT) does NOT break
 * the client: the late reply is recognised by its id and discarded when it
 * arrives. A timed-out request may still have been executed by kvd.
 */
#ifndef KVCLIENT_H
#define KVCLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define KVC_API __attribute__((visibility("default")))
#else
#define KVC_API
#endif

/* Library version (the .so is libkvclient.so.1, API/ABI generation 1). */
#define KVC_VERSION "1.0.0"
/* Runtime version of the linked library; static string. */
KVC_API const char *kvc_version(void);

/* Limits of the protocol, checked client-side before anything is sent. */
#define KVC_MAX_KEY (64u * 1024u)            /* key: 1 B .. 64 KiB */
#define KVC_MAX_VALUE (64u * 1024u * 1024u)  /* value: 0 B .. 64 MiB */
#define KVC_MAX_FRAME (KVC_MAX_VALUE + 1024u * 1024u) /* frame body, both ways */

enum kvc_status {
	/* gRPC canonical codes, as sent by kvd (kv.StatusCode). */
	KVC_OK = 0,
	KVC_CANCELLED = 1,         /* also: a kvc_scan callback stopped the scan */
	KVC_UNKNOWN = 2,           /* also: kvd sent a status number above 16 */
	KVC_INVALID_ARGUMENT = 3,  /* empty key, malformed request */
	KVC_DEADLINE_EXCEEDED = 4,
	KVC_NOT_FOUND = 5,         /* get/del of an absent or expired key */
	KVC_ALREADY_EXISTS = 6,
	KVC_PERMISSION_DENIED = 7,
	KVC_RESOURCE_EXHAUSTED = 8, /* key, value or frame above its limit */
	KVC_FAILED_PRECONDITION = 9,
	KVC_ABORTED = 10,
	KVC_OUT_OF_RANGE = 11,
	KVC_UNIMPLEMENTED = 12,
	KVC_INTERNAL = 13,
	KVC_UNAVAILABLE = 14,      /* shutting down, read-only, too many connections */
	KVC_DATA_LOSS = 15,
	KVC_UNAUTHENTICATED = 16,
	/* Client-side codes: never sent by kvd. */
	KVC_ECONNECT = 100,  /* cannot connect (errno-style reason in the message) */
	KVC_ECLOSED = 101,   /* connection closed by kvd or broken; client unusable */
	KVC_ETIMEOUT = 102,  /* no progress before the deadline; client still usable */
	KVC_EPROTO = 103,    /* kvd sent something that violates the protocol */
	KVC_ENOMEM = 104,    /* out of memory */
	KVC_EUSAGE = 105,    /* API misuse, e.g. a blocking call while pipelined
	                        replies are still to be collected */
};

/* Name of a status: "OK", "NOT_FOUND", ..., "TIMEOUT", "CONNECTION_CLOSED".
 * Static string, never NULL ("UNKNOWN_STATUS" for other numbers). */
KVC_API const char *kvc_status_str(int status);

typedef struct kvc_client kvc_client;

/*
 * Connect to kvd at socket_path. timeout_ms bounds the connect and becomes
 * the client's default per-call timeout (<= 0: wait forever).
 * On success returns KVC_OK and *out is a client owned by the caller, to be
 * freed with kvc_close(). On failure returns KVC_ECONNECT (or KVC_ENOMEM),
 * *out is NULL, errno tells the cause (ENOENT, ECONNREFUSED, EACCES,
 * ENAMETOOLONG, ETIMEDOUT ...), and when err is not NULL a one-line message
 * naming the path is written to err[errlen] (always NUL-terminated).
 * Connecting sends nothing: a refusal by kvd (too many connections,
 * permission denied) is reported by the first call.
 */
KVC_API int kvc_connect(const char *socket_path, int timeout_ms, kvc_client **out, char *err,
			size_t errlen);

/* Close the connection and free c and everything it owns, including any
 * borrowed pointer it handed out. c may be NULL. Queued requests not yet
 * written are dropped. */
KVC_API void kvc_close(kvc_client *c);

/* Per-call timeout in milliseconds for later calls (<= 0: wait forever).
 * A blocking call fails with KVC_ETIMEOUT when it has not completed this
 * long after it started; kvc_scan restarts the clock at every reply frame. */
KVC_API void kvc_set_timeout(kvc_client *c, int timeout_ms);
KVC_API int kvc_get_timeout(const kvc_client *c);

/* One line describing the latest failed call on c ("" after a success).
 * Owned by c; valid until the next call on c or kvc_close(). Never NULL. */
KVC_API const char *kvc_last_error(const kvc_client *c);

/* 1 while the connection is usable, 0 once it is closed for good (see the
 * top of this file). */
KVC_API int kvc_connected(const kvc_client *c);

/* Free memory the library allocated for the caller (kvc_get values,
 * kvc_stats_json text). p may be NULL. */
KVC_API void kvc_free(void *p);

/* Flags for writes. */
#define KVC_SYNC 1u /* reply only once the write is on stable storage */

/* --- blocking calls ------------------------------------------------------
 * Each sends one request and waits (up to the timeout) for its reply. They
 * return KVC_EUSAGE when pipelined replies are still to be collected. */

struct kvc_ping_info {
	char version[32];   /* kvd's version, NUL-terminated (truncated if longer) */
	uint64_t uptime_ms;
};
/* info may be NULL. */
KVC_API int kvc_ping(kvc_client *c, struct kvc_ping_info *info);

/*
 * Get the value of key. On KVC_OK *value is a malloc'ed copy owned by the
 * caller, freed with kvc_free() (never NULL, even for an empty value), and
 * *vlen its length; expires_at (may be NULL) receives the expiry in unix
 * seconds, 0 = never. On any failure *value is NULL and *vlen 0;
 * KVC_NOT_FOUND when the key is absent or expired.
 */
KVC_API int kvc_get(kvc_client *c, const void *key, size_t klen, void **value, size_t *vlen,
		    uint64_t *expires_at);

/* Store value under key. ttl_seconds 0 = no expiry. flags: KVC_SYNC. */
KVC_API int kvc_put(kvc_client *c, const void *key, size_t klen, const void *value, size_t vlen,
		    uint32_t ttl_seconds, unsigned flags);

/* Delete key. KVC_NOT_FOUND when it did not exist. flags: KVC_SYNC. */
KVC_API int kvc_del(kvc_client *c, const void *key, size_t klen, unsigned flags);

enum kvc_op_type { KVC_OP_PUT = 0, KVC_OP_DEL = 1 };
struct kvc_op {
	enum kvc_op_type op;
	const void *key;     /* borrowed for the call */
	size_t klen;
	const void *value;   /* KVC_OP_PUT only; borrowed; may be NULL if vlen 0 */
	size_t vlen;
	uint32_t ttl_seconds; /* KVC_OP_PUT only */
};
/* Apply nops operations atomically (all or none). Deleting an absent key is
 * not an error. applied (may be NULL) receives kvd's count. The whole
 * request must fit in one frame (KVC_MAX_FRAME), else
 * KVC_RESOURCE_EXHAUSTED before anything is sent. flags: KVC_SYNC. */
KVC_API int kvc_batch(kvc_client *c, const struct kvc_op *ops, size_t nops, unsigned flags,
		      uint32_t *applied);

/* Scan callback: one call per item. key/value are borrowed, valid during
 * the call only (value is empty with KVC_SCAN_KEYS_ONLY). Return 0 to go
 * on, non-zero to stop: kvc_scan then returns KVC_CANCELLED and the rest of
 * the stream is discarded as it arrives (by later calls on the client).
 * The callback must not call any function on the same client. */
typedef int (*kvc_scan_cb)(void *arg, const void *key, size_t klen, const void *value,
			   size_t vlen);
#define KVC_SCAN_KEYS_ONLY 1u
/* Every live key starting with prefix (plen 0: all keys), values as of the
 * start of the scan, in kvd's order. limit 0 = no limit. flags:
 * KVC_SCAN_KEYS_ONLY. The timeout applies to each reply frame. */
KVC_API int kvc_scan(kvc_client *c, const void *prefix, size_t plen, uint32_t limit,
		     unsigned flags, kvc_scan_cb cb, void *arg);

struct kvc_segment_stats {
	uint32_t id;
	uint64_t bytes;       /* file size */
	uint64_t live_bytes;  /* records the keydir points at */
	uint64_t dead_bytes;  /* overwritten, deleted, tombstones */
	int active;           /* the segment being appended to */
	int has_hint;
};
/* kv.StatsReply. Allocated by the library (fields may be appended in later
 * versions: never allocate or copy it by value). Every string is
 * NUL-terminated, never NULL, owned by the struct. */
struct kvc_stats {
	char *version;
	uint64_t uptime_ms;
	uint64_t keys;
	uint64_t segments;
	uint64_t disk_bytes;
	uint64_t live_bytes;
	uint64_t dead_bytes;
	uint64_t keydir_bytes;
	double keydir_bytes_per_key;
	uint64_t key_bytes;
	uint64_t connections;
	uint64_t requests;
	int read_only;
	char *read_only_reason;
	char *sync_mode;
	uint64_t syncs;
	uint64_t synced_writes;
	char *merge_state;
	uint64_t merges;
	uint64_t merge_last_ms;
	uint64_t merge_reclaimed_bytes;
	struct kvc_segment_stats *segment; /* nsegment entries, owned by the struct */
	size_t nsegment;
	uint64_t sync_time_us; /* time kvd spent in those syncs */
	/* kvd's loop polling before it sleeps (kvd --poll-us): time spent
	 * polling, idle periods a request ended while it polled, polls that
	 * ran out, the current window. */
	uint64_t poll_time_us;
	uint64_t poll_hits;
	uint64_t poll_misses;
	uint64_t poll_window_us;
	/* kvd's batched I/O (kvd --io-uring): on now, io_uring submissions,
	 * the socket reads and writes they carried. */
	int io_uring;
	uint64_t io_batches;
	uint64_t io_batched_ops;
};
/* On KVC_OK *out is owned by the caller, freed with kvc_stats_free();
 * NULL on failure. */
KVC_API int kvc_stats(kvc_client *c, struct kvc_stats **out);
/* Free s and everything it points at. s may be NULL. */
KVC_API void kvc_stats_free(struct kvc_stats *s);
/* Format s as one line of JSON text (an object whose keys are the proto
 * field names; 64-bit counters as JSON numbers; strings escaped, invalid
 * UTF-8 replaced by U+FFFD). On KVC_OK *json is a NUL-terminated string
 * owned by the caller, freed with kvc_free(); len (may be NULL) gets its
 * length. KVC_ENOMEM on failure. */
KVC_API int kvc_stats_json(const struct kvc_stats *s, char **json, size_t *len);

struct kvc_merge_info {
	char state[32];       /* "started", "scheduled", "done" (NUL-terminated) */
	uint64_t reclaimed_bytes;
	uint64_t duration_ms;
};
/* Ask kvd to merge. wait != 0: the reply comes when the merge has finished
 * (set a long timeout). info may be NULL. */
KVC_API int kvc_merge(kvc_client *c, int wait, struct kvc_merge_info *info);

/* Make every acknowledged write durable. */
KVC_API int kvc_sync(kvc_client *c);

/* --- pipelined interface ---------------------------------------------------
 * kvc_pipe_ping/get/put/del/batch append one request frame to the client's
 * output buffer (copying key and value) and return at once: KVC_OK, a
 * validation code (KVC_INVALID_ARGUMENT, KVC_RESOURCE_EXHAUSTED: nothing
 * queued), KVC_ENOMEM, or KVC_ECLOSED. When the buffer holds more than
 * 256 KiB they also try one non-blocking write. kvc_pipe_flush() writes
 * everything queued (bounded by the timeout); kvc_pipe_next() flushes too,
 * so calling flush is optional. Replies come back in the order of the
 * requests. Blocking calls are refused (KVC_EUSAGE) until every queued
 * request's reply has been collected. Scan, stats, merge and sync are
 * blocking only.
 */
KVC_API int kvc_pipe_ping(kvc_client *c);
KVC_API int kvc_pipe_get(kvc_client *c, const void *key, size_t klen);
KVC_API int kvc_pipe_put(kvc_client *c, const void *key, size_t klen, const void *value,
			 size_t vlen, uint32_t ttl_seconds, unsigned flags);
KVC_API int kvc_pipe_del(kvc_client *c, const void *key, size_t klen, unsigned flags);
KVC_API int kvc_pipe_batch(kvc_client *c, const struct kvc_op *ops, size_t nops, unsigned flags);

/* Write all queued bytes. KVC_OK, KVC_ETIMEOUT (the rest stays queued and
 * is written by the next flush or next), or KVC_ECLOSED. While writing it
 * also reads whatever replies arrive, so a long pipeline cannot deadlock
 * against kvd's backpressure. A connection closed by kvd during the write
 * is reported by kvc_pipe_next(), which can then return kvd's reason. */
KVC_API int kvc_pipe_flush(kvc_client *c);

/* --- event loops over many clients ---
 * A program that drives many clients from one thread waits on their
 * sockets itself (poll, epoll) and calls only non-blocking functions:
 * kvc_pipe_send() to write, kvc_pipe_next(c, r, 0) to collect what has
 * arrived (it reads the socket only when no whole reply is buffered).
 *
 * kvc_fd: the client's socket, to wait on for POLLIN (replies) and, while
 * kvc_pipe_send() reports KVC_ETIMEOUT, POLLOUT. -1 once the client is
 * closed. Never read, write or close it yourself. */
KVC_API int kvc_fd(const kvc_client *c);

/* Write what the socket takes now of the queued requests, never waiting.
 * KVC_OK when nothing is left queued, KVC_ETIMEOUT when some is (wait for
 * POLLOUT and call again), or KVC_ECLOSED. */
KVC_API int kvc_pipe_send(kvc_client *c);

/* Number of queued requests whose reply has not been collected yet. */
KVC_API size_t kvc_pipe_pending(const kvc_client *c);

enum kvc_method {
	KVC_M_PING = 0, KVC_M_GET, KVC_M_PUT, KVC_M_DELETE, KVC_M_BATCH,
	KVC_M_SCAN, KVC_M_STATS, KVC_M_MERGE, KVC_M_SYNC
};
/* "Ping", "Get", ... exactly as in `service KV`; static, never NULL. */
KVC_API const char *kvc_method_name(int method);

/* One collected reply. Every pointer is borrowed from c and stays valid
 * until the next call on c (any function taking c) or kvc_close(). */
struct kvc_reply {
	uint64_t id;          /* the request's id (1, 2, 3 ... per client) */
	int method;           /* enum kvc_method of the request */
	int status;           /* kvd's status: KVC_OK, KVC_NOT_FOUND ...; or
	                         KVC_EPROTO if the reply payload was malformed */
	const char *message;  /* kvd's status message; "" when none; never NULL */
	const uint8_t *value; /* Get with KVC_OK: the value (non-NULL even when
	                         empty); NULL otherwise */
	size_t vlen;
	uint64_t expires_at;  /* Get: unix seconds, 0 = never */
	uint32_t applied;     /* Batch: operations applied */
};

/*
 * Collect the reply to the oldest queued request, flushing queued output
 * as needed. timeout_ms < 0: the client's timeout; 0: do not wait (only
 * what is already buffered or readable now); > 0: wait up to that long.
 * Returns KVC_OK with *r filled (r->status is kvd's verdict), KVC_ETIMEOUT
 * when no reply arrived in time (nothing is lost: call again), KVC_EUSAGE
 * when nothing is pending, or the transport failure (KVC_ECLOSED,
 * KVC_EPROTO, or kvd's refusal of the connection, e.g. KVC_UNAVAILABLE):
 * the client is then closed and every pending request is dropped
 * (kvc_pipe_pending() becomes 0).
 */
KVC_API int kvc_pipe_next(kvc_client *c, struct kvc_reply *r, int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* KVCLIENT_H */
