/*
 * kvd.c — the kvd daemon: configuration, start-up order, SIGHUP reload,
 * exit status.
 *
 * Configuration: every setting is a key of keys[] below, and the same
 * setter, set_key(), applies it whether it comes from the configuration
 * file ("data-dir = /srv/kvd") or from a flag ("--data-dir /srv/kvd").
 * Order: defaults, then the file (--config PATH, default
 * /etc/kvd/kvd.conf; a missing default file is silently skipped, a
 * missing explicit one is an error), then the flags in command-line order,
 * so flags win. SIGHUP repeats exactly that into a fresh struct conf,
 * logs every difference, applies the keys marked runtime (log level,
 * max-connections, merge triggers and rate limit, allow-lists) and logs
 * that the others take effect at the next restart.
 *
 * Start-up: configuration → logging → the socket (inherited from systemd,
 * or the path checked: length, no live daemon on it) → STATUS=recovering →
 * open the engine (takes the data directory lock, recovers) → create the
 * server (listens) → READY=1 → run until SIGTERM/SIGINT → close the engine
 * (final sync) → remove the socket (only one we created).
 *
 * Owns: struct kvd (the current configuration, with copies of every string
 * value — libinih's are borrowed for one callback — and the flags, which
 * point into argv). This is the only place that exits.
 * Exit status: 0 clean shutdown (also --help, --version), 1 start-up or
 * runtime error, 2 bad configuration (a flag, or a line of the file, or a
 * configuration file that cannot be read). Every error is one line on
 * stderr; a file error reads "PATH:LINE: reason".
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "kv_acl.h"
#include "kv_config.h"
#include "kv_engine.h"
#include "kv_jobs.h"
#include "kv_listen.h"
#include "kv_log.h"
#include "kv_sd.h"
#include "kv_server.h"

#define EXIT_USAGE 2
#define DEFAULT_CONFIG "/etc/kvd/kvd.conf"
#define SD_LISTEN_FDS_START 3
#define MAX_MERGE_RATE_MIB 1048576ul /* 1 TiB/s: a typo guard, not a real limit */
#define MAX_POLL_US 10000ul         /* 10 ms: polling longer than a sleep costs is waste */

#define STR_(x) #x
#define STR(x) STR_(x)

static const char usage_text[] =
	"usage: kvd [options]\n"
	"\n"
	"  --config PATH             configuration file (default " DEFAULT_CONFIG ";\n"
	"                            skipped when that default is missing)\n"
	"  --data-dir DIR            data directory (default /var/lib/kvd)\n"
	"  --socket PATH             Unix socket to listen on (default /run/kvd/kvd.sock)\n"
	"  --socket-mode OCTAL       permissions of the socket file (default 0660)\n"
	"  --sync MODE               always | interval:MS | never (default interval:1000)\n"
	"  --max-segment-size BYTES  rotate the active segment above this; K/M/G suffixes\n"
	"                            (default 256M)\n"
	"  --max-connections N       refuse clients beyond N with UNAVAILABLE (default 1024)\n"
	"  --log-level LEVEL         error | warn | info | debug (default info)\n"
	"  --repair                  drop corrupt records of sealed segments (logged)\n"
	"                            instead of refusing to start\n"
	"  --frame-timeout-ms MS     drop a client whose started frame does not complete\n"
	"                            within MS (default 30000)\n"
	"  --write-timeout-ms MS     drop a client that reads none of its pending replies\n"
	"                            for MS (default 60000)\n"
	"  --merge-auto yes|no       start merges automatically (default yes)\n"
	"  --merge-min-dead-ratio R  ... when sealed segments are this dead, 0..1\n"
	"                            (default 0.4)\n"
	"  --merge-min-dead-bytes B  ... or hold this many dead bytes (default 128M)\n"
	"  --merge-check-interval-ms MS  how often to check (default 10000)\n"
	"  --merge-rate-limit MIB    MiB/s a merge may read; 0 = unlimited (default "
	STR(KV_MERGE_RATE_LIMIT_DEFAULT_MIB) ")\n"
	"  --merge-priority idle|low the merge worker's CPU priority: SCHED_IDLE or\n"
	"                            nice 10 (default idle)\n"
	"  --poll-us US              once idle, poll up to US microseconds for the next\n"
	"                            request before sleeping; adapts to the clients,\n"
	"                            0 = never poll (default " STR(KV_POLL_US_DEFAULT) ")\n"
	"  --io-uring yes|no         batch the reads and writes of a pass into one\n"
	"                            system call with io_uring, when the kernel allows\n"
	"                            (default yes)\n"
	"  --allow-uids LIST         only these uids/users may connect (comma-separated;\n"
	"                            default: anyone the socket mode lets in)\n"
	"  --allow-gids LIST         ... or members of these gids/groups\n"
	"  --help                    print this help and exit\n"
	"  --version                 print the version and exit\n"
	"\n"
	"Every option but --config, --help and --version is also a key of the\n"
	"configuration file (`key = value`, the name without dashes); flags win.\n"
	"kvd runs in the foreground and logs to stderr. SIGTERM or SIGINT stop it\n"
	"cleanly; SIGHUP re-reads the configuration file.\n";

