/*
 * kvctl.c — the kvd command-line client: main(), option parsing, one
 * function per command, and the output formats. Line-oriented input (pipe
 * mode, the interactive prompt, the tokenizer) lives in kvctl_lines.c.
 *
 * Owns: the struct kvctl of the process (its kvc_client is closed at the
 * end of main), and the output to stdout/stderr.
 *
 * Output rules:
 *  - CLI mode (one command from argv): results on stdout, errors on stderr
 *    as one line "kvctl: CMD: CODE: message (kvd at SOCKET)"; `get` writes
 *    the raw value bytes (a "\n" is added only when stdout is a terminal).
 *  - Line modes (pipe, interactive): one line per result: "OK", "PONG",
 *    the value, "(not found)", or "ERR CODE: message". Values and keys are
 *    printed escaped (printable ASCII as is, "\\" "\n" "\t" "\r" "\xHH"
 *    otherwise: the escapes of double-quoted input) or as hex with --hex.
 *  - Exit codes: KX_* (0 ok, 1 not found, 2 usage, 3 cannot connect,
 *    4 failure reported by kvd or the transport).
 *  - In pipe mode, messages produced while queueing (k->defer) are kept in
 *    k->msg instead of printed, so the caller can print them in order.
 */
#include "kvctl.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <locale.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Per-command options. */
enum { O_TTL = 1, O_SYNC = 2, O_KEYS = 4, O_LIMIT = 8, O_JSON = 16, O_WAIT = 32 };
struct copts {
	unsigned seen;
	uint32_t ttl;
	uint32_t limit;
};

struct cmd;
typedef int (*cmd_fn)(struct kvctl *k, const struct cmd *cmd, struct karg *pos, int npos,
		      const struct copts *o);
struct cmd {
	const char *name;
	int minpos, maxpos;
	unsigned opts;
	cmd_fn fn;
	const char *args; /* the usage after the name */
	const char *help;
};

/* Pipe mode keeps messages here instead of printing them (see top). */
static char g_msg[1024];
static int g_defer;

/* ---- output helpers ------------------------------------------------------------- */

void kvctl_put_escaped(FILE *f, const void *data, size_t n)
{
	const unsigned char *p = data;
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = p[i];
		if (c >= 0x20 && c < 0x7f && c != '\\') {
			run++;
			continue;
		}
		if (run)
			fwrite(p + i - run, 1, run, f);
		run = 0;
		switch (c) {
		case '\\': fputs("\\\\", f); break;
		case '\n': fputs("\\n", f); break;
		case '\t': fputs("\\t", f); break;
		case '\r': fputs("\\r", f); break;
		default: fprintf(f, "\\x%02x", c); break;
		}
	}
	if (run)
		fwrite(p + n - run, 1, run, f);
}

void kvctl_put_hex(FILE *f, const void *data, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *p = data;
	char buf[4096];
	size_t b = 0;
	for (size_t i = 0; i < n; i++) {
		buf[b++] = digits[p[i] >> 4];
		buf[b++] = digits[p[i] & 15];
		if (b == sizeof buf) {
			fwrite(buf, 1, b, f);
			b = 0;
		}
	}
	fwrite(buf, 1, b, f);
}

void kvctl_put_bytes(const struct kvctl *k, FILE *f, const void *p, size_t n)
{
	if (k->hex)
		kvctl_put_hex(f, p, n);
	else
		kvctl_put_escaped(f, p, n);
}

void kvctl_put_line(FILE *f, const char *s)
{
	for (; *s; s++)
		fputc((unsigned char)*s < 0x20 || *s == 0x7f ? ' ' : *s, f);
}

/* A word for a message: escaped, at most ~60 characters. */
static const char *show(const struct karg *a)
{
	static char out[256];
	size_t o = 0;
	for (size_t i = 0; i < a->n && o < 60; i++) {
		unsigned char c = (unsigned char)a->p[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, sizeof out - o, "\\x%02x", c);
	}
	if (o >= 60 && a->n > 60)
		o += (size_t)snprintf(out + o, sizeof out - o, "...");
	out[o] = '\0';
	return out;
}

/* Report a usage error; returns KX_USAGE. cmd may be NULL. */
__attribute__((format(printf, 3, 4))) static int usage_err(struct kvctl *k, const struct cmd *cmd,
							   const char *fmt, ...)
{
	char m[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof m, fmt, ap);
	va_end(ap);
	if (k->mode == MODE_CLI) {
		fprintf(stderr, "kvctl: %s%s%s\n", cmd ? cmd->name : "", cmd ? ": " : "", m);
		if (cmd)
			fprintf(stderr, "usage: kvctl %s%s%s\n", cmd->name, *cmd->args ? " " : "",
				cmd->args);
		else
			fprintf(stderr, "Try 'kvctl help'.\n");
		return KX_USAGE;
	}
	snprintf(g_msg, sizeof g_msg, "ERR USAGE: %s%s%s%s%s%s%s", cmd ? cmd->name : "",
		 cmd ? ": " : "", m, cmd ? " (usage: " : "", cmd ? cmd->name : "",
		 cmd && *cmd->args ? " " : "", cmd ? cmd->args : "");
	if (cmd)
		strncat(g_msg, ")", sizeof g_msg - strlen(g_msg) - 1);
	if (!g_defer) {
		kvctl_put_line(stdout, g_msg);
		fputc('\n', stdout);
	}
	return KX_USAGE;
}

