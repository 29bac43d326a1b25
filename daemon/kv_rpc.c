/*
 * kv_rpc.c — handlers of service kv.KV (see kv_rpc.h for the invariants).
 *
 * Each handler: unpack its request with the method's input descriptor into
 * the arena, validate (key 1 B..64 KiB, value ≤ 64 MiB, known batch op),
 * call the engine, fill the reply in the arena. Status messages are one
 * line, built in the arena.
 */
#include "kv_rpc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv.pb-c.h"
#include "kv_poll.h"

struct kv_rpc_scan {
	kv_iter *it;
	uint32_t limit;   /* 0 = none */
	uint32_t sent;    /* items produced so far */
	int keys_only;
	int err;          /* an iterator error still to report, or 0 */
	int done;         /* the end was reached; next reply is the last */
};

/* The request type each handler expects at its index (invariant 1). */
static const ProtobufCMessageDescriptor *const expected_input[KV_RPC_NMETHODS] = {
	[KV_RPC_PING] = &kv__ping_request__descriptor,
	[KV_RPC_GET] = &kv__get_request__descriptor,
	[KV_RPC_PUT] = &kv__put_request__descriptor,
	[KV_RPC_DELETE] = &kv__delete_request__descriptor,
	[KV_RPC_BATCH] = &kv__batch_request__descriptor,
	[KV_RPC_SCAN] = &kv__scan_request__descriptor,
	[KV_RPC_STATS] = &kv__stats_request__descriptor,
	[KV_RPC_MERGE] = &kv__merge_request__descriptor,
	[KV_RPC_SYNC] = &kv__sync_request__descriptor,
};

int kv_rpc_init(char *err, size_t errlen)
{
	const ProtobufCServiceDescriptor *sd = &kv__kv__descriptor;
	if (sd->n_methods != KV_RPC_NMETHODS) {
		snprintf(err, errlen, "service kv.KV has %u methods, kvd knows %d", sd->n_methods,
			 KV_RPC_NMETHODS);
		return -1;
	}
	for (unsigned i = 0; i < sd->n_methods; i++) {
		const ProtobufCMethodDescriptor *md = &sd->methods[i];
		if (md->input != expected_input[i]) {
			snprintf(err, errlen, "method %s at index %u does not take %s", md->name, i,
				 expected_input[i]->name);
			return -1;
		}
		if (kv_rpc_lookup(md->name) != (int)i) {
			snprintf(err, errlen, "method lookup of %s is broken", md->name);
			return -1;
		}
	}
	return 0;
}

int kv_rpc_lookup(const char *name)
{
	const ProtobufCMethodDescriptor *md =
		protobuf_c_service_descriptor_get_method_by_name(&kv__kv__descriptor, name);
	if (!md)
		return -1;
	return (int)(md - kv__kv__descriptor.methods);
}

const char *kv_rpc_method_name(int m)
{
	if (m < 0 || m >= (int)kv__kv__descriptor.n_methods)
		return "";
	return kv__kv__descriptor.methods[m].name;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- results ------------------------------------------------------------ */

__attribute__((format(printf, 4, 5))) static void fail(const struct kv_rpc_ctx *ctx,
						       struct kv_rpc_result *res, uint32_t code,
						       const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof buf)
		n = sizeof buf - 1;
	res->code = code;
	res->reply = NULL;
	res->message = kv_arena_strndup(ctx->arena, buf, (size_t)n);
	if (!res->message)
		res->message = "out of memory";
}

uint32_t kv_rpc_status_of(int rc)
{
	switch (rc) {
	case 0:
		return KV__STATUS_CODE__OK;
	case KV_ENOTFOUND:
		return KV__STATUS_CODE__NOT_FOUND;
	case KV_ETOOBIG:
		return KV__STATUS_CODE__RESOURCE_EXHAUSTED;
	case KV_EBADKEY:
		return KV__STATUS_CODE__INVALID_ARGUMENT;
	case KV_EREADONLY:
		return KV__STATUS_CODE__UNAVAILABLE;
	case KV_ECORRUPT:
		return KV__STATUS_CODE__DATA_LOSS;
	default:
		return KV__STATUS_CODE__INTERNAL;
	}
}