/* ---- settings ---------------------------------------------------------------------- */

enum key_id {
	K_DATA_DIR,
	K_SOCKET,
	K_SOCKET_MODE,
	K_SYNC,
	K_MAX_SEGMENT_SIZE,
	K_MAX_CONNECTIONS,
	K_LOG_LEVEL,
	K_REPAIR,
	K_FRAME_TIMEOUT,
	K_WRITE_TIMEOUT,
	K_MERGE_AUTO,
	K_MERGE_RATIO,
	K_MERGE_BYTES,
	K_MERGE_INTERVAL,
	K_MERGE_RATE,
	K_MERGE_PRIO,
	K_POLL,
	K_IO_URING,
	K_ALLOW_UIDS,
	K_ALLOW_GIDS,
	NKEYS
};

static const struct key {
	const char *name;
	int runtime;    /* SIGHUP applies it; else it waits for a restart */
	int flag_bool;  /* the flag takes no value and means "yes" (--repair) */
} keys[NKEYS] = {
	[K_DATA_DIR] = { "data-dir", 0, 0 },
	[K_SOCKET] = { "socket", 0, 0 },
	[K_SOCKET_MODE] = { "socket-mode", 0, 0 },
	[K_SYNC] = { "sync", 0, 0 },
	[K_MAX_SEGMENT_SIZE] = { "max-segment-size", 0, 0 },
	[K_MAX_CONNECTIONS] = { "max-connections", 1, 0 },
	[K_LOG_LEVEL] = { "log-level", 1, 0 },
	[K_REPAIR] = { "repair", 0, 1 },
	[K_FRAME_TIMEOUT] = { "frame-timeout-ms", 0, 0 },
	[K_WRITE_TIMEOUT] = { "write-timeout-ms", 0, 0 },
	[K_MERGE_AUTO] = { "merge-auto", 1, 0 },
	[K_MERGE_RATIO] = { "merge-min-dead-ratio", 1, 0 },
	[K_MERGE_BYTES] = { "merge-min-dead-bytes", 1, 0 },
	[K_MERGE_INTERVAL] = { "merge-check-interval-ms", 1, 0 },
	[K_MERGE_RATE] = { "merge-rate-limit", 1, 0 },
	[K_MERGE_PRIO] = { "merge-priority", 1, 0 },
	[K_POLL] = { "poll-us", 1, 0 },
	[K_IO_URING] = { "io-uring", 0, 0 },
	[K_ALLOW_UIDS] = { "allow-uids", 1, 0 },
	[K_ALLOW_GIDS] = { "allow-gids", 1, 0 },
};

/* One complete configuration. Every string is owned (malloc'ed). */
struct conf {
	char *data_dir;
	char *socket;
	struct kv_server_config srv; /* socket_path and acl point into this struct
					(conf_link) */
	struct kv_options opt;
	int level;
	struct kv_acl acl;
	char *allow_uids, *allow_gids; /* as written, for the logs */
};

static const char *const level_names[] = { "error", "warn", "info", "debug" };

static int find_key(const char *name)
{
	for (int i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].name, name) == 0)
			return i;
	return -1;
}

/* Replace *dst with a copy of v. 0 or -1. */
static int set_str(char **dst, const char *v)
{
	char *n = strdup(v);
	if (!n)
		return -1;
	free(*dst);
	*dst = n;
	return 0;
}

static void conf_link(struct conf *c)
{
	c->srv.socket_path = c->socket;
	c->srv.acl = &c->acl;
}

