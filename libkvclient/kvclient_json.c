/*
 * kvclient_json.c — kvc_stats_json(): a struct kvc_stats as one line of
 * JSON text. Pure formatting: no socket, no protobuf, no state.
 *
 * Owns nothing beyond the string it returns (the caller frees it with
 * kvc_free()). Invariants: the output is always valid JSON — strings are
 * escaped, invalid UTF-8 becomes U+FFFD, a non-finite double becomes null —
 * and on any allocation failure nothing is returned (KVC_ENOMEM).
 */
#include "kvclient.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


struct sbuf {
	char *p;
	size_t len, cap;
	int oom;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->cap - b->len <= n) {
		size_t ncap = b->cap ? b->cap : 512;
		while (ncap - b->len <= n)
			ncap *= 2;
		char *np = realloc(b->p, ncap);
		if (!np) {
			b->oom = 1;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof tmp) {
		b->oom = 1; /* every caller formats short numbers */
		return;
	}
	sb_put(b, tmp, (size_t)n);
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;
		if (c == 0xed)
			hi = 0x9f; /* no surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;
		if (c == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

static void sb_json_str(struct sbuf *b, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = strlen(str);
	sb_put(b, "\"", 1);
	for (size_t i = 0; i < n;) {
		unsigned char c = s[i];
		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };
			sb_put(b, e, 2);
			i++;
		} else if (c < 0x20 || c == 0x7f) {
			sb_printf(b, "\\u%04x", c);
			i++;
		} else {
			size_t l = utf8_len(s + i, n - i);
			if (l == 0) {
				sb_put(b, "\\ufffd", 6);
				i++;
			} else {
				sb_put(b, (const char *)s + i, l);
				i += l;
			}
		}
	}
	sb_put(b, "\"", 1);
}

static void sb_key(struct sbuf *b, const char *key)
{
	if (b->len > 1 && b->p[b->len - 1] != '{' && b->p[b->len - 1] != '[')
		sb_put(b, ",", 1);
	sb_json_str(b, key);
	sb_put(b, ":", 1);
}

static void sb_u64(struct sbuf *b, const char *key, uint64_t v)
{
	sb_key(b, key);
	sb_printf(b, "%llu", (unsigned long long)v);
}

static void sb_bool(struct sbuf *b, const char *key, int v)
{
	sb_key(b, key);
	sb_put(b, v ? "true" : "false", v ? 4 : 5);
}

static void sb_str(struct sbuf *b, const char *key, const char *v)
{
	sb_key(b, key);
	sb_json_str(b, v ? v : "");
}

KVC_API int kvc_stats_json(const struct kvc_stats *s, char **json, size_t *len)
{
	struct sbuf b = { 0 };
	if (json)
		*json = NULL;
	if (len)
		*len = 0;
	if (!s || !json)
		return KVC_EUSAGE;
	sb_put(&b, "{", 1);
	sb_str(&b, "version", s->version);
	sb_u64(&b, "uptime_ms", s->uptime_ms);
	sb_u64(&b, "keys", s->keys);
	sb_u64(&b, "segments", s->segments);
	sb_u64(&b, "disk_bytes", s->disk_bytes);
	sb_u64(&b, "live_bytes", s->live_bytes);
	sb_u64(&b, "dead_bytes", s->dead_bytes);
	sb_u64(&b, "keydir_bytes", s->keydir_bytes);
	sb_key(&b, "keydir_bytes_per_key");
	if (isfinite(s->keydir_bytes_per_key))
		sb_printf(&b, "%.15g", s->keydir_bytes_per_key);
	else
		sb_put(&b, "null", 4);
	sb_u64(&b, "key_bytes", s->key_bytes);
	sb_u64(&b, "connections", s->connections);
	sb_u64(&b, "requests", s->requests);
	sb_bool(&b, "read_only", s->read_only);
	sb_str(&b, "read_only_reason", s->read_only_reason);
	sb_str(&b, "sync_mode", s->sync_mode);
	sb_u64(&b, "syncs", s->syncs);
	sb_u64(&b, "synced_writes", s->synced_writes);
	sb_u64(&b, "sync_time_us", s->sync_time_us);
	sb_u64(&b, "poll_time_us", s->poll_time_us);
	sb_u64(&b, "poll_hits", s->poll_hits);
	sb_u64(&b, "poll_misses", s->poll_misses);
	sb_u64(&b, "poll_window_us", s->poll_window_us);
	sb_bool(&b, "io_uring", s->io_uring);
	sb_u64(&b, "io_batches", s->io_batches);
	sb_u64(&b, "io_batched_ops", s->io_batched_ops);
	sb_str(&b, "merge_state", s->merge_state);
	sb_u64(&b, "merges", s->merges);
	sb_u64(&b, "merge_last_ms", s->merge_last_ms);
	sb_u64(&b, "merge_reclaimed_bytes", s->merge_reclaimed_bytes);
	sb_key(&b, "segment");
	sb_put(&b, "[", 1);
	for (size_t i = 0; i < s->nsegment; i++) {
		const struct kvc_segment_stats *g = &s->segment[i];
		if (i)
			sb_put(&b, ",", 1);
		sb_put(&b, "{", 1);
		sb_u64(&b, "id", g->id);
		sb_u64(&b, "bytes", g->bytes);
		sb_u64(&b, "live_bytes", g->live_bytes);
		sb_u64(&b, "dead_bytes", g->dead_bytes);
		sb_bool(&b, "active", g->active);
		sb_bool(&b, "has_hint", g->has_hint);
		sb_put(&b, "}", 1);
	}
	sb_put(&b, "]}", 2);
	if (b.oom) {
		free(b.p);
		return KVC_ENOMEM;
	}
	*json = b.p;
	if (len)
		*len = b.len;
	return KVC_OK;
}