/* A write that failed with an I/O error (-errno) has just turned the
 * engine read-only: report it like every later write, UNAVAILABLE with the
 * reason, never as an INTERNAL bug. */
static void fail_write(const struct kv_rpc_ctx *ctx, struct kv_rpc_result *res, int rc,
		       const char *what);

/* An engine error rc (< 0) as a status; what names the operation. */
static void fail_engine(const struct kv_rpc_ctx *ctx, struct kv_rpc_result *res, int rc,
			const char *what)
{
	uint32_t code = kv_rpc_status_of(rc);
	if (rc == KV_EREADONLY) {
		const char *why = kv_engine_readonly_reason(ctx->engine);
		fail(ctx, res, code, "read-only after I/O error: %s", why && *why ? why : "unknown");
	} else if (rc == KV_ENOTFOUND) {
		fail(ctx, res, code, "key not found");
	} else if (code == KV__STATUS_CODE__INTERNAL) {
		fail(ctx, res, code, "%s: %s", what, kv_strerror(rc));
	} else {
		fail(ctx, res, code, "%s", kv_strerror(rc));
	}
}

static void fail_write(const struct kv_rpc_ctx *ctx, struct kv_rpc_result *res, int rc,
		       const char *what)
{
	if (rc > KV_ENOTFOUND && rc < 0 && kv_engine_readonly(ctx->engine)) /* -errno */
		rc = KV_EREADONLY;
	fail_engine(ctx, res, rc, what);
}

/* 0 when key is acceptable, else fills res. tag prefixes the message. */
static int check_key(const struct kv_rpc_ctx *ctx, struct kv_rpc_result *res,
		     const ProtobufCBinaryData *k, const char *tag)
{
	if (k->len == 0) {
		fail(ctx, res, KV__STATUS_CODE__INVALID_ARGUMENT, "%sempty key", tag);
		return -1;
	}
	if (k->len > KV_MAX_KEY) {
		fail(ctx, res, KV__STATUS_CODE__RESOURCE_EXHAUSTED,
		     "%skey too large (%zu bytes, max %u)", tag, k->len, KV_MAX_KEY);
		return -1;
	}
	return 0;
}

static int check_value(const struct kv_rpc_ctx *ctx, struct kv_rpc_result *res,
		       const ProtobufCBinaryData *v, const char *tag)
{
	if (v->len > KV_MAX_VALUE) {
		fail(ctx, res, KV__STATUS_CODE__RESOURCE_EXHAUSTED,
		     "%svalue too large (%zu bytes, max %u)", tag, v->len, KV_MAX_VALUE);
		return -1;
	}
	return 0;
}

/* ---- handlers -------------------------------------------------------------- */