int kvctl_exit_code(const struct kvctl *k, int st)
{
	switch (st) {
	case KVC_OK: return KX_OK;
	case KVC_NOT_FOUND: return KX_NOTFOUND;
	case KVC_ECONNECT: return KX_CONNECT;
	case KVC_UNAVAILABLE:
	case KVC_PERMISSION_DENIED:
	case KVC_UNAUTHENTICATED:
		/* kvd refused the connection itself (it is closed now) */
		return k->c && !kvc_connected(k->c) ? KX_CONNECT : KX_FAIL;
	default: return KX_FAIL;
	}
}

/* Report a failed call on k->c; key (may be NULL) names the key for
 * "not found". Returns the exit code. */
static int report(struct kvctl *k, const char *what, int st, const struct karg *key)
{
	const char *msg = k->c ? kvc_last_error(k->c) : "";
	if (!*msg)
		msg = kvc_status_str(st);
	if (st == KVC_NOT_FOUND) {
		if (k->mode == MODE_CLI) {
			fprintf(stderr, "kvctl: %s: key not found", what);
			if (key) {
				fputs(": ", stderr);
				kvctl_put_bytes(k, stderr, key->p, key->n);
			}
			fputc('\n', stderr);
		} else if (g_defer) {
			snprintf(g_msg, sizeof g_msg, "(not found)");
		} else {
			puts("(not found)");
		}
		return KX_NOTFOUND;
	}
	char extra[160] = "";
	if (st == KVC_ETIMEOUT)
		snprintf(extra, sizeof extra, " (timeout %d ms; change it with -t)", k->timeout_ms);
	else if (!strstr(msg, k->sock))
		snprintf(extra, sizeof extra, " (kvd at %.120s)", k->sock);
	if (k->mode == MODE_CLI) {
		fprintf(stderr, "kvctl: %s: %s: ", what, kvc_status_str(st));
		kvctl_put_line(stderr, msg);
		fprintf(stderr, "%s\n", extra);
	} else {
		snprintf(g_msg, sizeof g_msg, "ERR %s: %s%s", kvc_status_str(st), msg,
			 st == KVC_ETIMEOUT ? extra : "");
		if (!g_defer) {
			kvctl_put_line(stdout, g_msg);
			fputc('\n', stdout);
		}
	}
	return kvctl_exit_code(k, st);
}

/* Flush stdout and report a write error (e.g. a full disk). */
static int check_stdout(void)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		return KX_OK;
	fprintf(stderr, "kvctl: writing to stdout failed: %s\n", strerror(errno));
	return KX_FAIL;
}

/* ---- connection ------------------------------------------------------------------- */

int kvctl_connect(struct kvctl *k)
{
	char err[512];
	if (k->c && kvc_connected(k->c))
		return KX_OK;
	kvc_close(k->c);
	k->c = NULL;
	int rc = kvc_connect(k->sock, k->timeout_ms, &k->c, err, sizeof err);
	if (rc == KVC_OK) {
		k->ever_connected = 1;
		return KX_OK;
	}
	int e = errno;
	const char *hint = e == ENOENT || e == ECONNREFUSED ? " (is kvd running?)"
			   : e == EACCES                    ? " (no permission on the socket)"
							    : "";
	if (k->mode == MODE_INTERACTIVE)
		printf("ERR %s: %s%s\n", kvc_status_str(rc), err, hint);
	else
		fprintf(stderr, "kvctl: %s%s\n", err, hint);
	return KX_CONNECT;
}