static int conf_init(struct conf *c)
{
	memset(c, 0, sizeof *c);
	kv_server_config_init(&c->srv);
	kv_options_init(&c->opt);
	c->opt.hint_on_close = 1; /* a clean stop leaves hints for every segment */
	c->level = KV_LOG_INFO;
	int rc = set_str(&c->data_dir, "/var/lib/kvd") | set_str(&c->socket, "/run/kvd/kvd.sock") |
		 set_str(&c->allow_uids, "") | set_str(&c->allow_gids, "");
	conf_link(c);
	return rc;
}

static void conf_free(struct conf *c)
{
	free(c->data_dir);
	free(c->socket);
	free(c->allow_uids);
	free(c->allow_gids);
	kv_acl_free(&c->acl);
	memset(c, 0, sizeof *c);
}

/* Decimal with an optional K/M/G (KiB/MiB/GiB) suffix. 0 or -1. */
static int parse_size(const char *s, uint64_t *out)
{
	char *end = NULL;
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	unsigned shift = 0;
	switch (*end) {
	case '\0':
		break;
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	default:
		return -1;
	}
	if (shift && strcmp(end + 1, "") != 0 && strcmp(end + 1, "B") != 0 &&
	    strcmp(end + 1, "iB") != 0)
		return -1; /* accept 64M, 64MB, 64MiB */
	if (shift && v > (UINT64_MAX >> shift))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

static int parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
	char *end = NULL;
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_bool(const char *s, int *out)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };
	for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
		if (strcmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

/*
 * THE setter: apply key k = v to c. Returns 0, or -1 with what a good
 * value looks like in why (the caller names the flag or the file line).
 * v is borrowed for the call; strings are copied.
 */
static int set_key(struct conf *c, int k, const char *v, char *why, size_t n)
{
	unsigned long ul;
	uint64_t u64;
	int b;
	switch ((enum key_id)k) {
	case K_DATA_DIR:
	case K_SOCKET:
		if (!*v) {
			snprintf(why, n, "want a non-empty path");
			return -1;
		}
		if (set_str(k == K_DATA_DIR ? &c->data_dir : &c->socket, v) < 0)
			goto oom;
		conf_link(c);
		return 0;
	case K_SOCKET_MODE: {
		char *end = NULL;
		errno = 0;
		unsigned long m = strtoul(v, &end, 8);
		if (errno || !*v || *end || m > 0777 || *v == '-' || *v == '+') {
			snprintf(why, n, "want an octal mode such as 0660");
			return -1;
		}
		c->srv.socket_mode = (unsigned)m;
		return 0;
	}
	case K_SYNC: {
		struct kv_server_config tmp = c->srv;
		if (kv_server_parse_sync(v, &tmp) < 0) {
			snprintf(why, n, "want always, never or interval:MS (1..3600000)");
			return -1;
		}
		c->srv.sync_mode = tmp.sync_mode;
		c->srv.sync_interval_ms = tmp.sync_interval_ms;
		return 0;
	}
	case K_MAX_SEGMENT_SIZE:
		/* Offsets inside a segment are 32-bit: keep room for one maximal
		 * record past the limit. */
		if (parse_size(v, &u64) < 0 || u64 < 4096 || u64 > (3ull << 30)) {
			snprintf(why, n, "want 4K..3G");
			return -1;
		}
		c->opt.max_segment_size = u64;
		return 0;
	case K_MAX_CONNECTIONS:
		if (parse_uint(v, 1, 1000000, &ul) < 0) {
			snprintf(why, n, "want 1..1000000");
			return -1;
		}
		c->srv.max_connections = (unsigned)ul;
		return 0;
	case K_LOG_LEVEL:
		if (kv_log_parse_level(v, &c->level) < 0) {
			snprintf(why, n, "want error, warn, info or debug");
			return -1;
		}
		return 0;
	case K_REPAIR:
	case K_MERGE_AUTO:
		if (parse_bool(v, &b) < 0) {
			snprintf(why, n, "want yes or no");
			return -1;
		}
		*(k == K_REPAIR ? &c->opt.repair : &c->srv.merge.merge_auto) = b;
		return 0;
	case K_FRAME_TIMEOUT:
	case K_WRITE_TIMEOUT:
	case K_MERGE_INTERVAL:
		if (parse_uint(v, 1, 86400000ul, &ul) < 0) {
			snprintf(why, n, "want 1..86400000");
			return -1;
		}
		*(k == K_FRAME_TIMEOUT	 ? &c->srv.frame_timeout_ms
		  : k == K_WRITE_TIMEOUT ? &c->srv.write_timeout_ms
					 : &c->srv.merge.merge_check_interval_ms) = (unsigned)ul;
		return 0;
	case K_MERGE_RATIO: {
		char *end = NULL;
		errno = 0;
		double d = strtod(v, &end);
		if (errno || !*v || *end || !isfinite(d) || d < 0.0 || d > 1.0) {
			snprintf(why, n, "want a ratio from 0 to 1, such as 0.4");
			return -1;
		}
		c->srv.merge.merge_min_dead_ratio = d;
		return 0;
	}
	case K_MERGE_BYTES:
		if (parse_size(v, &u64) < 0) {
			snprintf(why, n, "want a size such as 128M");
			return -1;
		}
		c->srv.merge.merge_min_dead_bytes = u64;
		return 0;
	case K_MERGE_RATE:
		if (parse_uint(v, 0, MAX_MERGE_RATE_MIB, &ul) < 0) {
			snprintf(why, n, "want MiB/s, 0..%lu (0 = unlimited)", MAX_MERGE_RATE_MIB);
			return -1;
		}
		c->srv.merge.merge_rate_limit_mib = (unsigned)ul;
		return 0;
	case K_MERGE_PRIO:
		if (strcmp(v, "idle") == 0) {
			c->srv.merge.merge_cpu = KV_MERGE_CPU_IDLE;
		} else if (strcmp(v, "low") == 0) {
			c->srv.merge.merge_cpu = KV_MERGE_CPU_LOW;
		} else {
			snprintf(why, n, "want idle or low");
			return -1;
		}
		return 0;
	case K_POLL:
		if (parse_uint(v, 0, MAX_POLL_US, &ul) < 0) {
			snprintf(why, n, "want microseconds, 0..%lu (0 = never poll)", MAX_POLL_US);
			return -1;
		}
		c->srv.poll_us = (unsigned)ul;
		return 0;
	case K_IO_URING:
		if (strcmp(v, "yes") == 0) {
			c->srv.io_uring = 1;
		} else if (strcmp(v, "no") == 0) {
			c->srv.io_uring = 0;
		} else {
			snprintf(why, n, "want yes or no");
			return -1;
		}
		return 0;
	case K_ALLOW_UIDS:
	case K_ALLOW_GIDS: {
		char e[200];
		int rc = k == K_ALLOW_UIDS ? kv_acl_set_uids(&c->acl, v, e, sizeof e)
					   : kv_acl_set_gids(&c->acl, v, e, sizeof e);
		if (rc < 0) {
			snprintf(why, n, "%s; want comma-separated %s", e,
				 k == K_ALLOW_UIDS ? "uids or user names" : "gids or group names");
			return -1;
		}
		if (set_str(k == K_ALLOW_UIDS ? &c->allow_uids : &c->allow_gids, v) < 0)
			goto oom;
		return 0;
	}
	case NKEYS:
		break;
	}
	snprintf(why, n, "unknown key");
	return -1;
oom:
	snprintf(why, n, "out of memory");
	return -1;
}

/* The value of key k in c, spelled canonically (to compare and log). */
static void show_key(const struct conf *c, int k, char *buf, size_t n)
{
	const struct kv_server_config *s = &c->srv;
	switch ((enum key_id)k) {
	case K_DATA_DIR:
		snprintf(buf, n, "%s", c->data_dir);
		return;
	case K_SOCKET:
		snprintf(buf, n, "%s", c->socket);
		return;
	case K_SOCKET_MODE:
		snprintf(buf, n, "%04o", s->socket_mode);
		return;
	case K_SYNC:
		if (s->sync_mode == KV_SYNC_INTERVAL)
			snprintf(buf, n, "interval:%u", s->sync_interval_ms);
		else
			snprintf(buf, n, "%s", s->sync_mode == KV_SYNC_ALWAYS ? "always" : "never");
		return;
	case K_MAX_SEGMENT_SIZE:
		snprintf(buf, n, "%llu", (unsigned long long)c->opt.max_segment_size);
		return;
	case K_MAX_CONNECTIONS:
		snprintf(buf, n, "%u", s->max_connections);
		return;
	case K_LOG_LEVEL:
		snprintf(buf, n, "%s", level_names[c->level]);
		return;
	case K_REPAIR:
		snprintf(buf, n, "%s", c->opt.repair ? "yes" : "no");
		return;
	case K_FRAME_TIMEOUT:
		snprintf(buf, n, "%u", s->frame_timeout_ms);
		return;
	case K_WRITE_TIMEOUT:
		snprintf(buf, n, "%u", s->write_timeout_ms);
		return;
	case K_MERGE_AUTO:
		snprintf(buf, n, "%s", s->merge.merge_auto ? "yes" : "no");
		return;
	case K_MERGE_RATIO:
		snprintf(buf, n, "%g", s->merge.merge_min_dead_ratio);
		return;
	case K_MERGE_BYTES:
		snprintf(buf, n, "%llu", (unsigned long long)s->merge.merge_min_dead_bytes);
		return;
	case K_MERGE_INTERVAL:
		snprintf(buf, n, "%u", s->merge.merge_check_interval_ms);
		return;
	case K_MERGE_RATE:
		snprintf(buf, n, "%u", s->merge.merge_rate_limit_mib);
		return;
	case K_MERGE_PRIO:
		snprintf(buf, n, "%s", s->merge.merge_cpu == KV_MERGE_CPU_IDLE ? "idle" : "low");
		return;
	case K_POLL:
		snprintf(buf, n, "%u", s->poll_us);
		return;
	case K_IO_URING:
		snprintf(buf, n, "%s", s->io_uring ? "yes" : "no");
		return;
	case K_ALLOW_UIDS:
		snprintf(buf, n, "%s", c->allow_uids);
		return;
	case K_ALLOW_GIDS:
		snprintf(buf, n, "%s", c->allow_gids);
		return;
	case NKEYS:
		break;
	}
	snprintf(buf, n, "?");
}

/* kv_config_load() callback: one `key = value` line of the file. */
static int file_set(void *arg, const char *key, const char *value, char *err, size_t errlen)
{
	struct conf *c = arg;
	char why[300];
	int k = find_key(key);
	if (k < 0) {
		snprintf(err, errlen, "unknown key '%s'", key);
		return -1;
	}
	if (set_key(c, k, value, why, sizeof why) < 0) {
		snprintf(err, errlen, "bad value for %s: '%s': %s", key, value, why);
		return -1;
	}
	return 0;
}

/* ---- command line ------------------------------------------------------------------ */

struct flag {
	int key;
	const char *val; /* points into argv */
};

struct cmdline {
	struct flag *flags;
	int nflags;
	const char *config; /* --config, or NULL for the default */
};

enum { OPT_CONFIG = 1000, OPT_HELP, OPT_VERSION };

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "kvd: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see kvd --help)\n");
	return EXIT_USAGE;
}