static void rpc_ping(const struct kv_rpc_ctx *ctx, const Kv__PingRequest *rq,
		     struct kv_rpc_result *res)
{
	(void)rq;
	Kv__PingReply *r = kv_arena_alloc(ctx->arena, sizeof *r);
	if (!r) {
		fail(ctx, res, KV__STATUS_CODE__RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	kv__ping_reply__init(r);
	r->version = (char *)KV_VERSION_STRING;
	r->uptime_ms = now_ms() - ctx->ctr->start_ms;
	res->reply = &r->base;
}

static void rpc_get(const struct kv_rpc_ctx *ctx, const Kv__GetRequest *rq,
		    struct kv_rpc_result *res)
{
	if (check_key(ctx, res, &rq->key, "") < 0)
		return;
	Kv__GetReply *r = kv_arena_alloc(ctx->arena, sizeof *r);
	if (!r) {
		fail(ctx, res, KV__STATUS_CODE__RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	kv__get_reply__init(r);
	uint64_t exp = 0;
	ctx->val->len = 0;
	int rc = kv_engine_get(ctx->engine, rq->key.data, rq->key.len, ctx->val, &exp);
	if (rc < 0) {
		fail_engine(ctx, res, rc, "get");
		return;
	}
	r->value.data = (uint8_t *)ctx->val->data;
	r->value.len = ctx->val->len;
	r->expires_at = exp;
	res->reply = &r->base;
}

static void rpc_put(const struct kv_rpc_ctx *ctx, const Kv__PutRequest *rq,
		    struct kv_rpc_result *res)
{
	static const Kv__PutReply reply = KV__PUT_REPLY__INIT;
	if (check_key(ctx, res, &rq->key, "") < 0 || check_value(ctx, res, &rq->value, "") < 0)
		return;
	int rc = kv_engine_put(ctx->engine, rq->key.data, rq->key.len, rq->value.data,
			       rq->value.len, rq->ttl_seconds);
	if (rc < 0) {
		fail_write(ctx, res, rc, "put");
		return;
	}
	res->reply = &reply.base;
	res->write = res->hold = 1;
	res->sync = rq->sync ? 1 : 0;
}

static void rpc_delete(const struct kv_rpc_ctx *ctx, const Kv__DeleteRequest *rq,
		       struct kv_rpc_result *res)
{
	static const Kv__DeleteReply reply = KV__DELETE_REPLY__INIT;
	if (check_key(ctx, res, &rq->key, "") < 0)
		return;
	int rc = kv_engine_delete(ctx->engine, rq->key.data, rq->key.len);
	if (rc < 0) {
		fail_write(ctx, res, rc, "delete");
		return;
	}
	res->reply = &reply.base;
	res->write = res->hold = 1;
	res->sync = rq->sync ? 1 : 0;
}

static void rpc_batch(const struct kv_rpc_ctx *ctx, const Kv__BatchRequest *rq,
		      struct kv_rpc_result *res)
{
	Kv__BatchReply *r = kv_arena_alloc(ctx->arena, sizeof *r);
	struct kv_batch_op *ops = NULL;
	if (rq->n_ops > 0)
		ops = kv_arena_alloc(ctx->arena, rq->n_ops * sizeof *ops);
	if (!r || (rq->n_ops > 0 && !ops)) {
		fail(ctx, res, KV__STATUS_CODE__RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	kv__batch_reply__init(r);
	for (size_t i = 0; i < rq->n_ops; i++) {
		const Kv__BatchOp *op = rq->ops[i];
		char tag[32];
		snprintf(tag, sizeof tag, "op %zu: ", i);
		if (check_key(ctx, res, &op->key, tag) < 0)
			return;
		ops[i].key = op->key.data;
		ops[i].klen = op->key.len;
		ops[i].val = NULL;
		ops[i].vlen = 0;
		ops[i].ttl_seconds = 0;
		if (op->op == KV__BATCH_OP__OP__PUT) {
			if (check_value(ctx, res, &op->value, tag) < 0)
				return;
			ops[i].type = KV_OP_PUT;
			ops[i].val = op->value.data;
			ops[i].vlen = op->value.len;
			ops[i].ttl_seconds = op->ttl_seconds;
		} else if (op->op == KV__BATCH_OP__OP__DELETE) {
			ops[i].type = KV_OP_DELETE;
		} else {
			fail(ctx, res, KV__STATUS_CODE__INVALID_ARGUMENT, "%sunknown operation %d", tag,
			     (int)op->op);
			return;
		}
	}
	res->reply = &r->base;
	if (rq->n_ops == 0) /* nothing to append, nothing to wait for */
		return;
	int rc = kv_engine_batch(ctx->engine, ops, rq->n_ops);
	if (rc < 0) {
		fail_write(ctx, res, rc, "batch");
		return;
	}
	r->applied = (uint32_t)rc;
	res->write = res->hold = 1;
	res->sync = rq->sync ? 1 : 0;
}

static void rpc_scan(const struct kv_rpc_ctx *ctx, const Kv__ScanRequest *rq,
		     struct kv_rpc_result *res)
{
	if (rq->prefix.len > KV_MAX_KEY) {
		fail(ctx, res, KV__STATUS_CODE__INVALID_ARGUMENT,
		     "prefix too large (%zu bytes, max %u)", rq->prefix.len, KV_MAX_KEY);
		return;
	}
	struct kv_rpc_scan *sc = calloc(1, sizeof *sc);
	if (!sc) {
		fail(ctx, res, KV__STATUS_CODE__RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	int rc = kv_iter_open(ctx->engine, rq->prefix.data, rq->prefix.len, &sc->it);
	if (rc < 0) {
		free(sc);
		fail_engine(ctx, res, rc, "scan");
		return;
	}
	sc->limit = rq->limit;
	sc->keys_only = rq->keys_only ? 1 : 0;
	res->scan = sc;
}

int kv_rpc_scan_next(const struct kv_rpc_ctx *ctx, struct kv_rpc_scan *sc,
		     struct kv_rpc_result *res)
{
	memset(res, 0, sizeof *res);
	if (sc->err) {
		fail_engine(ctx, res, sc->err, "scan");
		return 0;
	}
	Kv__ScanReply *r = kv_arena_alloc(ctx->arena, sizeof *r);
	Kv__KeyValue **items = kv_arena_alloc(ctx->arena, KV_RPC_SCAN_ITEMS * sizeof *items);
	if (!r || !items) {
		fail(ctx, res, KV__STATUS_CODE__RESOURCE_EXHAUSTED, "out of memory");
		return 0;
	}
	kv__scan_reply__init(r);
	r->items = items;
	size_t bytes = 0;
	while (!sc->done && r->n_items < KV_RPC_SCAN_ITEMS && bytes < KV_RPC_SCAN_BYTES) {
		if (sc->limit && sc->sent >= sc->limit) {
			sc->done = 1;
			break;
		}
		const void *k = NULL;
		size_t klen = 0;
		ctx->val->len = 0;
		int rc = kv_iter_next(sc->it, &k, &klen, sc->keys_only ? NULL : ctx->val);
		if (rc == 0) {
			sc->done = 1;
			break;
		}
		if (rc < 0) {
			sc->err = rc;
			if (r->n_items == 0) {
				fail_engine(ctx, res, rc, "scan");
				return 0;
			}
			break; /* send what we have; the error follows as the last reply */
		}
		Kv__KeyValue *kv = kv_arena_alloc(ctx->arena, sizeof *kv);
		uint8_t *kc = kv_arena_alloc(ctx->arena, klen);
		uint8_t *vc = NULL;
		size_t vlen = sc->keys_only ? 0 : ctx->val->len;
		if (vlen)
			vc = kv_arena_alloc(ctx->arena, vlen);
		if (!kv || !kc || (vlen && !vc)) {
			fail(ctx, res, KV__STATUS_CODE__RESOURCE_EXHAUSTED, "out of memory");
			return 0;
		}
		kv__key_value__init(kv);
		memcpy(kc, k, klen);
		kv->key.data = kc;
		kv->key.len = klen;
		if (vlen) {
			memcpy(vc, ctx->val->data, vlen);
			kv->value.data = vc;
			kv->value.len = vlen;
		}
		items[r->n_items++] = kv;
		sc->sent++;
		bytes += klen + vlen + 16;
	}
	if (sc->limit && sc->sent >= sc->limit)
		sc->done = 1;
	res->reply = &r->base;
	return sc->done ? 0 : 1;
}

void kv_rpc_scan_free(struct kv_rpc_scan *sc)
{
	if (!sc)
		return;
	kv_iter_close(sc->it);
	free(sc);
}

static void rpc_stats(const struct kv_rpc_ctx *ctx, const Kv__StatsRequest *rq,
		      struct kv_rpc_result *res)
{
	(void)rq;
	struct kv_stats st;
	memset(&st, 0, sizeof st);
	Kv__StatsReply *r = kv_arena_alloc(ctx->arena, sizeof *r);
	if (!r) {
		fail(ctx, res, KV__STATUS_CODE__RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	kv__stats_reply__init(r);
	int rc = kv_engine_stats(ctx->engine, &st);
	if (rc < 0) {
		fail_engine(ctx, res, rc, "stats");
		return;
	}
	r->version = (char *)KV_VERSION_STRING;
	r->uptime_ms = now_ms() - ctx->ctr->start_ms;
	r->keys = st.keys;
	r->segments = st.segments;
	r->disk_bytes = st.disk_bytes;
	r->live_bytes = st.live_bytes;
	r->dead_bytes = st.dead_bytes;
	r->keydir_bytes = st.keydir_bytes;
	r->keydir_bytes_per_key = st.keydir_bytes_per_key;
	r->key_bytes = st.key_bytes;
	r->connections = ctx->ctr->connections;
	r->requests = ctx->ctr->requests;
	r->read_only = kv_engine_readonly(ctx->engine) ? 1 : 0;
	if (r->read_only) {
		const char *why = kv_engine_readonly_reason(ctx->engine);
		r->read_only_reason = kv_arena_strndup(ctx->arena, why ? why : "", why ? strlen(why) : 0);
		if (!r->read_only_reason)
			r->read_only_reason = (char *)"";
	}
	r->sync_mode = (char *)ctx->ctr->sync_mode;
	r->syncs = ctx->ctr->syncs;
	r->synced_writes = ctx->ctr->synced_writes;
	r->sync_time_us = ctx->ctr->sync_ns / 1000u;
	if (ctx->ctr->poll) {
		r->poll_time_us = ctx->ctr->poll->poll_ns / 1000u;
		r->poll_hits = ctx->ctr->poll->hits;
		r->poll_misses = ctx->ctr->poll->misses;
		r->poll_window_us = ctx->ctr->poll->window_ns / 1000u;
	}
	r->io_uring = ctx->ctr->io_uring ? 1 : 0;
	r->io_batches = ctx->ctr->io_batches;
	r->io_batched_ops = ctx->ctr->io_batched_ops;
	/* merge_reclaimed_bytes: the total since start (with merges, the
	 * count); merge_last_ms: the duration of the last one. */
	r->merge_state = (char *)(st.merge.state ? st.merge.state : "idle");
	r->merges = st.merge.merges;
	r->merge_last_ms = st.merge.last_ms;
	r->merge_reclaimed_bytes = st.merge.total_reclaimed;
	if (st.nsegs > 0) {
		Kv__SegmentStats *segs = kv_arena_alloc(ctx->arena, st.nsegs * sizeof *segs);
		Kv__SegmentStats **ptrs = kv_arena_alloc(ctx->arena, st.nsegs * sizeof *ptrs);
		if (!segs || !ptrs) {
			kv_stats_free(&st);
			fail(ctx, res, KV__STATUS_CODE__RESOURCE_EXHAUSTED, "out of memory");
			return;
		}
		for (size_t i = 0; i < st.nsegs; i++) {
			kv__segment_stats__init(&segs[i]);
			segs[i].id = st.seg[i].id;
			segs[i].bytes = st.seg[i].bytes;
			segs[i].live_bytes = st.seg[i].live_bytes;
			segs[i].dead_bytes = st.seg[i].dead_bytes;
			segs[i].active = st.seg[i].active ? 1 : 0;
			segs[i].has_hint = st.seg[i].has_hint ? 1 : 0;
			ptrs[i] = &segs[i];
		}
		r->segment = ptrs;
		r->n_segment = st.nsegs;
	}
	kv_stats_free(&st);
	res->reply = &r->base;
}

/* MergeReply{state} in the arena; NULL when out of memory. */
static Kv__MergeReply *merge_reply(const struct kv_rpc_ctx *ctx, const char *state)
{
	Kv__MergeReply *r = kv_arena_alloc(ctx->arena, sizeof *r);
	if (!r)
		return NULL;
	kv__merge_reply__init(r);
	r->state = (char *)state;
	return r;
}

static void merge_failed(const struct kv_rpc_ctx *ctx, struct kv_rpc_result *res,
			 const struct kv_merge_outcome *o)
{
	uint32_t code = o->rc == KV_EREADONLY || o->rc == -ESHUTDOWN ? KV__STATUS_CODE__UNAVAILABLE
								    : KV__STATUS_CODE__INTERNAL;
	fail(ctx, res, code, "%s", o->error[0] ? o->error : kv_strerror(o->rc));
}

/* Start a merge, or schedule one after the running one (kv_jobs). */
static void rpc_merge(const struct kv_rpc_ctx *ctx, const Kv__MergeRequest *rq,
		      struct kv_rpc_result *res)
{
	struct kv_merge_outcome o;
	uint64_t ticket = 0;
	const char *state = NULL;
	if (!ctx->jobs) {
		fail(ctx, res, KV__STATUS_CODE__UNAVAILABLE, "merges are not available");
		return;
	}
	switch (kv_jobs_merge(ctx->jobs, &ticket, &o)) {
	case KV_MERGE_STARTED:
		state = "started";
		break;
	case KV_MERGE_SCHEDULED:
		state = "scheduled";
		break;
	case KV_MERGE_NOTHING:
		state = "nothing to merge";
		ticket = 0; /* answered now, wait or not */
		break;
	case KV_MERGE_FAILED:
		merge_failed(ctx, res, &o);
		return;
	}
	if (rq->wait && ticket) {
		res->wait_merge = ticket; /* invariant 4 */
		return;
	}
	Kv__MergeReply *r = merge_reply(ctx, state);
	if (!r) {
		fail(ctx, res, KV__STATUS_CODE__RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	res->reply = &r->base;
}

void kv_rpc_merge_result(const struct kv_rpc_ctx *ctx, const struct kv_merge_outcome *o,
			 struct kv_rpc_result *res)
{
	memset(res, 0, sizeof *res);
	if (o->rc < 0) {
		merge_failed(ctx, res, o);
		return;
	}
	Kv__MergeReply *r = merge_reply(ctx, o->rc == 1 ? "nothing to merge" : "done");
	if (!r) {
		fail(ctx, res, KV__STATUS_CODE__RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	r->reclaimed_bytes = o->reclaimed_bytes;
	r->duration_ms = o->duration_ms;
	res->reply = &r->base;
}

static void rpc_sync(const struct kv_rpc_ctx *ctx, const Kv__SyncRequest *rq,
		     struct kv_rpc_result *res)
{
	static const Kv__SyncReply reply = KV__SYNC_REPLY__INIT;
	(void)ctx;
	(void)rq;
	res->reply = &reply.base;
	res->hold = res->sync = 1; /* the commit step flushes and syncs */
}

void kv_rpc_call(const struct kv_rpc_ctx *ctx, int m, const uint8_t *payload, size_t len,
		 struct kv_rpc_result *res)
{
	memset(res, 0, sizeof *res);
	if (m < 0 || m >= KV_RPC_NMETHODS) {
		fail(ctx, res, KV__STATUS_CODE__UNIMPLEMENTED, "unknown method");
		return;
	}
	const ProtobufCMethodDescriptor *md = &kv__kv__descriptor.methods[m];
	ProtobufCMessage *rq = protobuf_c_message_unpack(md->input, &ctx->arena->pb, len, payload);
	if (!rq) {
		fail(ctx, res, KV__STATUS_CODE__INVALID_ARGUMENT, "malformed %s payload",
		     md->input->name);
		return;
	}
	switch ((enum kv_rpc_method)m) {
	case KV_RPC_PING:
		rpc_ping(ctx, (const Kv__PingRequest *)rq, res);
		break;
	case KV_RPC_GET:
		rpc_get(ctx, (const Kv__GetRequest *)rq, res);
		break;
	case KV_RPC_PUT:
		rpc_put(ctx, (const Kv__PutRequest *)rq, res);
		break;
	case KV_RPC_DELETE:
		rpc_delete(ctx, (const Kv__DeleteRequest *)rq, res);
		break;
	case KV_RPC_BATCH:
		rpc_batch(ctx, (const Kv__BatchRequest *)rq, res);
		break;
	case KV_RPC_SCAN:
		rpc_scan(ctx, (const Kv__ScanRequest *)rq, res);
		break;
	case KV_RPC_STATS:
		rpc_stats(ctx, (const Kv__StatsRequest *)rq, res);
		break;
	case KV_RPC_MERGE:
		rpc_merge(ctx, (const Kv__MergeRequest *)rq, res);
		break;
	case KV_RPC_SYNC:
		rpc_sync(ctx, (const Kv__SyncRequest *)rq, res);
		break;
	case KV_RPC_NMETHODS:
		break;
	}
}
