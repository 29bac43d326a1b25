/*
 * kv_arena.h — a bump allocator for the lifetime of one request, exposed
 * as a ProtobufCAllocator so protobuf-c unpacks requests into it and the
 * handlers build replies in it.
 *
 * Owns: the chunks in use, spare chunks kept across resets, and "big"
 * blocks (one malloc each, for allocations above KV_ARENA_BIG).
 *
 * Invariants:
 *  1. Every pointer handed out stays valid until the next kv_arena_reset();
 *     free() through the ProtobufCAllocator is a no-op.
 *  2. After a reset the arena holds at most KV_ARENA_KEEP bytes of chunks
 *     and no big block, so one 64 MiB request does not pin 64 MiB.
 *  3. Pointers are aligned for any type (alignof(max_align_t)).
 *
 * Why one arena for the server rather than one per connection: the loop
 * runs each request to completion (unpack, execute, pack the reply into
 * the connection's output buffer) before it looks at the next one, so
 * nothing in the arena outlives a request, and 1,000 idle connections do
 * not each pin a chunk.
 */
#ifndef KV_ARENA_H
#define KV_ARENA_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#define KV_ARENA_CHUNK (64u * 1024u)   /* size of a regular chunk */
#define KV_ARENA_BIG (16u * 1024u)     /* above this: a block of its own */
#define KV_ARENA_KEEP (256u * 1024u)   /* chunk bytes kept across resets */

struct kv_arena_chunk;

struct kv_arena {
	struct kv_arena_chunk *chunks; /* in use, newest (current) first; owned */
	struct kv_arena_chunk *spare;  /* free chunks for reuse; owned */
	struct kv_arena_chunk *big;    /* big blocks; owned, freed on reset */
	char *ptr;                     /* next free byte of chunks */
	size_t left;                   /* bytes free at ptr */
	size_t used;                   /* bytes handed out since reset (stats) */
	size_t peak;                   /* largest `used` seen */
	ProtobufCAllocator pb;         /* allocator_data = this arena */
};

/* Set up an empty arena (no allocation yet). */
void kv_arena_init(struct kv_arena *a);

/* n bytes (n may be 0), or NULL when malloc fails. See invariant 1. */
void *kv_arena_alloc(struct kv_arena *a, size_t n);

/* Copy of s[0..n) plus a NUL, in the arena; NULL on failure. */
char *kv_arena_strndup(struct kv_arena *a, const char *s, size_t n);

/* Forget every allocation; see invariant 2. */
void kv_arena_reset(struct kv_arena *a);

/* Free everything; the arena may be initialised again. */
void kv_arena_free(struct kv_arena *a);

#endif /* KV_ARENA_H */
