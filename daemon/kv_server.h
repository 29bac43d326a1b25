/*
 * kv_server.h — kvd's network side: the Unix socket listener, client
 * connections (with the peer allow-list), framing, dispatch to kv_rpc,
 * group commit, background jobs (merges, via kv_jobs), systemd
 * notifications after start-up (STOPPING, WATCHDOG) and signals, all in
 * one libevent loop that owns the engine.
 *
 * Owns: the event base, the listening socket (kv_listen: its file is
 * removed by kv_server_free() if it is still the one this process created;
 * an inherited one is never touched), every connection, the jobs, a copy
 * of the allow-list. Borrows the engine: the caller opens it before
 * kv_server_create() and closes it after kv_server_run() returned (run
 * releases every engine object it holds, e.g. Scan iterators, and every
 * event on an engine fd, before it returns).
 *
 * Setup functions fill err[errlen] with one line and return < 0; nothing
 * here prints a startup error or exits.
 */
#ifndef KV_SERVER_H
#define KV_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "kv_acl.h"
#include "kv_engine.h"
#include "kv_jobs.h"

#define KV_POLL_US_DEFAULT 50

enum kv_sync_mode {
	KV_SYNC_ALWAYS,   /* fdatasync before acknowledging any write */
	KV_SYNC_INTERVAL, /* acknowledge after write(); fdatasync every interval_ms */
	KV_SYNC_NEVER,    /* acknowledge after write(); the kernel decides */
};

struct kv_server_config {
	const char *socket_path;     /* borrowed for the life of the server */
	int listen_fd;               /* >= 0: an inherited listening socket
	                                (socket activation); socket_path and
	                                socket_mode are then unused. -1: bind */
	unsigned socket_mode;        /* chmod of the socket file, e.g. 0660 */
	enum kv_sync_mode sync_mode;
	unsigned sync_interval_ms;   /* KV_SYNC_INTERVAL only, >= 1 */
	unsigned max_connections;    /* >= 1 */
	unsigned frame_timeout_ms;   /* a started frame must complete within this */
	unsigned write_timeout_ms;   /* pending output must make progress within this */
	unsigned shutdown_timeout_ms; /* SIGTERM: bound on delivering queued replies */
	unsigned poll_us;            /* bound of the adaptive poll before the loop
	                                sleeps (kv_poll.h); 0 = always sleep */
	int io_uring;                /* batch socket reads and writes through
	                                io_uring when the kernel allows (kv_ring.h) */
	const struct kv_acl *acl;    /* copied; NULL or empty = no peer check */
	struct kv_jobs_config merge; /* merge triggers */
	uint64_t watchdog_usec;      /* > 0: WATCHDOG=1 every half of it */
	/* SIGHUP calls reload(reload_arg) from the loop (NULL: only logged);
	 * it may call kv_server_reconfigure(). */
	void (*reload)(void *arg);
	void *reload_arg;
};

/* Defaults: interval:1000, 1024 connections, 30 s frame timeout, 60 s
 * write timeout, 2 s shutdown bound, poll KV_POLL_US_DEFAULT µs, mode
 * 0660, listen_fd -1, no acl, kv_jobs_config_init(). socket_path stays
 * NULL. */
void kv_server_config_init(struct kv_server_config *cfg);

/* Parse "always" | "never" | "interval:MS" into cfg. 0 or -1. */
int kv_server_parse_sync(const char *s, struct kv_server_config *cfg);

struct kv_server;

/* Create the event loop and the listening socket (replacing a stale
 * socket file only after connect() to it was refused), or adopt
 * cfg->listen_fd. *out is released with kv_server_free(). */
int kv_server_create(const struct kv_server_config *cfg, kv_engine *engine,
		     struct kv_server **out, char *err, size_t errlen);

/* Serve until SIGTERM or SIGINT, then: stop accepting, deliver what was
 * already executed (bounded by shutdown_timeout_ms), flush, close every
 * connection. Returns 0, or < 0 when the event loop itself failed. */
int kv_server_run(struct kv_server *s);

/* Apply the settings that can change at run time (SIGHUP): max_connections,
 * acl (copied), poll_us and merge. Every other field of cfg is ignored. 0, or
 * -ENOMEM with the old allow-list kept. */
int kv_server_reconfigure(struct kv_server *s, const struct kv_server_config *cfg);

/* Close what is left, remove the socket file (if it is still ours) and
 * free s. s may be NULL. */
void kv_server_free(struct kv_server *s);

#endif /* KV_SERVER_H */
