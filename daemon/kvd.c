/*
 * kvd.c — the kvd daemon: command line, start-up order, exit status.
 *
 * Start-up: parse flags → set up logging → check the socket path (length,
 * no live daemon on it) → open the engine (takes the data directory lock)
 * → create the server (binds the socket) → run until SIGTERM/SIGINT →
 * close the engine (final sync) → remove the socket.
 *
 * Owns nothing beyond main()'s locals. This is the only place that exits.
 * Exit status: 0 clean shutdown (also --help, --version), 1 start-up or
 * runtime error, 2 bad command line. Every error is one line on stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "kv_engine.h"
#include "kv_log.h"
#include "kv_server.h"

#define EXIT_USAGE 2

static const char usage_text[] =
	"usage: kvd [options]\n"
	"\n"
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
	"  --help                    print this help and exit\n"
	"  --version                 print the version and exit\n"
	"\n"
	"kvd runs in the foreground and logs to stderr. SIGTERM or SIGINT stop it cleanly.\n";

enum {
	OPT_DATA_DIR = 256,
	OPT_SOCKET,
	OPT_SOCKET_MODE,
	OPT_SYNC,
	OPT_MAX_SEGMENT,
	OPT_MAX_CONN,
	OPT_LOG_LEVEL,
	OPT_REPAIR,
	OPT_FRAME_TIMEOUT,
	OPT_WRITE_TIMEOUT,
	OPT_HELP,
	OPT_VERSION,
};

static const struct option long_opts[] = {
	{ "data-dir", required_argument, NULL, OPT_DATA_DIR },
	{ "socket", required_argument, NULL, OPT_SOCKET },
	{ "socket-mode", required_argument, NULL, OPT_SOCKET_MODE },
	{ "sync", required_argument, NULL, OPT_SYNC },
	{ "max-segment-size", required_argument, NULL, OPT_MAX_SEGMENT },
	{ "max-connections", required_argument, NULL, OPT_MAX_CONN },
	{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
	{ "repair", no_argument, NULL, OPT_REPAIR },
	{ "frame-timeout-ms", required_argument, NULL, OPT_FRAME_TIMEOUT },
	{ "write-timeout-ms", required_argument, NULL, OPT_WRITE_TIMEOUT },
	{ "help", no_argument, NULL, OPT_HELP },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ NULL, 0, NULL, 0 },
};

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

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "kvd: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see kvd --help)\n");
	return EXIT_USAGE;
}

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
		kv_log_warn("open file limit %llu is below what --max-connections %u needs (%llu); "
			    "clients beyond it are refused",
			    (unsigned long long)cur, max_conn, (unsigned long long)want);
}

/* What the command line asked for. */
struct args {
	const char *data_dir;
	struct kv_server_config cfg;
	struct kv_options opt;
	int level;
};

/* Fill *a from argv. Returns -1 to go on, or the exit status to leave
 * with (0 after --help/--version, EXIT_USAGE after a bad option). */
static int parse_args(int argc, char **argv, struct args *a)
{
	a->data_dir = "/var/lib/kvd";
	a->level = KV_LOG_INFO;
	kv_server_config_init(&a->cfg);
	a->cfg.socket_path = "/run/kvd/kvd.sock";
	kv_options_init(&a->opt);

	int ch;
	unsigned long ul;
	uint64_t u64;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
		switch (ch) {
		case OPT_DATA_DIR:
			a->data_dir = optarg;
			if (!*a->data_dir)
				return usage_error("%s", "--data-dir needs a non-empty value");
			break;
		case OPT_SOCKET:
			a->cfg.socket_path = optarg;
			break;
		case OPT_SOCKET_MODE: {
			char *end = NULL;
			errno = 0;
			unsigned long m = strtoul(optarg, &end, 8);
			if (errno || !*optarg || *end || m > 0777)
				return usage_error("bad --socket-mode '%s': want an octal mode such as 0660",
						   optarg);
			a->cfg.socket_mode = (unsigned)m;
			break;
		}
		case OPT_SYNC:
			if (kv_server_parse_sync(optarg, &a->cfg) < 0)
				return usage_error("bad --sync '%s': want always, never or interval:MS "
						   "(1..3600000)",
						   optarg);
			break;
		case OPT_MAX_SEGMENT:
			/* Offsets inside a segment are 32-bit: keep room for one
			 * maximal record past the limit. */
			if (parse_size(optarg, &u64) < 0 || u64 < 4096 || u64 > (3ull << 30))
				return usage_error("bad --max-segment-size '%s': want 4K..3G", optarg);
			a->opt.max_segment_size = u64;
			break;
		case OPT_MAX_CONN:
			if (parse_uint(optarg, 1, 1000000, &ul) < 0)
				return usage_error("bad --max-connections '%s': want 1..1000000", optarg);
			a->cfg.max_connections = (unsigned)ul;
			break;
		case OPT_LOG_LEVEL:
			if (kv_log_parse_level(optarg, &a->level) < 0)
				return usage_error("bad --log-level '%s': want error, warn, info or debug",
						   optarg);
			break;
		case OPT_REPAIR:
			a->opt.repair = 1;
			break;
		case OPT_FRAME_TIMEOUT:
			if (parse_uint(optarg, 1, 86400000ul, &ul) < 0)
				return usage_error("bad --frame-timeout-ms '%s': want 1..86400000", optarg);
			a->cfg.frame_timeout_ms = (unsigned)ul;
			break;
		case OPT_WRITE_TIMEOUT:
			if (parse_uint(optarg, 1, 86400000ul, &ul) < 0)
				return usage_error("bad --write-timeout-ms '%s': want 1..86400000", optarg);
			a->cfg.write_timeout_ms = (unsigned)ul;
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

int main(int argc, char **argv)
{
	struct args a;
	kv_engine *engine = NULL;
	struct kv_server *srv = NULL;
	char err[512] = "";
	int status = 1;
	int rc;

	if ((rc = parse_args(argc, argv, &a)) >= 0)
		return rc;
	const char *data_dir = a.data_dir;
	const struct kv_server_config *cfg = &a.cfg;

	kv_log_init(a.level);
	signal(SIGPIPE, SIG_IGN); /* a peer that went away is EPIPE, not death */

	/* Fail fast, before touching the data directory. */
	if ((rc = kv_server_check_socket(cfg->socket_path, err, sizeof err)) < 0) {
		kv_log_error("%s", err);
		goto out;
	}
	raise_fd_limit(cfg->max_connections);

	a.opt.log = kv_log_engine;
	a.opt.log_arg = NULL;
	if ((rc = kv_engine_open(data_dir, &a.opt, &engine, err, sizeof err)) < 0) {
		kv_log_error("cannot open %s: %s", data_dir, *err ? err : kv_strerror(rc));
		engine = NULL;
		goto out;
	}
	if ((rc = kv_server_create(cfg, engine, &srv, err, sizeof err)) < 0) {
		kv_log_error("%s", err);
		goto out;
	}
	struct kv_stats st;
	memset(&st, 0, sizeof st);
	if (kv_engine_stats(engine, &st) == 0) {
		kv_log_info("kvd %s serving %s on %s (%llu keys in %llu segments, sync %s%s)",
			    KV_VERSION_STRING, data_dir, cfg->socket_path, (unsigned long long)st.keys,
			    (unsigned long long)st.segments,
			    cfg->sync_mode == KV_SYNC_ALWAYS  ? "always"
			    : cfg->sync_mode == KV_SYNC_NEVER ? "never"
							      : "interval",
			    a.opt.repair ? ", repair" : "");
		kv_stats_free(&st);
	}
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
	return status;
}