/* Record the flags (values are checked later, by set_key). Returns -1 to go
 * on, or the exit status to leave with (0 after --help/--version). */
static int parse_cmdline(int argc, char **argv, struct cmdline *cl)
{
	struct option lo[NKEYS + 4];
	for (int i = 0; i < NKEYS; i++)
		lo[i] = (struct option){ keys[i].name,
					 keys[i].flag_bool ? no_argument : required_argument, NULL, i };
	lo[NKEYS] = (struct option){ "config", required_argument, NULL, OPT_CONFIG };
	lo[NKEYS + 1] = (struct option){ "help", no_argument, NULL, OPT_HELP };
	lo[NKEYS + 2] = (struct option){ "version", no_argument, NULL, OPT_VERSION };
	lo[NKEYS + 3] = (struct option){ NULL, 0, NULL, 0 };
	memset(cl, 0, sizeof *cl);
	cl->flags = calloc((size_t)argc + 1, sizeof *cl->flags);
	if (!cl->flags) {
		fprintf(stderr, "kvd: out of memory\n");
		return 1;
	}
	int ch;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (ch >= 0 && ch < NKEYS) {
			cl->flags[cl->nflags].key = ch;
			cl->flags[cl->nflags++].val = keys[ch].flag_bool ? "yes" : optarg;
			continue;
		}
		switch (ch) {
		case OPT_CONFIG:
			if (!*optarg)
				return usage_error("%s", "--config needs a non-empty path");
			cl->config = optarg;
			break;
		case OPT_HELP:
			fputs(usage_text, stdout);
			return 0;
		case OPT_VERSION:
			printf("kvd %s\n", KV_VERSION_STRING);
			return 0;
		case ':':
			return usage_error("option %s needs a value", argv[optind - 1]);
		default:
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	return -1;
}

/* Defaults, then the file, then the flags (module comment). 0, or < 0 with
 * one line in err. */
static int load_conf(struct conf *c, const struct cmdline *cl, char *err, size_t errlen)
{
	char why[300];
	const char *path = cl->config ? cl->config : DEFAULT_CONFIG;
	if (conf_init(c) < 0) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	int rc = kv_config_load(path, file_set, c, err, errlen);
	if (rc == -ENOENT && !cl->config)
		rc = 0; /* no default file: fine and silent */
	if (rc < 0)
		return rc;
	for (int i = 0; i < cl->nflags; i++) {
		const struct flag *f = &cl->flags[i];
		if (set_key(c, f->key, f->val, why, sizeof why) < 0) {
			snprintf(err, errlen, "bad --%s '%s': %s (see kvd --help)", keys[f->key].name,
				 f->val, why);
			return -EINVAL;
		}
	}
	return 0;
}

/* ---- running --------------------------------------------------------------------- */

/* What main() and the SIGHUP handler share. */
struct kvd {
	struct cmdline cl;
	struct conf cur; /* the configuration in force */
	struct kv_server *srv;
};

/* Make room for max_conn clients plus the engine's files. */
static void raise_fd_limit(unsigned max_conn)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	rlim_t want = (rlim_t)max_conn + 64 + 256; /* listener, log, mapped segments */
	if (rl.rlim_cur >= want)
		return;
	rlim_t cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
	rl.rlim_cur = cur;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || cur < want)
		kv_log_warn("open file limit %llu is below what max-connections %u needs (%llu); "
			    "clients beyond it are refused",
			    (unsigned long long)cur, max_conn, (unsigned long long)want);
}

