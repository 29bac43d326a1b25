/*
 * kvctl.h — internal interface between the two halves of kvctl:
 *   kvctl.c        main(), options, the commands (one function each) and
 *                  the output formats;
 *   kvctl_lines.c  everything line-oriented: the stdin line reader, the
 *                  tokenizer of command lines, pipe mode (pipelined bulk
 *                  commands from stdin) and the interactive prompt;
 *   kvctl_bench.c  `kvctl bench`, the load generator (its own options and
 *                  connections; threads).
 * kvctl talks to kvd only through kvclient.h (tests/check_layering.sh).
 *
 * Invariants: k->c is NULL or a client owned by k (closed by main); a
 * struct karg points into a writable buffer (argv or a line buffer) that
 * outlives the command, so hex decoding happens in place.
 */
#ifndef KVCTL_H
#define KVCTL_H

#include <stdint.h>
#include <stdio.h>

#include "kvclient.h"

#define KVCTL_VERSION "0.1.0"
#define KVCTL_DEFAULT_SOCKET "/run/kvd/kvd.sock"
#define KVCTL_DEFAULT_TIMEOUT_MS 5000

/* Exit codes (documented in kvctl.1 and the usage text). */
enum { KX_OK = 0, KX_NOTFOUND = 1, KX_USAGE = 2, KX_CONNECT = 3, KX_FAIL = 4 };

enum kvctl_mode {
	MODE_CLI,         /* one command from argv; errors to stderr; get prints raw bytes */
	MODE_INTERACTIVE, /* the kvd> prompt; results and errors as lines on stdout */
	MODE_PIPE,        /* commands from stdin, one reply line each, pipelined */
};

struct kvctl {
	const char *sock;
	int timeout_ms;  /* per request; 0 = none */
	int timeout_set; /* -t given: merge --wait keeps it */
	int hex;         /* --hex: keys/values in and out as hex */
	int tty_out;     /* stdout is a terminal */
	enum kvctl_mode mode;
	kvc_client *c;   /* owned; NULL until the first command needs it */
	int ever_connected;
};

/* One word of a command: bytes (not NUL-terminated in line modes). */
struct karg {
	char *p;
	size_t n;
	int quoted; /* written with quotes in a line: never an option */
};

#define KVCTL_MAX_ARGS 16

/* kvctl.c */
void kvctl_usage(FILE *f);
/* Run the command args[0] with its arguments; returns a KX_* code. */
int kvctl_run(struct kvctl *k, struct karg *args, int nargs);
/* Connect if needed (reconnecting in interactive mode). KX_OK or KX_CONNECT
 * (reported). */
int kvctl_connect(struct kvctl *k);
/* 1 for commands pipe mode can pipeline (ping get put del). */
int kvctl_pipelinable(const struct karg *cmd);
/* Parse and queue a pipelinable command on k->c. Returns KVC_OK, a KVC_*
 * status with *msg describing it (rejected locally: nothing queued; *msg is
 * static or in kvc_last_error storage), or KX-style usage via KVC_EUSAGE. */
int kvctl_pipe_queue(struct kvctl *k, struct karg *args, int nargs, const char **msg);
/* Output helpers: escaped (printable ASCII as is, the rest as \xHH, \n ...),
 * hex, and "value" in the current --hex mode. */
void kvctl_put_escaped(FILE *f, const void *p, size_t n);
void kvctl_put_hex(FILE *f, const void *p, size_t n);
void kvctl_put_bytes(const struct kvctl *k, FILE *f, const void *p, size_t n);
/* A message with control characters replaced, for one-line output. */
void kvctl_put_line(FILE *f, const char *s);
/* Exit code for a failed status on k->c. */
int kvctl_exit_code(const struct kvctl *k, int status);

/* kvctl_bench.c: `kvctl bench [OPTIONS]` (args after the word "bench").
 * CLI mode only. Returns a KX_* code: KX_FAIL when any request failed. */
int kvctl_bench(struct kvctl *k, struct karg *args, int nargs);

/* kvctl_lines.c */
/* Split line[0..len) into words, decoding quotes and escapes in place.
 * 0 and *nargs set, or -1 with err filled. A line whose first word starts
 * with '#' is a comment (0 words). */
int kvctl_tokenize(char *line, size_t len, struct karg *out, int max, int *nargs, char *err,
		   size_t errlen);

struct kvctl_lreader {
	int fd;
	char *buf;
	size_t start, end, scanned, cap;
	int eof;
	unsigned long lineno;
};
enum { LR_LINE = 1, LR_EOF = 0, LR_AGAIN = -1, LR_ERROR = -2, LR_TOOLONG = -3 };
void kvctl_lr_init(struct kvctl_lreader *r, int fd);
void kvctl_lr_free(struct kvctl_lreader *r);
/* Next line without its "\n" (and "\r\n"). *line points into the reader,
 * writable, valid until the next call. block = 0: LR_AGAIN when no complete
 * line can be had without waiting. */
int kvctl_lr_next(struct kvctl_lreader *r, int block, char **line, size_t *len);

int kvctl_pipe_mode(struct kvctl *k);
int kvctl_interactive(struct kvctl *k);

#endif /* KVCTL_H */
