/*
 * kvctl_lines.c — kvctl's line-oriented input: the stdin line reader, the
 * tokenizer of command lines, pipe mode and the interactive prompt.
 *
 * Command lines (pipe mode, the prompt, `batch` input) are split into
 * words at spaces and tabs. 'single quotes' keep everything literally;
 * "double quotes" take the escapes \\ \" \' \n \t \r \0 \xHH. Quotes may
 * be glued to other text (ab"c d" is one word). A line whose first word
 * starts with '#' is a comment. With --hex, keys and values are hex words.
 *
 * Pipe mode (no command, stdin not a terminal): ping/get/put/del lines are
 * queued on the kvc_client pipeline and flushed every PIPE_CHUNK commands
 * or as soon as stdin has no complete line ready; replies are printed in
 * order, one line each, and stdout is flushed after each batch of replies.
 * Any other line (scan, stats, a malformed line ...) is a barrier: every
 * reply still due is printed first, then the line is handled on its own, so
 * output order always equals input order. At most PIPE_WINDOW replies are
 * outstanding. A transport failure ends the run: each request still
 * unanswered gets an "ERR" line, then a message on stderr.
 *
 * Owns: the line reader's buffer, libedit's state (interactive mode).
 */
#include "kvctl.h"

#include <errno.h>
#include <histedit.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PIPE_CHUNK 1000
#define PIPE_WINDOW 20000
/* A put with a 64 MiB value as hex and a 64 KiB hex key, plus options. */
#define LR_MAX_LINE ((size_t)KVC_MAX_VALUE * 4 + (size_t)KVC_MAX_KEY * 4 + 4096)

/* ---- tokenizer ------------------------------------------------------------------ */

