/*
 * kv_wire.h — the framing of the kvd wire protocol for the C code of this
 * tree. Part of the wire contract, with kv.proto, and documented in
 * proto/PROTOCOL.md ("Transport and framing"): change the three together.
 *
 * A frame is N, a 4-byte big-endian length, then N bytes: one serialized
 * kv.Envelope. N above KV_WIRE_FRAME_MAX is refused by both sides before
 * anything is allocated for it. The varint helpers let a sender append
 * the Envelope's payload field (tag, length) by hand and pack the inner
 * message straight after it, instead of copying it twice.
 *
 * Shared by kvd (daemon/kv_frame.c) and libkvclient (kvclient.c), which
 * must not include each other's code. Header-only (static inline) and
 * libc headers only: no protobuf, no libevent (tests/check_layering.sh).
 */
#ifndef KV_WIRE_H
#define KV_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* Largest frame body (N) either side accepts: a 64 MiB value plus room for
 * the key and the envelope (68,157,440 bytes). */
#define KV_WIRE_FRAME_MAX (64u * 1024u * 1024u + 1024u * 1024u)

/* The body length N announced by the 4 bytes at p. */
static inline uint32_t kv_wire_get_len(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Write the length prefix for an n-byte body at p (4 bytes). */
static inline void kv_wire_put_len(uint8_t *p, uint32_t n)
{
	p[0] = (uint8_t)(n >> 24);
	p[1] = (uint8_t)(n >> 16);
	p[2] = (uint8_t)(n >> 8);
	p[3] = (uint8_t)n;
}

/* Bytes of the protobuf varint encoding of v (1..10). */
static inline size_t kv_wire_varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Write v as a protobuf varint at p (room for kv_wire_varint_len(v) bytes);
 * returns the bytes written. */
static inline size_t kv_wire_varint_put(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

#endif /* KV_WIRE_H */