/* SIGHUP (called from the event loop by the server). */
static void reload(void *arg)
{
	struct kvd *k = arg;
	struct conf next;
	char err[600], a[512], b[512];
	const char *path = k->cl.config ? k->cl.config : DEFAULT_CONFIG;
	if (load_conf(&next, &k->cl, err, sizeof err) < 0) {
		kv_log_error("SIGHUP: configuration not reloaded, nothing changed: %s", err);
		conf_free(&next);
		return;
	}
	int applied = 0, later = 0;
	for (int i = 0; i < NKEYS; i++) {
		show_key(&k->cur, i, a, sizeof a);
		show_key(&next, i, b, sizeof b);
		if (strcmp(a, b) == 0)
			continue;
		if (keys[i].runtime) {
			kv_log_info("SIGHUP: %s: '%s' -> '%s'", keys[i].name, a, b);
			applied++;
		} else {
			kv_log_warn("SIGHUP: %s: '%s' -> '%s' needs a restart; still '%s'",
				    keys[i].name, a, b, a);
			later++;
		}
	}
	/* the runtime keys (keys[].runtime) */
	struct conf *c = &k->cur;
	int more_conns = next.srv.max_connections > c->srv.max_connections;
	c->level = next.level;
	kv_log_init(c->level);
	c->srv.max_connections = next.srv.max_connections;
	c->srv.merge = next.srv.merge;
	c->srv.poll_us = next.srv.poll_us;
	struct kv_acl acl = c->acl;
	char *u = c->allow_uids, *g = c->allow_gids;
	c->acl = next.acl;
	c->allow_uids = next.allow_uids;
	c->allow_gids = next.allow_gids;
	next.acl = acl;
	next.allow_uids = u;
	next.allow_gids = g;
	conf_link(c);
	if (more_conns)
		raise_fd_limit(c->srv.max_connections);
	if (kv_server_reconfigure(k->srv, &c->srv) < 0)
		kv_log_error("SIGHUP: out of memory: the previous allow-lists stay in force");
	kv_log_info("SIGHUP: reloaded %s: %d change(s) applied, %d need a restart", path, applied,
		    later);
	conf_free(&next);
}

