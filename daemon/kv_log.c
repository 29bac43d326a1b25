/*
 * kv_log.c — kvd's logger (see kv_log.h for the invariants).
 *
 * Owns two globals written once by kv_log_init() before the loop starts:
 * the level threshold and whether to use journald priority prefixes.
 * Lines longer than KV_LOG_LINE bytes are cut and end in "...".
 */
#include "kv_log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KV_LOG_LINE 1024

static int log_level = KV_LOG_INFO;
static int log_journal = 1; /* 1: "<N>msg", 0: "kvd: level: msg" */

static const char *const level_names[] = { "error", "warn", "info", "debug" };
/* sd-daemon(3) priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG. */
static const char level_prio[] = { '3', '4', '6', '7' };

void kv_log_init(int level)
{
	if (level < KV_LOG_ERROR)
		level = KV_LOG_ERROR;
	if (level > KV_LOG_DEBUG)
		level = KV_LOG_DEBUG;
	log_level = level;
	const char *js = getenv("JOURNAL_STREAM");
	log_journal = (js && *js) || !isatty(STDERR_FILENO);
}

int kv_log_level(void)
{
	return log_level;
}

int kv_log_enabled(int level)
{
	return level <= log_level;
}

int kv_log_parse_level(const char *s, int *level)
{
	for (int i = 0; i < 4; i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*level = i;
			return 0;
		}
	}
	if (strcmp(s, "warning") == 0) {
		*level = KV_LOG_WARN;
		return 0;
	}
	return -1;
}

/* Escape control bytes of src[0..n) in place into dst (invariant 2).
 * Returns the new length; never writes more than cap bytes. */
static size_t sanitize(char *dst, size_t cap, const char *src, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (size_t i = 0; i < n && o < cap; i++) {
		unsigned char ch = (unsigned char)src[i];
		if (ch >= 0x20 && ch != 0x7f) {
			dst[o++] = (char)ch;
		} else if (o + 4 <= cap) {
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[ch >> 4];
			dst[o++] = hex[ch & 15];
		} else {
			break;
		}
	}
	return o;
}

static void emit(int level, const char *msg, size_t n, int cut)
{
	char line[KV_LOG_LINE + 64];
	size_t o = 0;
	if (level < KV_LOG_ERROR)
		level = KV_LOG_ERROR;
	if (level > KV_LOG_DEBUG)
		level = KV_LOG_DEBUG;
	if (log_journal) {
		line[o++] = '<';
		line[o++] = level_prio[level];
		line[o++] = '>';
	} else {
		int k = snprintf(line, sizeof line, "kvd: %s: ", level_names[level]);
		o = k > 0 ? (size_t)k : 0;
	}
	size_t room = sizeof line - o - 5; /* "..." + newline */
	size_t w = sanitize(line + o, room, msg, n);
	o += w;
	if (w == room || cut) {
		memcpy(line + o, "...", 3);
		o += 3;
	}
	line[o++] = '\n';
	int saved = errno;
	const char *p = line;
	while (o > 0) {
		ssize_t k = write(STDERR_FILENO, p, o);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		p += k;
		o -= (size_t)k;
	}
	errno = saved;
}

void kv_log(int level, const char *fmt, ...)
{
	char buf[KV_LOG_LINE];
	if (!kv_log_enabled(level))
		return;
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	errno = saved;
	if (n < 0)
		return;
	int cut = (size_t)n >= sizeof buf;
	emit(level, buf, cut ? sizeof buf - 1 : (size_t)n, cut);
}

void kv_log_engine(void *arg, int level, const char *msg)
{
	(void)arg;
	if (!msg || !kv_log_enabled(level))
		return;
	emit(level, msg, strlen(msg), 0);
}
