/*
 * kv_rpc.h — the method handlers of service kv.KV: unpack a request
 * payload, run it against the engine, and describe the reply.
 *
 * Knows nothing of sockets, connections or the event loop: kv_server.c
 * frames the result, decides when it may leave (group commit), and streams
 * Scan by calling kv_rpc_scan_next() while the client drains its output.
 *
 * Owns: the Scan cursors it creates (struct kv_rpc_scan, freed with
 * kv_rpc_scan_free()). Everything a result points at lives in ctx->arena
 * or ctx->val or is static, valid until the caller resets the arena.
 *
 * Invariants:
 *  1. Methods are looked up through the generated kv__kv__descriptor;
 *     enum kv_rpc_method is only the index into its methods[], and
 *     kv_rpc_init() checks at start-up that index i has the request type
 *     the handler for i expects, so a reordered kv.proto fails loudly.
 *  2. A handler that appended to the engine sets res->write and res->hold;
 *     its OK must not reach the client before the commit step (flush, and
 *     sync when res->sync or --sync always) has succeeded.
 *  3. A handler never leaves a partially applied write: the engine applies
 *     a Batch atomically, and every validation happens before the call.
 *  4. Merge with wait=true gives no reply at once but a ticket
 *     (res->wait_merge): the server holds that request's place in the
 *     connection's reply order and builds the reply with
 *     kv_rpc_merge_result() when kv_jobs reports the ticket's end.
 */
#ifndef KV_RPC_H
#define KV_RPC_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "kv_arena.h"
#include "kv_engine.h"
#include "kv_jobs.h"

/* Index of each method in kv__kv__descriptor.methods (checked, inv. 1). */
enum kv_rpc_method {
	KV_RPC_PING,
	KV_RPC_GET,
	KV_RPC_PUT,
	KV_RPC_DELETE,
	KV_RPC_BATCH,
	KV_RPC_SCAN,
	KV_RPC_STATS,
	KV_RPC_MERGE,
	KV_RPC_SYNC,
	KV_RPC_NMETHODS
};

/* Server-side figures that Ping and Stats report; owned by the server. */
struct kv_rpc_counters {
	uint64_t start_ms;      /* CLOCK_MONOTONIC at start, ms */
	uint64_t connections;   /* open now */
	uint64_t requests;      /* frames executed since start */
	uint64_t syncs;         /* successful kv_engine_sync() with unsynced data */
	uint64_t synced_writes; /* write requests covered by those syncs */
	uint64_t sync_ns;       /* time spent in those syncs (loop and sync thread) */
	const char *sync_mode;  /* "always", "interval:1000", "never" */
	const struct kv_poll *poll; /* the loop's polling figures; NULL: none */
	int io_uring;           /* the loop batches its I/O through io_uring now */
	uint64_t io_batches;    /* io_uring submissions */
	uint64_t io_batched_ops; /* reads and writes they carried */
};

/* What a handler may use; all owned by the server. */
struct kv_rpc_ctx {
	kv_engine *engine;
	struct kv_arena *arena;           /* request lifetime allocations */
	struct kv_buf *val;               /* reusable value buffer */
	const struct kv_rpc_counters *ctr;
	struct kv_jobs *jobs;             /* Merge requests; NULL: UNAVAILABLE */
};

struct kv_rpc_scan;

/* The outcome of one call. */
struct kv_rpc_result {
	uint32_t code;                 /* kv.StatusCode; 0 = OK */
	const char *message;           /* static or arena; NULL when OK */
	const ProtobufCMessage *reply; /* static or arena; NULL = no payload */
	int write;                     /* appended to the engine (counts as a write) */
	int hold;                      /* reply waits for the commit step (inv. 2) */
	int sync;                      /* the commit step must fdatasync */
	struct kv_rpc_scan *scan;      /* Scan: a stream to continue; owned by
	                                  the caller once returned */
	uint64_t wait_merge;           /* Merge with wait: no reply yet; the
	                                  kv_jobs ticket to wait for (inv. 4) */
};

/* Check the generated service descriptor against enum kv_rpc_method.
 * Returns 0, or -1 with a reason in err. */
int kv_rpc_init(char *err, size_t errlen);

/* Method index for name (NUL-terminated), or -1 when there is none. */
int kv_rpc_lookup(const char *name);

/* The method's name as spelled in kv.proto (static). */
const char *kv_rpc_method_name(int m);

/* Run method m on the serialized request payload[0..len). Always fills
 * *res (an error status when the payload is malformed). */
void kv_rpc_call(const struct kv_rpc_ctx *ctx, int m, const uint8_t *payload, size_t len,
		 struct kv_rpc_result *res);

/* Produce the next ScanReply of sc into *res (reply or error status).
 * Returns 1 when more replies follow, 0 when this one is the last (it
 * carries end_of_stream). Bounded work: at most KV_RPC_SCAN_ITEMS items or
 * about KV_RPC_SCAN_BYTES bytes per reply. */
int kv_rpc_scan_next(const struct kv_rpc_ctx *ctx, struct kv_rpc_scan *sc,
		     struct kv_rpc_result *res);

/* The reply to a waiting Merge request once its merge ended (inv. 4):
 * MergeReply{state "done" or "nothing to merge", reclaimed_bytes,
 * duration_ms}, or INTERNAL "merge failed: ..." (UNAVAILABLE when the
 * engine is read-only or kvd is stopping). */
void kv_rpc_merge_result(const struct kv_rpc_ctx *ctx, const struct kv_merge_outcome *o,
			 struct kv_rpc_result *res);

/* Close the engine iterator and free sc. sc may be NULL. */
void kv_rpc_scan_free(struct kv_rpc_scan *sc);

#define KV_RPC_SCAN_ITEMS 256
#define KV_RPC_SCAN_BYTES (64u * 1024u)

/* Map an engine return code to a kv.StatusCode (KV_ENOTFOUND → NOT_FOUND,
 * KV_ETOOBIG → RESOURCE_EXHAUSTED, ...). */
uint32_t kv_rpc_status_of(int rc);

#endif /* KV_RPC_H */