static int hexdig(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int kvctl_tokenize(char *line, size_t len, struct karg *out, int max, int *nargs, char *err,
		   size_t errlen)
{
	size_t i = 0;
	int n = 0;
	*nargs = 0;
	for (;;) {
		while (i < len && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i >= len || (n == 0 && line[i] == '#'))
			break;
		if (n == max) {
			snprintf(err, errlen, "too many words (at most %d)", max);
			return -1;
		}
		/* Decoding never lengthens a word: the write position wp stays
		 * at or before the read position i. */
		char *w = line + i, *wp = w;
		int quoted = 0;
		while (i < len && line[i] != ' ' && line[i] != '\t') {
			char c = line[i++];
			if (c == '\'') {
				quoted = 1;
				while (i < len && line[i] != '\'')
					*wp++ = line[i++];
				if (i >= len) {
					snprintf(err, errlen, "unterminated ' quote");
					return -1;
				}
				i++;
			} else if (c == '"') {
				quoted = 1;
				for (;;) {
					if (i >= len) {
						snprintf(err, errlen, "unterminated \" quote");
						return -1;
					}
					c = line[i++];
					if (c == '"')
						break;
					if (c == '\\') {
						if (i >= len) {
							snprintf(err, errlen, "unterminated \" quote");
							return -1;
						}
						c = line[i++];
						switch (c) {
						case 'n': c = '\n'; break;
						case 't': c = '\t'; break;
						case 'r': c = '\r'; break;
						case '0': c = '\0'; break;
						case '\\': case '"': case '\'': break;
						case 'x': {
							int hi = i < len ? hexdig((unsigned char)line[i]) : -1;
							int lo = i + 1 < len ? hexdig((unsigned char)line[i + 1]) : -1;
							if (hi < 0 || lo < 0) {
								snprintf(err, errlen, "\\x needs two hex digits");
								return -1;
							}
							c = (char)(hi << 4 | lo);
							i += 2;
							break;
						}
						default:
							snprintf(err, errlen, "unknown escape \\%c in quotes",
								 (unsigned char)c >= 0x20 && c != 0x7f ? c : '?');
							return -1;
						}
					}
					*wp++ = c;
				}
			} else {
				*wp++ = c;
			}
		}
		out[n++] = (struct karg){ w, (size_t)(wp - w), quoted };
	}
	*nargs = n;
	return 0;
}

/* ---- line reader -------------------------------------------------------------------- */

void kvctl_lr_init(struct kvctl_lreader *r, int fd)
{
	memset(r, 0, sizeof *r);
	r->fd = fd;
}

void kvctl_lr_free(struct kvctl_lreader *r)
{
	free(r->buf);
	r->buf = NULL;
}

int kvctl_lr_next(struct kvctl_lreader *r, int block, char **line, size_t *len)
{
	for (;;) {
		char *nl = r->end > r->scanned ? memchr(r->buf + r->scanned, '\n', r->end - r->scanned)
					       : NULL;
		if (nl || (r->eof && r->end > r->start)) {
			size_t stop = nl ? (size_t)(nl - r->buf) : r->end;
			*line = r->buf + r->start;
			*len = stop - r->start;
			if (*len && (*line)[*len - 1] == '\r')
				(*len)--;
			r->start = r->scanned = nl ? stop + 1 : stop;
			r->lineno++;
			return LR_LINE;
		}
		r->scanned = r->end;
		if (r->eof)
			return LR_EOF;
		if (!block) {
			struct pollfd p = { .fd = r->fd, .events = POLLIN };
			int n = poll(&p, 1, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n == 0)
				return LR_AGAIN;
		}
		if (r->start && r->cap - r->end < 4096) {
			memmove(r->buf, r->buf + r->start, r->end - r->start);
			r->end -= r->start;
			r->scanned -= r->start;
			r->start = 0;
		}
		if (r->cap - r->end < 4096) {
			if (r->cap >= LR_MAX_LINE)
				return LR_TOOLONG;
			size_t ncap = r->cap ? r->cap * 2 : 64 * 1024;
			char *nb = realloc(r->buf, ncap);
			if (!nb)
				return LR_ERROR;
			r->buf = nb;
			r->cap = ncap;
		}
		ssize_t n = read(r->fd, r->buf + r->end, r->cap - r->end);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return LR_ERROR;
		if (n == 0)
			r->eof = 1;
		r->end += (size_t)n;
	}
}

/* ---- pipe mode ------------------------------------------------------------------------ */

struct pipe_state {
	unsigned long nerr, nnotfound;
	int fatal; /* exit code of a transport failure, 0 while fine */
};

static void print_reply(struct kvctl *k, const struct kvc_reply *r, struct pipe_state *ps)
{
	if (r->status == KVC_OK) {
		if (r->method == KVC_M_GET)
			kvctl_put_bytes(k, stdout, r->value, r->vlen);
		else
			fputs(r->method == KVC_M_PING ? "PONG" : "OK", stdout);
		fputc('\n', stdout);
		return;
	}
	if (r->status == KVC_NOT_FOUND) {
		fputs("(not found)\n", stdout);
		ps->nnotfound++;
		return;
	}
	fprintf(stdout, "ERR %s: ", kvc_status_str(r->status));
	kvctl_put_line(stdout, *r->message ? r->message : kvc_status_str(r->status));
	fputc('\n', stdout);
	ps->nerr++;
}

/* Print replies until at most target are pending; block = 0 stops as soon
 * as no reply is ready. 0, or -1 after a transport failure (reported: one
 * ERR line per unanswered request, then stderr). */
static int drain(struct kvctl *k, struct pipe_state *ps, size_t target, int block)
{
	while (kvc_pipe_pending(k->c) > target) {
		struct kvc_reply r;
		size_t due = kvc_pipe_pending(k->c);
		int st = kvc_pipe_next(k->c, &r, block ? -1 : 0);
		if (st == KVC_ETIMEOUT && !block)
			break;
		if (st == KVC_OK) {
			print_reply(k, &r, ps);
			continue;
		}
		for (size_t i = 0; i < due; i++) {
			printf("ERR %s: ", kvc_status_str(st));
			kvctl_put_line(stdout, kvc_last_error(k->c));
			putchar('\n');
		}
		ps->nerr += due;
		fflush(stdout);
		fprintf(stderr, "kvctl: pipe mode stopped: %s: ", kvc_status_str(st));
		kvctl_put_line(stderr, kvc_last_error(k->c));
		fputc('\n', stderr);
		ps->fatal = kvctl_exit_code(k, st);
		if (ps->fatal == KX_NOTFOUND || ps->fatal == KX_OK)
			ps->fatal = KX_FAIL;
		return -1;
	}
	fflush(stdout);
	return 0;
}

static int flush_pipe(struct kvctl *k, struct pipe_state *ps)
{
	int st = kvc_pipe_flush(k->c);
	if (st == KVC_OK)
		return drain(k, ps, 0, 0);
	/* A write that cannot finish: collect what can be said, then stop. */
	return drain(k, ps, 0, 1) < 0 ? -1 : 0;
}

static int word_is(const struct karg *w, const char *s)
{
	return w->n == strlen(s) && !memcmp(w->p, s, w->n);
}

int kvctl_pipe_mode(struct kvctl *k)
{
	struct kvctl_lreader lr;
	struct pipe_state ps = { 0 };
	unsigned since_flush = 0;
	int rc = kvctl_connect(k);
	if (rc)
		return rc;
	kvctl_lr_init(&lr, 0);
	for (;;) {
		char *line;
		size_t len;
		struct karg w[KVCTL_MAX_ARGS];
		int nw;
		char err[256];
		int pending = kvc_pipe_pending(k->c) > 0;
		int r = kvctl_lr_next(&lr, !pending, &line, &len);
		if (r == LR_AGAIN) { /* input is idle: finish what was sent */
			since_flush = 0;
			if (flush_pipe(k, &ps) < 0 || drain(k, &ps, 0, 1) < 0)
				break;
			continue;
		}
		if (r == LR_EOF)
			break;
		if (r != LR_LINE) {
			if (drain(k, &ps, 0, 1) < 0)
				break;
			fprintf(stderr, "kvctl: reading commands from stdin, line %lu: %s\n",
				lr.lineno + 1, r == LR_TOOLONG ? "line too long" : strerror(errno));
			ps.nerr++;
			break;
		}
		if (kvctl_tokenize(line, len, w, KVCTL_MAX_ARGS, &nw, err, sizeof err) < 0) {
			if (drain(k, &ps, 0, 1) < 0)
				break;
			printf("ERR USAGE: line %lu: %s\n", lr.lineno, err);
			ps.nerr++;
			continue;
		}
		if (nw == 0)
			continue;
		if (word_is(&w[0], "quit") || word_is(&w[0], "exit"))
			break;
		if (kvctl_pipelinable(&w[0])) {
			const char *msg;
			int q = kvctl_pipe_queue(k, w, nw, &msg);
			if (q == KX_OK) {
				if (++since_flush < PIPE_CHUNK)
					continue;
				since_flush = 0;
				if (flush_pipe(k, &ps) < 0)
					break;
				if (kvc_pipe_pending(k->c) > PIPE_WINDOW &&
				    drain(k, &ps, PIPE_WINDOW / 2, 1) < 0)
					break;
				continue;
			}
			/* Refused before sending: print it in its place. */
			if (!kvc_connected(k->c)) {
				ps.fatal = KX_FAIL;
				fprintf(stderr, "kvctl: pipe mode stopped: %s\n", kvc_last_error(k->c));
				break;
			}
			if (drain(k, &ps, 0, 1) < 0)
				break;
			kvctl_put_line(stdout, msg);
			putchar('\n');
			if (q == KX_NOTFOUND)
				ps.nnotfound++;
			else
				ps.nerr++;
			continue;
		}
		/* A barrier: every earlier reply first, then this command alone. */
		if (drain(k, &ps, 0, 1) < 0)
			break;
		int x = kvctl_run(k, w, nw);
		fflush(stdout);
		if (x == KX_NOTFOUND)
			ps.nnotfound++;
		else if (x != KX_OK)
			ps.nerr++;
		if (!kvc_connected(k->c)) {
			ps.fatal = x ? x : KX_FAIL;
			break;
		}
	}
	if (!ps.fatal && kvc_connected(k->c))
		(void)(flush_pipe(k, &ps) == 0 && drain(k, &ps, 0, 1) == 0);
	fflush(stdout);
	kvctl_lr_free(&lr);
	if (ps.fatal)
		return ps.fatal;
	return ps.nerr ? KX_FAIL : ps.nnotfound ? KX_NOTFOUND : KX_OK;
}

/* ---- interactive prompt ------------------------------------------------------------------ */

static char *prompt(EditLine *el)
{
	static char p[] = "kvd> ";
	(void)el;
	return p;
}

static char *history_path(void)
{
	const char *home = getenv("HOME");
	if (!home || !*home)
		return NULL;
	size_t n = strlen(home) + sizeof "/.kvctl_history";
	char *p = malloc(n);
	if (p)
		snprintf(p, n, "%s/.kvctl_history", home);
	return p;
}

int kvctl_interactive(struct kvctl *k)
{
	EditLine *el = NULL;
	History *h = NULL;
	HistEvent ev;
	char *buf = NULL, *hpath = NULL;
	size_t cap = 0;
	int rc = KX_OK;

	el = el_init("kvctl", stdin, stdout, stderr);
	h = history_init();
	if (!el || !h) {
		fprintf(stderr, "kvctl: cannot initialise line editing\n");
		rc = KX_FAIL;
		goto out;
	}
	history(h, &ev, H_SETSIZE, 1000);
	history(h, &ev, H_SETUNIQUE, 1);
	el_set(el, EL_HIST, history, h);
	el_set(el, EL_PROMPT, prompt);
	el_set(el, EL_EDITOR, "emacs");
	el_set(el, EL_SIGNAL, 1);
	el_source(el, NULL);
	if ((hpath = history_path()))
		history(h, &ev, H_LOAD, hpath);

	if (kvctl_connect(k) == KX_OK) {
		struct kvc_ping_info info;
		int st = kvc_ping(k->c, &info);
		if (st == KVC_OK)
			printf("kvctl %s connected to kvd %s at %s. Type 'help' for the commands, "
			       "'quit' to leave.\n",
			       KVCTL_VERSION, info.version, k->sock);
		else
			printf("ERR %s: %s\n", kvc_status_str(st), kvc_last_error(k->c));
	}
	for (;;) {
		int count = 0;
		const char *l = el_gets(el, &count);
		if (!l || count <= 0) {
			putchar('\n');
			break;
		}
		size_t len = strlen(l);
		while (len && (l[len - 1] == '\n' || l[len - 1] == '\r'))
			len--;
		if (len + 1 > cap) {
			char *nb = realloc(buf, len + 1);
			if (!nb) {
				fprintf(stderr, "kvctl: out of memory\n");
				rc = KX_FAIL;
				break;
			}
			buf = nb;
			cap = len + 1;
		}
		memcpy(buf, l, len);
		buf[len] = '\0';
		if (strspn(buf, " \t") == len)
			continue;
		history(h, &ev, H_ENTER, buf);

		struct karg w[KVCTL_MAX_ARGS];
		int nw;
		char err[256];
		if (kvctl_tokenize(buf, len, w, KVCTL_MAX_ARGS, &nw, err, sizeof err) < 0) {
			printf("ERR USAGE: %s\n", err);
			continue;
		}
		if (nw == 0)
			continue;
		if (word_is(&w[0], "quit") || word_is(&w[0], "exit"))
			break;
		kvctl_run(k, w, nw);
		fflush(stdout);
	}
	if (hpath) {
		mode_t old = umask(077); /* values typed at the prompt may be private */
		history(h, &ev, H_SAVE, hpath);
		umask(old);
	}
out:
	free(hpath);
	free(buf);
	if (h)
		history_end(h);
	if (el)
		el_end(el);
	return rc;
}
