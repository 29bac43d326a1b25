/*
 * kv_arena.c — per-request bump allocator (see kv_arena.h for invariants).
 *
 * A chunk is a header followed by KV_ARENA_CHUNK payload bytes; a big
 * block is the same header followed by exactly the bytes asked for. When
 * the current chunk cannot fit an allocation, its tail is wasted and the
 * next spare (or a new) chunk becomes current.
 */
#include "kv_arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct kv_arena_chunk {
	struct kv_arena_chunk *next;
	size_t size; /* payload bytes */
	alignas(max_align_t) char data[];
};

#define ALIGN (alignof(max_align_t))

static void *pb_alloc(void *data, size_t n)
{
	return kv_arena_alloc(data, n);
}

static void pb_free(void *data, void *p)
{
	(void)data;
	(void)p; /* invariant 1: freed all at once by kv_arena_reset() */
}

void kv_arena_init(struct kv_arena *a)
{
	memset(a, 0, sizeof *a);
	a->pb.alloc = pb_alloc;
	a->pb.free = pb_free;
	a->pb.allocator_data = a;
}

static size_t round_up(size_t n)
{
	return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

void *kv_arena_alloc(struct kv_arena *a, size_t n)
{
	size_t need = round_up(n ? n : 1);
	if (need < n) /* overflow */
		return NULL;
	if (need > KV_ARENA_BIG) {
		if (need > SIZE_MAX - sizeof(struct kv_arena_chunk))
			return NULL;
		struct kv_arena_chunk *b = malloc(sizeof *b + need);
		if (!b)
			return NULL;
		b->size = need;
		b->next = a->big;
		a->big = b;
		a->used += need;
		if (a->used > a->peak)
			a->peak = a->used;
		return b->data;
	}
	if (need > a->left) {
		struct kv_arena_chunk *c = a->spare;
		if (c) {
			a->spare = c->next;
		} else {
			c = malloc(sizeof *c + KV_ARENA_CHUNK);
			if (!c)
				return NULL;
			c->size = KV_ARENA_CHUNK;
		}
		c->next = a->chunks;
		a->chunks = c;
		a->ptr = c->data;
		a->left = c->size;
	}
	void *p = a->ptr;
	a->ptr += need;
	a->left -= need;
	a->used += need;
	if (a->used > a->peak)
		a->peak = a->used;
	return p;
}

char *kv_arena_strndup(struct kv_arena *a, const char *s, size_t n)
{
	char *p = kv_arena_alloc(a, n + 1);
	if (!p)
		return NULL;
	if (n)
		memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static void free_list(struct kv_arena_chunk *c)
{
	while (c) {
		struct kv_arena_chunk *n = c->next;
		free(c);
		c = n;
	}
}

void kv_arena_reset(struct kv_arena *a)
{
	free_list(a->big);
	a->big = NULL;
	/* Every chunk in use becomes spare; keep KV_ARENA_KEEP bytes of spares
	 * (invariant 2) and free the rest. */
	while (a->chunks) {
		struct kv_arena_chunk *c = a->chunks;
		a->chunks = c->next;
		c->next = a->spare;
		a->spare = c;
	}
	size_t kept = 0;
	struct kv_arena_chunk **pp = &a->spare;
	while (*pp && kept + (*pp)->size <= KV_ARENA_KEEP) {
		kept += (*pp)->size;
		pp = &(*pp)->next;
	}
	free_list(*pp);
	*pp = NULL;
	a->ptr = NULL;
	a->left = 0;
	a->used = 0;
}

void kv_arena_free(struct kv_arena *a)
{
	free_list(a->big);
	free_list(a->chunks);
	free_list(a->spare);
	kv_arena_init(a);
}