int main(int argc, char **argv)
{
	struct kvd k;
	kv_engine *engine = NULL;
	struct kv_server *srv = NULL;
	char err[600] = "";
	int status = 1;
	int rc;

	memset(&k, 0, sizeof k);
	if ((rc = parse_cmdline(argc, argv, &k.cl)) >= 0) {
		free(k.cl.flags);
		return rc;
	}
	if (load_conf(&k.cur, &k.cl, err, sizeof err) < 0) {
		fprintf(stderr, "kvd: %s\n", err);
		status = EXIT_USAGE;
		goto out;
	}
	struct conf *c = &k.cur;
	struct kv_server_config *cfg = &c->srv;

	kv_log_init(c->level);
	signal(SIGPIPE, SIG_IGN); /* a peer that went away is EPIPE, not death */

	/* The socket: systemd's, or ours (checked before touching the data). */
	int nfds = kv_sd_listen_fds();
	if (nfds > 0) {
		struct kv_listener probe; /* checked now; the server adopts it again */
		if ((rc = kv_listen_adopt(&probe, SD_LISTEN_FDS_START, err, sizeof err)) < 0) {
			kv_log_error("socket activation: %s", err);
			goto out;
		}
		cfg->listen_fd = SD_LISTEN_FDS_START;
		if (nfds > 1)
			kv_log_warn("systemd passed %d sockets; using the first (fd %d)", nfds,
				    SD_LISTEN_FDS_START);
	} else if ((rc = kv_listen_check(cfg->socket_path, err, sizeof err)) < 0) {
		kv_log_error("%s", err);
		goto out;
	}
	raise_fd_limit(cfg->max_connections);

	kv_sd_notify("STATUS=recovering");
	c->opt.log = kv_log_engine;
	c->opt.log_arg = NULL;
	if ((rc = kv_engine_open(c->data_dir, &c->opt, &engine, err, sizeof err)) < 0) {
		kv_log_error("cannot open %s: %s", c->data_dir, *err ? err : kv_strerror(rc));
		kv_sd_notifyf("STATUS=cannot open %s", c->data_dir);
		engine = NULL;
		goto out;
	}
	cfg->watchdog_usec = kv_sd_watchdog_usec();
	cfg->reload = reload;
	cfg->reload_arg = &k;
	/* The socket listens from inside kv_server_create(), before its
	 * signal events exist: a SIGHUP sent as soon as a client can connect
	 * would kill kvd (the default action). Blocked meanwhile, such a
	 * signal waits and reaches the handlers. */
	sigset_t early;
	sigemptyset(&early);
	sigaddset(&early, SIGHUP);
	sigaddset(&early, SIGTERM);
	sigaddset(&early, SIGINT);
	sigprocmask(SIG_BLOCK, &early, NULL);
	rc = kv_server_create(cfg, engine, &srv, err, sizeof err);
	sigprocmask(SIG_UNBLOCK, &early, NULL);
	if (rc < 0) {
		kv_log_error("%s", err);
		goto out;
	}
	k.srv = srv;
	struct kv_stats st;
	memset(&st, 0, sizeof st);
	if (kv_engine_stats(engine, &st) == 0) {
		char sync[32], rate[48];
		show_key(c, K_SYNC, sync, sizeof sync);
		if (cfg->merge.merge_rate_limit_mib)
			snprintf(rate, sizeof rate, "%u MiB/s", cfg->merge.merge_rate_limit_mib);
		else
			snprintf(rate, sizeof rate, "unlimited");
		kv_log_info("kvd %s serving %s on %s (%llu keys in %llu segments, sync %s, merge "
			    "rate limit %s, merge priority %s%s)",
			    KV_VERSION_STRING, c->data_dir,
			    nfds > 0 ? "the socket passed by systemd (fd 3)" : cfg->socket_path,
			    (unsigned long long)st.keys, (unsigned long long)st.segments, sync,
			    rate, cfg->merge.merge_cpu == KV_MERGE_CPU_IDLE ? "idle" : "low",
			    c->opt.repair ? ", repair" : "");
		kv_sd_notifyf("READY=1\nSTATUS=serving %llu keys", (unsigned long long)st.keys);
		kv_stats_free(&st);
	} else {
		kv_sd_notify("READY=1\nSTATUS=serving");
	}
	if (kv_acl_active(&c->acl))
		kv_log_info("only peers with uid in [%s] or gid in [%s] are served", c->allow_uids,
			    c->allow_gids);
	rc = kv_server_run(srv);
	status = rc < 0 ? 1 : 0;
out:
	if (engine) {
		/* After the run: no connection holds an engine object any more. */
		int crc = kv_engine_close(engine);
		if (crc < 0) {
			kv_log_error("closing the data directory failed: %s", kv_strerror(crc));
			status = 1;
		}
	}
	kv_server_free(srv); /* removes the socket, after the engine is closed */
	if (status == 0)
		kv_log_info("stopped");
	conf_free(&k.cur);
	free(k.cl.flags);
	return status;
}
