/*
 * kv_log.h — kvd's logger: leveled, printf-style lines on stderr.
 *
 * Owns: the process-wide log level and output style (both set once at
 * start-up by kvd.c, before the event loop runs; single-threaded after).
 *
 * Invariants:
 *  1. One call = one line = one write(2) on stderr, so lines from kvd never
 *     interleave mid-line with anything else written to the same journal.
 *  2. Control characters in a message (a client-chosen method name, a path)
 *     are escaped, so nobody can forge extra log lines.
 *  3. Under systemd (JOURNAL_STREAM set) or whenever stderr is not a
 *     terminal, lines carry the sd-daemon priority prefix "<3>".."<7>" that
 *     journald turns into the priority field; on a terminal they read
 *     "kvd: warn: ...".
 *
 * Levels are the engine's enum kv_log_level, so kv_log_engine() can be
 * handed to kv_engine_open() as its log sink unchanged.
 */
#ifndef KV_LOG_H
#define KV_LOG_H

#include "kv_engine.h"

/* Set the threshold (KV_LOG_ERROR..KV_LOG_DEBUG) and pick the output style
 * from the environment (see invariant 3). */
void kv_log_init(int level);

/* Current threshold; kv_log_enabled(l) says whether level l is printed. */
int kv_log_level(void);
int kv_log_enabled(int level);

/* "error", "warn", "info", "debug" → *level; 0, or -1 for anything else. */
int kv_log_parse_level(const char *s, int *level);

void kv_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define kv_log_error(...) kv_log(KV_LOG_ERROR, __VA_ARGS__)
#define kv_log_warn(...) kv_log(KV_LOG_WARN, __VA_ARGS__)
#define kv_log_info(...) kv_log(KV_LOG_INFO, __VA_ARGS__)
#define kv_log_debug(...) \
	do { \
		if (kv_log_enabled(KV_LOG_DEBUG)) \
			kv_log(KV_LOG_DEBUG, __VA_ARGS__); \
	} while (0)

/* Log sink for struct kv_options.log: arg is unused, msg is borrowed. */
void kv_log_engine(void *arg, int level, const char *msg);

#endif /* KV_LOG_H */
