/*
 * kv_frame.h — the wire framing of kvd: a 4-byte big-endian length, then
 * one kv.Envelope (proto/kv.proto, proto/PROTOCOL.md). The length prefix,
 * its limit and the varint encoding come from proto/kv_wire.h, shared with
 * libkvclient.
 *
 * Owns nothing; works on evbuffers owned by the caller.
 *
 * Invariants:
 *  1. A length is looked at (peeked) before anything is allocated for its
 *     frame; a length above KV_FRAME_MAX is reported as too big and never
 *     allocated or read.
 *  2. A reply is packed straight into the output evbuffer, in one
 *     contiguous reserved extent, after the sizes are known: no temporary
 *     copy of the payload.
 *  3. The Envelope is packed by protobuf-c; only the payload field (tag and
 *     length, then the inner message packed by protobuf-c) is appended by
 *     hand, after the other fields. Protobuf parsers accept fields in any
 *     order, and its tag is taken from the generated descriptor.
 */
#ifndef KV_FRAME_H
#define KV_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <protobuf-c/protobuf-c.h>

#include "kv.pb-c.h"
#include "kv_wire.h"

/* Largest frame body accepted: a 64 MiB value plus room for the key and
 * the envelope (the wire contract's limit). */
#define KV_FRAME_MAX KV_WIRE_FRAME_MAX

enum {
	KV_FRAME_NEED_MORE = 0, /* the head frame is not complete yet */
	KV_FRAME_READY = 1,     /* 4 + *body_len bytes are there */
	KV_FRAME_TOO_BIG = -1,  /* *body_len > KV_FRAME_MAX (invariant 1) */
};

/* Check the descriptor of kv.Envelope (payload field present, bytes).
 * Returns 0, or -1 with a reason in err. Call once at start-up. */
int kv_frame_init(char *err, size_t errlen);

/* Look at the head of in. *body_len is set whenever 4 bytes are there. */
int kv_frame_peek(struct evbuffer *in, uint32_t *body_len);

/* Remove the head frame (READY, body_len bytes) from in and unpack its
 * Envelope with alloc. Returns the envelope (owned by alloc), or NULL when
 * it is malformed or allocation failed; the frame is consumed either way. */
Kv__Envelope *kv_frame_take(struct evbuffer *in, uint32_t body_len, ProtobufCAllocator *alloc);

/* For prefetching ahead of a pipelined batch: the method name and the key
 * (field 1 of the request: Get, Put, Delete) of a request frame body,
 * found by walking the Envelope's fields without unpacking or allocating.
 * Returns 1 with *method and *mlen (not NUL-terminated), *key and *klen
 * pointing into body, 0 when there is no such key or the bytes are not
 * well-formed (the real unpack decides what to answer). */
int kv_frame_peek_key(const uint8_t *body, size_t len, const uint8_t **method, size_t *mlen,
		      const uint8_t **key, size_t *klen);

/* One reply frame. method and message may be NULL (empty); payload may be
 * NULL (no payload). All borrowed for the call. */
struct kv_reply {
	uint64_t id;
	const char *method;
	uint32_t code;       /* kv.StatusCode */
	const char *message; /* status message, one line */
	int end_of_stream;
	const ProtobufCMessage *payload;
};

/* Append r to out as one frame. Returns the bytes appended (> 0), or -1
 * when the frame would exceed 4 GiB or evbuffer memory ran out (out is
 * unchanged then). */
long long kv_frame_put_reply(struct evbuffer *out, const struct kv_reply *r);

#endif /* KV_FRAME_H */
