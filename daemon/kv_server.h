/*
 * kv_server.h — kvd's network side: the Unix socket listener, client
 * connections, framing, dispatch to kv_rpc, group commit, and signals, all
 * in one libevent loop that owns the engine.
 *
 * Owns: the event base, the listening socket (and its file, removed by
 * kv_server_free() if it is still the one this process created), every
 * connection. Borrows the engine: the caller opens it before
 * kv_server_create() and closes it after kv_server_run() returned (run
 * releases every engine object it holds, e.g. Scan iterators, before it
 * returns).
 *
 * Setup functions fill err[errlen] with one line and return < 0; nothing
 * here prints a startup error or exits.
 */
#ifndef KV_SERVER_H
#define KV_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "kv_engine.h"

enum kv_sync_mode {
	KV_SYNC_ALWAYS,   /* fdatasync before acknowledging any write */
	KV_SYNC_INTERVAL, /* acknowledge after write(); fdatasync every interval_ms */
	KV_SYNC_NEVER,    /* acknowledge after write(); the kernel decides */
};

struct kv_server_config {
	const char *socket_path;     /* borrowed for the life of the server */
	unsigned socket_mode;        /* chmod of the socket file, e.g. 0660 */
	enum kv_sync_mode sync_mode;
	unsigned sync_interval_ms;   /* KV_SYNC_INTERVAL only, >= 1 */
	unsigned max_connections;    /* >= 1 */
	unsigned frame_timeout_ms;   /* a started frame must complete within this */
	unsigned write_timeout_ms;   /* pending output must make progress within this */
	unsigned shutdown_timeout_ms; /* SIGTERM: bound on delivering queued replies */
};

/* Defaults: interval:1000, 1024 connections, 30 s frame timeout, 60 s
 * write timeout, 2 s shutdown bound, mode 0660. socket_path stays NULL. */
void kv_server_config_init(struct kv_server_config *cfg);

/* Parse "always" | "never" | "interval:MS" into cfg. 0 or -1. */
int kv_server_parse_sync(const char *s, struct kv_server_config *cfg);

/* Check a socket path before anything else is done: its length fits
 * sun_path, and no live daemon answers on it. Returns 0 (free or stale),
 * or < 0 with a reason in err. */
int kv_server_check_socket(const char *path, char *err, size_t errlen);

struct kv_server;

/* Create the event loop and the listening socket (replacing a stale
 * socket file only after connect() to it was refused). *out is released
 * with kv_server_free(). */
int kv_server_create(const struct kv_server_config *cfg, kv_engine *engine,
		     struct kv_server **out, char *err, size_t errlen);

/* Serve until SIGTERM or SIGINT, then: stop accepting, deliver what was
 * already executed (bounded by shutdown_timeout_ms), flush, close every
 * connection. Returns 0, or < 0 when the event loop itself failed. */
int kv_server_run(struct kv_server *s);

/* Close what is left, remove the socket file (if it is still ours) and
 * free s. s may be NULL. */
void kv_server_free(struct kv_server *s);

#endif /* KV_SERVER_H */