/* ---- arguments ---------------------------------------------------------------------- */

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode a hex word in place. 0 or -1. */
static int hex_decode(struct karg *a)
{
	if (a->n % 2)
		return -1;
	for (size_t i = 0; i < a->n; i += 2) {
		int hi = hexval((unsigned char)a->p[i]), lo = hexval((unsigned char)a->p[i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		a->p[i / 2] = (char)(hi << 4 | lo);
	}
	a->n /= 2;
	return 0;
}

static int parse_u32(const struct karg *a, uint32_t *out)
{
	uint64_t v = 0;
	if (a->n == 0 || a->n > 10)
		return -1;
	for (size_t i = 0; i < a->n; i++) {
		if (a->p[i] < '0' || a->p[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(a->p[i] - '0');
	}
	if (v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

/* Decode a key word (hex with --hex) and check its size. */
static int prep_key(struct kvctl *k, const struct cmd *cmd, struct karg *key, const char *what)
{
	if (k->hex && hex_decode(key) < 0)
		return usage_err(k, cmd, "%s '%s' is not valid hex (--hex)", what, show(key));
	if (key->n == 0)
		return usage_err(k, cmd, "the %s must not be empty", what);
	if (key->n > KVC_MAX_KEY)
		return usage_err(k, cmd, "the %s is %zu bytes, the maximum is %u (64 KiB)", what, key->n,
				 KVC_MAX_KEY);
	return KX_OK;
}

/* Decode a value word (hex with --hex) and check its size. */
static int prep_value(struct kvctl *k, const struct cmd *cmd, struct karg *v)
{
	if (k->hex && hex_decode(v) < 0)
		return usage_err(k, cmd, "value is not valid hex (--hex)");
	if (v->n > KVC_MAX_VALUE)
		return usage_err(k, cmd, "value too large: %zu bytes, the maximum is %u (64 MiB)", v->n,
				 KVC_MAX_VALUE);
	return KX_OK;
}

/* If args[*i] is option name (or name=VALUE), consume it (and its value,
 * when want_val) and return 1; 0 if it is not; -1 if the value is missing. */
static int match_opt(struct karg *args, int nargs, int *i, const char *name, int want_val,
		     struct karg *val)
{
	struct karg *a = &args[*i];
	size_t l = strlen(name);
	if (a->n < l || memcmp(a->p, name, l) != 0)
		return 0;
	if (a->n == l) {
		if (!want_val)
			return 1;
		if (*i + 1 >= nargs)
			return -1;
		*val = args[++*i];
		return 1;
	}
	if (!want_val || a->p[l] != '=')
		return 0;
	*val = (struct karg){ a->p + l + 1, a->n - l - 1, 0 };
	return 1;
}

/* Global options: -s/--socket PATH, -t/--timeout MS, --hex. Values are
 * NUL-terminated (argv). 1 consumed, 0 not global, KX_USAGE reported. */
static int parse_global(struct kvctl *k, struct karg *args, int nargs, int *i)
{
	struct karg v;
	int r;
	if ((r = match_opt(args, nargs, i, "--hex", 0, &v)) != 0) {
		k->hex = 1;
		return 1;
	}
	if ((r = match_opt(args, nargs, i, "-s", 1, &v)) != 0 ||
	    (r = match_opt(args, nargs, i, "--socket", 1, &v)) != 0) {
		if (r < 0 || v.n == 0)
			return usage_err(k, NULL, "option -s needs a socket path");
		k->sock = v.p;
		return 1;
	}
	if ((r = match_opt(args, nargs, i, "-t", 1, &v)) != 0 ||
	    (r = match_opt(args, nargs, i, "--timeout", 1, &v)) != 0) {
		uint32_t ms;
		if (r < 0 || parse_u32(&v, &ms) < 0 || ms > INT_MAX)
			return usage_err(k, NULL, "option -t needs a timeout in milliseconds (0 = none)");
		k->timeout_ms = (int)ms;
		k->timeout_set = 1;
		if (k->c)
			kvc_set_timeout(k->c, k->timeout_ms);
		return 1;
	}
	return 0;
}

static const struct {
	const char *name;
	unsigned flag;
	int want_val;
} optdefs[] = {
	{ "--ttl", O_TTL, 1 },	 { "--sync", O_SYNC, 0 }, { "--keys-only", O_KEYS, 0 },
	{ "--limit", O_LIMIT, 1 }, { "--json", O_JSON, 0 }, { "--wait", O_WAIT, 0 },
};

/* Split args[1..] into positionals and options. KX_OK or KX_USAGE. */
static int parse_cmd(struct kvctl *k, const struct cmd *cmd, struct karg *args, int nargs,
		     struct karg *pos, int *npos, struct copts *o)
{
	int opts_done = 0;
	*npos = 0;
	memset(o, 0, sizeof *o);
	for (int i = 1; i < nargs; i++) {
		struct karg *a = &args[i];
		if (!opts_done && !a->quoted && a->n >= 2 && a->p[0] == '-') {
			if (a->n == 2 && a->p[1] == '-') {
				opts_done = 1;
				continue;
			}
			int matched = 0;
			for (size_t d = 0; d < sizeof optdefs / sizeof optdefs[0] && !matched; d++) {
				struct karg v;
				int r = match_opt(args, nargs, &i, optdefs[d].name, optdefs[d].want_val, &v);
				if (r == 0)
					continue;
				if (!(cmd->opts & optdefs[d].flag))
					return usage_err(k, cmd, "option %s does not apply here",
							 optdefs[d].name);
				if (r < 0)
					return usage_err(k, cmd, "option %s needs a value", optdefs[d].name);
				if (optdefs[d].flag == O_TTL && parse_u32(&v, &o->ttl) < 0)
					return usage_err(k, cmd, "--ttl needs seconds (0..4294967295)");
				if (optdefs[d].flag == O_LIMIT && parse_u32(&v, &o->limit) < 0)
					return usage_err(k, cmd, "--limit needs a count (0 = no limit)");
				o->seen |= optdefs[d].flag;
				matched = 1;
			}
			if (matched)
				continue;
			if (k->mode == MODE_CLI) {
				int r = parse_global(k, args, nargs, &i);
				if (r == 1)
					continue;
				if (r)
					return r;
			}
			return usage_err(k, cmd, "unknown option '%s' (use -- before a word that starts with '-')",
					 show(a));
		}
		if (*npos >= cmd->maxpos)
			return usage_err(k, cmd, "too many arguments");
		pos[(*npos)++] = *a;
	}
	if (*npos < cmd->minpos)
		return usage_err(k, cmd, "missing argument");
	return KX_OK;
}

/* Read all of stdin (binary) into a malloc'ed buffer. 0; -1 read error
 * (errno); -2 larger than KVC_MAX_VALUE. */
static int read_stdin(char **out, size_t *len)
{
	size_t cap = 64 * 1024, n = 0;
	char *b = malloc(cap);
	*out = NULL;
	*len = 0;
	if (!b)
		return -1;
	for (;;) {
		if (n == cap) {
			if (cap > KVC_MAX_VALUE) {
				free(b);
				return -2;
			}
			size_t ncap = cap * 2 > (size_t)KVC_MAX_VALUE + 1 ? (size_t)KVC_MAX_VALUE + 1 : cap * 2;
			char *nb = realloc(b, ncap);
			if (!nb) {
				free(b);
				return -1;
			}
			b = nb;
			cap = ncap;
		}
		ssize_t r = read(0, b + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			free(b);
			errno = e;
			return -1;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > KVC_MAX_VALUE) {
		free(b);
		return -2;
	}
	*out = b;
	*len = n;
	return 0;
}

/* ---- commands ------------------------------------------------------------------------ */

static void print_duration(uint64_t ms)
{
	uint64_t s = ms / 1000;
	if (s < 60)
		printf("%.1fs", (double)ms / 1000.0);
	else if (s < 86400)
		printf("%" PRIu64 "h%02" PRIu64 "m%02" PRIu64 "s", s / 3600, s / 60 % 60, s % 60);
	else
		printf("%" PRIu64 "d%02" PRIu64 "h%02" PRIu64 "m", s / 86400, s / 3600 % 24, s / 60 % 60);
}

static int cmd_ping(struct kvctl *k, const struct cmd *cmd, struct karg *pos, int npos,
		    const struct copts *o)
{
	struct kvc_ping_info info;
	(void)pos, (void)npos, (void)o;
	int rc = kvctl_connect(k);
	if (rc)
		return rc;
	int st = kvc_ping(k->c, &info);
	if (st)
		return report(k, cmd->name, st, NULL);
	printf("PONG (kvd %s, up ", info.version);
	print_duration(info.uptime_ms);
	printf(")\n");
	return check_stdout();
}

static int cmd_get(struct kvctl *k, const struct cmd *cmd, struct karg *pos, int npos,
		   const struct copts *o)
{
	void *v = NULL;
	size_t vlen = 0;
	(void)npos, (void)o;
	int rc = prep_key(k, cmd, &pos[0], "key");
	if (rc || (rc = kvctl_connect(k)))
		return rc;
	int st = kvc_get(k->c, pos[0].p, pos[0].n, &v, &vlen, NULL);
	if (st)
		return report(k, cmd->name, st, &pos[0]);
	if (k->mode == MODE_CLI && !k->hex) {
		fwrite(v, 1, vlen, stdout);
		if (k->tty_out)
			putchar('\n');
	} else {
		kvctl_put_bytes(k, stdout, v, vlen);
		putchar('\n');
	}
	kvc_free(v);
	return check_stdout();
}

static int cmd_put(struct kvctl *k, const struct cmd *cmd, struct karg *pos, int npos,
		   const struct copts *o)
{
	char *vbuf = NULL;
	struct karg val = pos[1];
	int rc;
	(void)npos;
	if ((rc = prep_key(k, cmd, &pos[0], "key")))
		goto out;
	if (k->mode == MODE_CLI && val.n == 1 && val.p[0] == '-') {
		int r = read_stdin(&vbuf, &val.n);
		if (r == -2) {
			rc = usage_err(k, cmd, "value too large: stdin holds more than %u bytes (64 MiB)",
				       KVC_MAX_VALUE);
			goto out;
		}
		if (r < 0) {
			fprintf(stderr, "kvctl: put: reading the value from stdin: %s\n", strerror(errno));
			rc = KX_FAIL;
			goto out;
		}
		val.p = vbuf;
	} else if ((rc = prep_value(k, cmd, &val))) {
		goto out;
	}
	if ((rc = kvctl_connect(k)))
		goto out;
	int st = kvc_put(k->c, pos[0].p, pos[0].n, val.p, val.n, o->ttl,
			 (o->seen & O_SYNC) ? KVC_SYNC : 0);
	if (st) {
		rc = report(k, cmd->name, st, &pos[0]);
		goto out;
	}
	puts("OK");
	rc = check_stdout();
out:
	free(vbuf);
	return rc;
}

static int cmd_del(struct kvctl *k, const struct cmd *cmd, struct karg *pos, int npos,
		   const struct copts *o)
{
	(void)npos;
	int rc = prep_key(k, cmd, &pos[0], "key");
	if (rc || (rc = kvctl_connect(k)))
		return rc;
	int st = kvc_del(k->c, pos[0].p, pos[0].n, (o->seen & O_SYNC) ? KVC_SYNC : 0);
	if (st)
		return report(k, cmd->name, st, &pos[0]);
	puts("OK");
	return check_stdout();
}

/* batch: read "put KEY VALUE [TTL]" / "del KEY" lines from stdin, send
 * them as one atomic Batch. Nothing is sent if any line is wrong. */
static int cmd_batch(struct kvctl *k, const struct cmd *cmd, struct karg *pos, int npos,
		     const struct copts *o)
{
	struct kvctl_lreader lr;
	struct kvc_op *ops = NULL;
	char **lines = NULL;
	size_t nops = 0, cap = 0, nlines = 0, total = 0;
	int rc = KX_OK;
	(void)pos, (void)npos;

	if (k->mode != MODE_CLI)
		return usage_err(k, cmd, "batch reads its operations from stdin: run 'kvctl batch < FILE'");
	kvctl_lr_init(&lr, 0);
	for (;;) {
		char *line;
		size_t len;
		struct karg w[KVCTL_MAX_ARGS];
		int nw;
		char err[256];
		int r = kvctl_lr_next(&lr, 1, &line, &len);
		if (r == LR_EOF)
			break;
		if (r != LR_LINE) {
			rc = usage_err(k, cmd, "line %lu: %s", lr.lineno + 1,
				       r == LR_TOOLONG ? "line too long" : strerror(errno));
			goto out;
		}
		char *copy = malloc(len + 1);
		char **nl = realloc(lines, (nlines + 1) * sizeof *lines);
		if (!copy || !nl) {
			free(copy);
			if (nl)
				lines = nl;
			fprintf(stderr, "kvctl: batch: out of memory\n");
			rc = KX_FAIL;
			goto out;
		}
		lines = nl;
		lines[nlines++] = copy;
		memcpy(copy, line, len);
		copy[len] = '\0';
		if (kvctl_tokenize(copy, len, w, KVCTL_MAX_ARGS, &nw, err, sizeof err) < 0) {
			rc = usage_err(k, cmd, "line %lu: %s", lr.lineno, err);
			goto out;
		}
		if (nw == 0)
			continue;
		struct kvc_op op = { 0 };
		int is_put = w[0].n == 3 && !memcmp(w[0].p, "put", 3);
		int is_del = w[0].n == 3 && !memcmp(w[0].p, "del", 3);
		if (!(is_put && (nw == 3 || nw == 4)) && !(is_del && nw == 2)) {
			rc = usage_err(k, cmd, "line %lu: expected 'put KEY VALUE [TTL]' or 'del KEY'",
				       lr.lineno);
			goto out;
		}
		char what[48];
		snprintf(what, sizeof what, "key on line %lu", lr.lineno);
		if ((rc = prep_key(k, cmd, &w[1], what)))
			goto out;
		op.op = is_put ? KVC_OP_PUT : KVC_OP_DEL;
		op.key = w[1].p;
		op.klen = w[1].n;
		if (is_put) {
			if ((rc = prep_value(k, cmd, &w[2])))
				goto out;
			if (nw == 4 && parse_u32(&w[3], &op.ttl_seconds) < 0) {
				rc = usage_err(k, cmd, "line %lu: TTL must be seconds", lr.lineno);
				goto out;
			}
			op.value = w[2].p;
			op.vlen = w[2].n;
		}
		total += op.klen + op.vlen + 16;
		if (total > KVC_MAX_FRAME) {
			rc = usage_err(k, cmd, "batch too large: above the %u-byte request maximum",
				       KVC_MAX_FRAME);
			goto out;
		}
		if (nops == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct kvc_op *n2 = realloc(ops, ncap * sizeof *ops);
			if (!n2) {
				fprintf(stderr, "kvctl: batch: out of memory\n");
				rc = KX_FAIL;
				goto out;
			}
			ops = n2;
			cap = ncap;
		}
		ops[nops++] = op;
	}
	if ((rc = kvctl_connect(k)))
		goto out;
	uint32_t applied = 0;
	int st = kvc_batch(k->c, ops, nops, (o->seen & O_SYNC) ? KVC_SYNC : 0, &applied);
	if (st) {
		rc = report(k, cmd->name, st, NULL);
		goto out;
	}
	printf("OK (%" PRIu32 " operations applied)\n", applied);
	rc = check_stdout();
out:
	for (size_t i = 0; i < nlines; i++)
		free(lines[i]);
	free(lines);
	free(ops);
	kvctl_lr_free(&lr);
	return rc;
}

struct scan_out {
	const struct kvctl *k;
	int keys_only;
	uint64_t n;
};

static int scan_item(void *arg, const void *key, size_t klen, const void *value, size_t vlen)
{
	struct scan_out *s = arg;
	kvctl_put_bytes(s->k, stdout, key, klen);
	if (!s->keys_only) {
		putchar('\t');
		kvctl_put_bytes(s->k, stdout, value, vlen);
	}
	putchar('\n');
	s->n++;
	return ferror(stdout) ? 1 : 0;
}

static int cmd_scan(struct kvctl *k, const struct cmd *cmd, struct karg *pos, int npos,
		    const struct copts *o)
{
	struct karg prefix = { (char *)"", 0, 0 };
	if (npos) {
		prefix = pos[0];
		if (k->hex && hex_decode(&prefix) < 0)
			return usage_err(k, cmd, "prefix is not valid hex (--hex)");
		if (prefix.n > KVC_MAX_KEY)
			return usage_err(k, cmd, "prefix longer than the 64 KiB key maximum");
	}
	int rc = kvctl_connect(k);
	if (rc)
		return rc;
	struct scan_out s = { k, (o->seen & O_KEYS) != 0, 0 };
	int st = kvc_scan(k->c, prefix.p, prefix.n, o->limit, s.keys_only ? KVC_SCAN_KEYS_ONLY : 0,
			  scan_item, &s);
	if (st == KVC_CANCELLED && ferror(stdout))
		return check_stdout();
	if (st)
		return report(k, cmd->name, st, NULL);
	if (k->mode == MODE_INTERACTIVE && s.n == 0)
		puts("(no keys)");
	return check_stdout();
}

static void print_stats_text(const struct kvc_stats *s)
{
#define U(name) printf("%-22s %" PRIu64 "\n", #name, s->name)
#define S(name) printf("%-22s %s\n", #name, s->name)
	S(version);
	printf("%-22s %" PRIu64 " (", "uptime_ms", s->uptime_ms);
	print_duration(s->uptime_ms);
	printf(")\n");
	U(keys);
	U(key_bytes);
	U(keydir_bytes);
	printf("%-22s %.2f\n", "keydir_bytes_per_key", s->keydir_bytes_per_key);
	U(segments);
	U(disk_bytes);
	U(live_bytes);
	U(dead_bytes);
	U(connections);
	U(requests);
	printf("%-22s %s\n", "read_only", s->read_only ? "yes" : "no");
	if (s->read_only || *s->read_only_reason)
		S(read_only_reason);
	S(sync_mode);
	U(syncs);
	U(synced_writes);
	U(sync_time_us);
	U(poll_time_us);
	U(poll_hits);
	U(poll_misses);
	U(poll_window_us);
	printf("%-22s %s\n", "io_uring", s->io_uring ? "yes" : "no");
	U(io_batches);
	U(io_batched_ops);
	S(merge_state);
	U(merges);
	U(merge_last_ms);
	U(merge_reclaimed_bytes);
#undef U
#undef S
	if (s->nsegment) {
		printf("%-10s %14s %14s %14s  %s\n", "segment", "bytes", "live_bytes", "dead_bytes",
		       "flags");
		for (size_t i = 0; i < s->nsegment; i++) {
			const struct kvc_segment_stats *g = &s->segment[i];
			printf("%-10" PRIu32 " %14" PRIu64 " %14" PRIu64 " %14" PRIu64 "  %s%s\n", g->id,
			       g->bytes, g->live_bytes, g->dead_bytes, g->active ? "active " : "",
			       g->has_hint ? "hint" : "");
		}
	}
}

static int cmd_stats(struct kvctl *k, const struct cmd *cmd, struct karg *pos, int npos,
		     const struct copts *o)
{
	struct kvc_stats *s = NULL;
	(void)pos, (void)npos;
	int rc = kvctl_connect(k);
	if (rc)
		return rc;
	int st = kvc_stats(k->c, &s);
	if (st)
		return report(k, cmd->name, st, NULL);
	if (o->seen & O_JSON) {
		char *json = NULL;
		if (kvc_stats_json(s, &json, NULL) != KVC_OK) {
			kvc_stats_free(s);
			fprintf(stderr, "kvctl: stats: out of memory\n");
			return KX_FAIL;
		}
		puts(json);
		kvc_free(json);
	} else {
		print_stats_text(s);
	}
	kvc_stats_free(s);
	return check_stdout();
}

static int cmd_merge(struct kvctl *k, const struct cmd *cmd, struct karg *pos, int npos,
		     const struct copts *o)
{
	struct kvc_merge_info info;
	int wait = (o->seen & O_WAIT) != 0;
	(void)pos, (void)npos;
	int rc = kvctl_connect(k);
	if (rc)
		return rc;
	if (wait && !k->timeout_set)
		kvc_set_timeout(k->c, 0); /* a merge may take minutes: no default timeout */
	int st = kvc_merge(k->c, wait, &info);
	kvc_set_timeout(k->c, k->timeout_ms);
	if (st)
		return report(k, cmd->name, st, NULL);
	printf("OK merge %s", info.state);
	if (!strcmp(info.state, "done"))
		printf(": reclaimed %" PRIu64 " bytes in %" PRIu64 " ms", info.reclaimed_bytes,
		       info.duration_ms);
	putchar('\n');
	return check_stdout();
}

static int cmd_sync(struct kvctl *k, const struct cmd *cmd, struct karg *pos, int npos,
		    const struct copts *o)
{
	(void)pos, (void)npos, (void)o;
	int rc = kvctl_connect(k);
	if (rc)
		return rc;
	int st = kvc_sync(k->c);
	if (st)
		return report(k, cmd->name, st, NULL);
	puts("OK");
	return check_stdout();
}

static int cmd_help(struct kvctl *k, const struct cmd *cmd, struct karg *pos, int npos,
		    const struct copts *o)
{
	(void)k, (void)cmd, (void)pos, (void)npos, (void)o;
	kvctl_usage(stdout);
	return check_stdout();
}

/* bench parses its own options: kvctl_run hands it the raw words. */
static int cmd_bench(struct kvctl *k, const struct cmd *cmd, struct karg *pos, int npos,
		     const struct copts *o)
{
	(void)k, (void)cmd, (void)pos, (void)npos, (void)o;
	return KX_USAGE; /* not reached */
}

static const struct cmd cmds[] = {
	{ "ping", 0, 0, 0, cmd_ping, "", "check that kvd answers" },
	{ "get", 1, 1, 0, cmd_get, "KEY", "print the value of KEY (raw bytes)" },
	{ "put", 2, 2, O_TTL | O_SYNC, cmd_put, "KEY VALUE|- [--ttl S] [--sync]",
	  "store VALUE ('-': read it from stdin)" },
	{ "del", 1, 1, O_SYNC, cmd_del, "KEY [--sync]", "delete KEY" },
	{ "batch", 0, 0, O_SYNC, cmd_batch, "[--sync] < FILE",
	  "apply stdin lines 'put KEY VALUE [TTL]' / 'del KEY' atomically" },
	{ "scan", 0, 1, O_KEYS | O_LIMIT, cmd_scan, "[PREFIX] [--keys-only] [--limit N]",
	  "list keys (and values) starting with PREFIX" },
	{ "stats", 0, 0, O_JSON, cmd_stats, "[--json]", "server statistics" },
	{ "merge", 0, 0, O_WAIT, cmd_merge, "[--wait]", "compact the data files" },
	{ "sync", 0, 0, 0, cmd_sync, "", "make acknowledged writes durable" },
	{ "bench", 0, 0, 0, cmd_bench, "[-c N] [-P N] [-n N] [-t LIST] ...",
	  "load test kvd ('kvctl bench --help')" },
	{ "help", 0, 0, 0, cmd_help, "", "this text" },
};

static const struct cmd *find_cmd(const struct karg *w)
{
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
		if (strlen(cmds[i].name) == w->n && !memcmp(cmds[i].name, w->p, w->n))
			return &cmds[i];
	return NULL;
}

void kvctl_usage(FILE *f)
{
	fprintf(f, "usage: kvctl [-s SOCKET] [-t MS] [--hex] COMMAND [ARGS...]\n"
		   "       kvctl [-s SOCKET] [-t MS] [--hex] < COMMANDS   (pipe mode)\n"
		   "       kvctl [-s SOCKET] [-t MS] [--hex]              (prompt, on a terminal)\n"
		   "commands:\n");
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
		char head[64];
		snprintf(head, sizeof head, "%s %s", cmds[i].name, cmds[i].args);
		fprintf(f, "  %-40s %s\n", head, cmds[i].help);
	}
	fprintf(f, "options:\n"
		   "  -s PATH    socket (default: $KVD_SOCKET, else " KVCTL_DEFAULT_SOCKET ")\n"
		   "  -t MS      timeout per request in ms (default %d; 0 = none)\n"
		   "  --hex      keys, values and prefixes given and printed as hex\n"
		   "  --version  print the version\n"
		   "exit status: 0 ok, 1 key not found, 2 usage error, 3 cannot connect,\n"
		   "             4 error reported by kvd (or the connection failed)\n",
		KVCTL_DEFAULT_TIMEOUT_MS);
}

int kvctl_run(struct kvctl *k, struct karg *args, int nargs)
{
	struct karg pos[4];
	struct copts o;
	int npos;
	const struct cmd *cmd = find_cmd(&args[0]);
	if (!cmd)
		return usage_err(k, NULL, "unknown command '%s'", show(&args[0]));
	if (cmd->fn == cmd_bench)
		return kvctl_bench(k, args + 1, nargs - 1);
	int rc = parse_cmd(k, cmd, args, nargs, pos, &npos, &o);
	if (rc)
		return rc;
	return cmd->fn(k, cmd, pos, npos, &o);
}

int kvctl_pipelinable(const struct karg *w)
{
	const struct cmd *cmd = find_cmd(w);
	return cmd && (cmd->fn == cmd_ping || cmd->fn == cmd_get || cmd->fn == cmd_put ||
		       cmd->fn == cmd_del);
}

int kvctl_pipe_queue(struct kvctl *k, struct karg *args, int nargs, const char **msg)
{
	struct karg pos[4];
	struct copts o;
	int npos, st = KVC_OK, rc;
	const struct cmd *cmd = find_cmd(&args[0]);

	g_defer = 1;
	g_msg[0] = '\0';
	*msg = g_msg;
	if ((rc = parse_cmd(k, cmd, args, nargs, pos, &npos, &o)))
		goto out;
	if (cmd->fn == cmd_ping) {
		st = kvc_pipe_ping(k->c);
	} else if (cmd->fn == cmd_get) {
		if ((rc = prep_key(k, cmd, &pos[0], "key")))
			goto out;
		st = kvc_pipe_get(k->c, pos[0].p, pos[0].n);
	} else if (cmd->fn == cmd_put) {
		if ((rc = prep_key(k, cmd, &pos[0], "key")) || (rc = prep_value(k, cmd, &pos[1])))
			goto out;
		st = kvc_pipe_put(k->c, pos[0].p, pos[0].n, pos[1].p, pos[1].n, o.ttl,
				  (o.seen & O_SYNC) ? KVC_SYNC : 0);
	} else {
		if ((rc = prep_key(k, cmd, &pos[0], "key")))
			goto out;
		st = kvc_pipe_del(k->c, pos[0].p, pos[0].n, (o.seen & O_SYNC) ? KVC_SYNC : 0);
	}
	rc = st ? report(k, cmd->name, st, NULL) : KX_OK;
out:
	g_defer = 0;
	return rc;
}

int main(int argc, char **argv)
{
	struct kvctl k = { 0 };
	struct karg *args = NULL;
	int rc = KX_OK, nargs = 0, i;

	setlocale(LC_CTYPE, "");
	k.sock = getenv("KVD_SOCKET");
	if (!k.sock || !*k.sock)
		k.sock = KVCTL_DEFAULT_SOCKET;
	k.timeout_ms = KVCTL_DEFAULT_TIMEOUT_MS;
	k.tty_out = isatty(1);
	k.mode = MODE_CLI;

	args = calloc((size_t)argc + 1, sizeof *args);
	if (!args) {
		fprintf(stderr, "kvctl: out of memory\n");
		return KX_FAIL;
	}
	for (i = 1; i < argc; i++)
		args[nargs++] = (struct karg){ argv[i], strlen(argv[i]), 0 };

	/* Global options up to the command word. */
	for (i = 0; i < nargs; i++) {
		struct karg *a = &args[i];
		if (a->n == 2 && !memcmp(a->p, "--", 2)) {
			i++;
			break;
		}
		if (a->n < 2 || a->p[0] != '-')
			break;
		if (!strcmp(a->p, "--version")) {
			printf("kvctl %s (libkvclient %s)\n", KVCTL_VERSION, kvc_version());
			goto out;
		}
		if (!strcmp(a->p, "-h") || !strcmp(a->p, "--help")) {
			kvctl_usage(stdout);
			goto out;
		}
		int r = parse_global(&k, args, nargs, &i);
		if (r == 1)
			continue;
		rc = r ? r : usage_err(&k, NULL, "unknown option '%s'", show(a));
		goto out;
	}

	if (i >= nargs) {
		if (isatty(0)) {
			k.mode = MODE_INTERACTIVE;
			rc = kvctl_interactive(&k);
		} else {
			k.mode = MODE_PIPE;
			rc = kvctl_pipe_mode(&k);
		}
	} else {
		rc = kvctl_run(&k, args + i, nargs - i);
	}
out:
	kvc_close(k.c);
	free(args);
	if (fflush(stdout) != 0 && rc == KX_OK)
		rc = KX_FAIL;
	return rc;
}
