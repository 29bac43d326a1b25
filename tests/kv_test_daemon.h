/*
 * kv_test_daemon.h — helpers for integration tests that drive a real kvd:
 * start it (fork/exec of $KVD, default build/kvd) on a fresh temp
 * directory and socket, wait until it accepts (bounded), stop it by pid
 * (SIGTERM, bounded wait, SIGKILL fallback), and speak the wire protocol
 * with raw sockets and the generated kv.pb-c code — independent of
 * libkvclient. Also: kvtd_spawn_raw() (exact arguments, e.g. a run whose
 * data directory and socket come from a configuration file), log helpers
 * (kvtd_wait_log, kvt_file_count), a test case's connections and teardown
 * (struct kvt_conns: kvt_conn() opens one, kvt_conns_close_all() closes
 * them; kvtd_stop_and_check: a clean exit and no sanitizer report;
 * kvtd_teardown), and assertion-free Put/Get/Stats (kvt_put, kvt_get,
 * kvt_stats) for tests to assert on.
 *
 * Header-only (static functions) so each test stays one .c file. For cmocka
 * tests: kvt_conn() is the one helper that asserts (a failed connect fails
 * the test); the others return a status for the test to check.
 * Every wait here is bounded in time; nothing blocks forever.
 *
 * Ownership: struct kvtd holds its paths inline; kvtd_cleanup() stops the
 * daemon and removes its directory (kvtd_teardown: both of a case's, after
 * checking their runs). struct kvt_conns owns the descriptors in it.
 * Envelopes returned by kvt_recv() are freed with
 * kv__envelope__free_unpacked(env, NULL).
 */
#ifndef KV_TEST_DAEMON_H
#define KV_TEST_DAEMON_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kv.pb-c.h"
#include "kv_test_util.h"

#define KVT_IO_TIMEOUT_MS 10000

static inline uint64_t kvt_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void kvt_sleep_ms(unsigned ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static inline const char *kvt_kvd_path(void)
{
	const char *p = getenv("KVD");
	return p && *p ? p : "build/kvd";
}

/* Fill sa for path; -1 when path does not fit sun_path. */
static inline int kvt_sockaddr(struct sockaddr_un *sa, const char *path)
{
	size_t n = strlen(path);
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	if (n >= sizeof sa->sun_path)
		return -1;
	memcpy(sa->sun_path, path, n + 1);
	return 0;
}

/* ---- the daemon -------------------------------------------------------------- */

struct kvtd {
	pid_t pid;        /* 0 when not running */
	int status;       /* wait status of the last stopped/exited run */
	char dir[256];    /* temp dir holding data/, kvd.sock, kvd.log */
	char data[320];
	char sock[320];
	char log[320];
};

/* Fork/exec kvd with exactly the arguments args (NULL-ended, without the
 * program name); stderr and stdout go (appended) to d->log. */
static inline int kvtd_spawn_raw(struct kvtd *d, const char *const *args)
{
	const char *argv[64];
	int n = 0;
	argv[n++] = kvt_kvd_path();
	for (int i = 0; args && args[i] && n < 62; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* If the test process dies without its teardown, kvd stops too. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 2);
			dup2(fd, 1);
			close(fd);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	d->pid = pid;
	return 0;
}

/* Fork/exec kvd with --data-dir data --socket sock + extra (NULL-ended). */
static inline int kvtd_spawn(struct kvtd *d, const char *const *extra)
{
	const char *args[64];
	int n = 0;
	args[n++] = "--data-dir";
	args[n++] = d->data;
	args[n++] = "--socket";
	args[n++] = d->sock;
	for (int i = 0; extra && extra[i] && n < 62; i++)
		args[n++] = extra[i];
	args[n] = NULL;
	return kvtd_spawn_raw(d, args);
}

/* 0 once a connect() to d->sock succeeds; -1 if kvd exited or timeout_ms
 * passed. */
static inline int kvtd_wait_ready(struct kvtd *d, unsigned timeout_ms)
{
	uint64_t end = kvt_now_ms() + timeout_ms;
	while (kvt_now_ms() < end) {
		int st;
		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			d->pid = 0;
			d->status = st;
			return -1;
		}
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_un sa;
		if (kvt_sockaddr(&sa, d->sock) == 0 && fd >= 0 &&
		    connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
			close(fd);
			return 0;
		}
		if (fd >= 0)
			close(fd);
		kvt_sleep_ms(10);
	}
	return -1;
}

/* Fresh temp dir; paths filled; nothing started. */
static inline int kvtd_init(struct kvtd *d, const char *tag)
{
	memset(d, 0, sizeof *d);
	char *dir = kvt_mkdtemp(tag);
	if (!dir)
		return -1;
	snprintf(d->dir, sizeof d->dir, "%s", dir);
	free(dir);
	snprintf(d->data, sizeof d->data, "%s/data", d->dir);
	snprintf(d->sock, sizeof d->sock, "%s/kvd.sock", d->dir);
	snprintf(d->log, sizeof d->log, "%s/kvd.log", d->dir);
	return 0;
}

/* Start kvd (paths already set) and wait until it accepts (<= 10 s). */
static inline int kvtd_start_again(struct kvtd *d, const char *const *extra)
{
	if (kvtd_spawn(d, extra) < 0)
		return -1;
	return kvtd_wait_ready(d, 10000);
}

static inline int kvtd_start(struct kvtd *d, const char *tag, const char *const *extra)
{
	if (kvtd_init(d, tag) < 0)
		return -1;
	return kvtd_start_again(d, extra);
}

/* Wait up to timeout_ms for d->pid to exit; 0 with d->status set, or -1. */
static inline int kvtd_wait_exit(struct kvtd *d, unsigned timeout_ms)
{
	uint64_t end = kvt_now_ms() + timeout_ms;
	for (;;) {
		int st;
		pid_t r = waitpid(d->pid, &st, WNOHANG);
		if (r == d->pid) {
			d->status = st;
			d->pid = 0;
			return 0;
		}
		if (r < 0 && errno != EINTR) {
			d->pid = 0;
			return -1;
		}
		if (kvt_now_ms() >= end)
			return -1;
		kvt_sleep_ms(5);
	}
}

/* Stop by pid: SIGTERM, wait up to 10 s, then SIGKILL. Returns the exit
 * code (0..255), 128+signal when killed by one, -1 when not running. */
static inline int kvtd_stop(struct kvtd *d)
{
	if (d->pid <= 0)
		return -1;
	kill(d->pid, SIGTERM);
	if (kvtd_wait_exit(d, 10000) < 0) {
		kill(d->pid, SIGKILL);
		kvtd_wait_exit(d, 5000);
		d->pid = 0;
		return 128 + SIGKILL;
	}
	if (WIFEXITED(d->status))
		return WEXITSTATUS(d->status);
	if (WIFSIGNALED(d->status))
		return 128 + WTERMSIG(d->status);
	return -1;
}

static inline void kvtd_cleanup(struct kvtd *d)
{
	if (d->pid > 0)
		kvtd_stop(d);
	if (d->dir[0])
		kvt_rmrf(d->dir);
	d->dir[0] = '\0';
}

/* Exit code of an exited run (after kvtd_wait_exit), or -1. */
static inline int kvtd_exit_code(const struct kvtd *d)
{
	return WIFEXITED(d->status) ? WEXITSTATUS(d->status) : -1;
}

/* A "Field:  N kB" line of /proc/PID/status in KiB, or -1. */
static inline long kvt_status_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	long kb = -1;
	size_t fl = strlen(field);
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (strncmp(line, field, fl) == 0 && line[fl] == ':' &&
		    sscanf(line + fl + 1, "%ld", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* VmRSS of pid in KiB (all resident pages, file mappings included). */
static inline long kvt_rss_kb(pid_t pid)
{
	return kvt_status_kb(pid, "VmRSS");
}

/* RssAnon of pid in KiB: heap and other private memory, without the page
 * cache of mapped files (segments read through mmap). */
static inline long kvt_anon_kb(pid_t pid)
{
	return kvt_status_kb(pid, "RssAnon");
}

/* The file's first MiB, NUL-terminated, in a static buffer (valid until
 * the next call); NULL when it cannot be opened. */
static inline const char *kvt_file_head(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	static char buf[1 << 20];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

/* Does the file contain needle? */
static inline int kvt_file_contains(const char *path, const char *needle)
{
	const char *buf = kvt_file_head(path);
	return buf && strstr(buf, needle) != NULL;
}

/* How many times needle occurs in the file (first MiB). */
static inline int kvt_file_count(const char *path, const char *needle)
{
	const char *buf = kvt_file_head(path);
	if (!buf)
		return 0;
	int count = 0;
	for (const char *p = buf; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		count++;
	return count;
}

/* Wait up to timeout_ms for needle to appear in d's log. 1 or 0. */
static inline int kvtd_wait_log(const struct kvtd *d, const char *needle, unsigned timeout_ms)
{
	uint64_t end = kvt_now_ms() + timeout_ms;
	for (;;) {
		if (kvt_file_contains(d->log, needle))
			return 1;
		if (kvt_now_ms() >= end)
			return 0;
		kvt_sleep_ms(10);
	}
}

/* Write text to path (replacing it). 0 or -1. */
static inline int kvt_write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	size_t n = strlen(text);
	int rc = fwrite(text, 1, n, f) == n ? 0 : -1;
	if (fclose(f) != 0)
		rc = -1;
	return rc;
}

/* ---- sockets and frames ------------------------------------------------------------ */

/* Blocking connection to path with 10 s send/receive timeouts; -1 on error. */
static inline int kvt_connect(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_un sa;
	if (kvt_sockaddr(&sa, path) < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		close(fd);
		return -1;
	}
	struct timeval tv = { KVT_IO_TIMEOUT_MS / 1000, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	return fd;
}

static inline int kvt_write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n > 0) {
		ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Read exactly n bytes within timeout_ms. 0, or -1 on EOF/error/timeout
 * (*got, if given, says how many bytes did arrive). */
static inline int kvt_read_full(int fd, void *p, size_t n, unsigned timeout_ms, size_t *got)
{
	uint8_t *b = p;
	size_t have = 0;
	uint64_t end = kvt_now_ms() + timeout_ms;
	int rc = 0;
	while (have < n) {
		uint64_t now = kvt_now_ms();
		if (now >= end) {
			rc = -1;
			break;
		}
		struct pollfd pfd = { fd, POLLIN, 0 };
		int pr = poll(&pfd, 1, (int)(end - now));
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0) {
			rc = -1;
			break;
		}
		ssize_t k = recv(fd, b + have, n - have, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			rc = -1;
			break;
		}
		have += (size_t)k;
	}
	if (got)
		*got = have;
	return rc;
}

/* A growable byte buffer of frames, for pipelining. */
struct kvt_buf {
	uint8_t *p;
	size_t len, cap;
};

static inline void kvt_buf_reserve(struct kvt_buf *b, size_t more)
{
	if (b->len + more <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + more)
		cap *= 2;
	b->p = realloc(b->p, cap);
	if (!b->p)
		abort();
	b->cap = cap;
}

static inline void kvt_buf_free(struct kvt_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof *b);
}

static inline void kvt_buf_be32(struct kvt_buf *b, uint32_t v)
{
	kvt_buf_reserve(b, 4);
	b->p[b->len++] = (uint8_t)(v >> 24);
	b->p[b->len++] = (uint8_t)(v >> 16);
	b->p[b->len++] = (uint8_t)(v >> 8);
	b->p[b->len++] = (uint8_t)v;
}

/* Append one request frame: Envelope{id, method, payload = packed msg}. */
static inline void kvt_buf_frame(struct kvt_buf *b, uint64_t id, const char *method,
				 const ProtobufCMessage *msg)
{
	Kv__Envelope env = KV__ENVELOPE__INIT;
	uint8_t *pl = NULL;
	size_t plen = msg ? protobuf_c_message_get_packed_size(msg) : 0;
	if (plen) {
		pl = malloc(plen);
		if (!pl)
			abort();
		protobuf_c_message_pack(msg, pl);
	}
	env.id = id;
	env.method = (char *)method;
	env.payload.data = pl;
	env.payload.len = plen;
	size_t elen = kv__envelope__get_packed_size(&env);
	kvt_buf_be32(b, (uint32_t)elen);
	kvt_buf_reserve(b, elen);
	b->len += kv__envelope__pack(&env, b->p + b->len);
	free(pl);
}

/* Send one request. 0 or -1. */
static inline int kvt_send(int fd, uint64_t id, const char *method, const ProtobufCMessage *msg)
{
	struct kvt_buf b = { 0 };
	kvt_buf_frame(&b, id, method, msg);
	int rc = kvt_write_all(fd, b.p, b.len);
	kvt_buf_free(&b);
	return rc;
}

/* Receive one reply frame within timeout_ms; NULL on EOF, error, timeout or
 * a malformed frame. */
static inline Kv__Envelope *kvt_recv_t(int fd, unsigned timeout_ms)
{
	uint8_t h[4];
	if (kvt_read_full(fd, h, 4, timeout_ms, NULL) < 0)
		return NULL;
	uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
	if (n > 80u * 1024u * 1024u)
		return NULL;
	uint8_t *body = malloc(n ? n : 1);
	if (!body)
		return NULL;
	Kv__Envelope *env = NULL;
	if (kvt_read_full(fd, body, n, timeout_ms, NULL) == 0)
		env = kv__envelope__unpack(NULL, n, body);
	free(body);
	return env;
}

static inline Kv__Envelope *kvt_recv(int fd)
{
	return kvt_recv_t(fd, KVT_IO_TIMEOUT_MS);
}

/* 1 when the peer closed (EOF or reset) within timeout_ms, discarding any
 * bytes still queued before that; 0 when it stayed open. *drained gets the
 * number of bytes discarded. */
static inline int kvt_wait_closed(int fd, unsigned timeout_ms, size_t *drained)
{
	static uint8_t sink[65536];
	uint64_t end = kvt_now_ms() + timeout_ms;
	size_t total = 0;
	int closed = 0;
	for (;;) {
		uint64_t now = kvt_now_ms();
		if (now >= end)
			break;
		struct pollfd pfd = { fd, POLLIN, 0 };
		int pr = poll(&pfd, 1, (int)(end - now));
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0)
			break;
		ssize_t k = recv(fd, sink, sizeof sink, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			closed = 1;
			break;
		}
		total += (size_t)k;
	}
	if (drained)
		*drained = total;
	return closed;
}

/* One call: send, receive the reply (NULL on failure). */
static inline Kv__Envelope *kvt_call(int fd, uint64_t id, const char *method,
				     const ProtobufCMessage *msg)
{
	if (kvt_send(fd, id, method, msg) < 0)
		return NULL;
	return kvt_recv(fd);
}

/* ---- a test case's connections and teardown ---------------------------------------------- */

#define KVT_MAX_CONNS 256

/* The connections a test case opened; its teardown closes them. */
struct kvt_conns {
	int fd[KVT_MAX_CONNS];
	int n;
};

/* kvt_connect(path), remembered in cs; -1 when the connect fails or cs is
 * full. */
static inline int kvt_conns_open(struct kvt_conns *cs, const char *path)
{
	if (cs->n >= KVT_MAX_CONNS)
		return -1;
	int fd = kvt_connect(path);
	if (fd >= 0)
		cs->fd[cs->n++] = fd;
	return fd;
}

/* kvt_conns_open() that fails the (cmocka) test when the connect fails. */
static inline int kvt_conn(struct kvt_conns *cs, const char *path)
{
	int fd = kvt_conns_open(cs, path);
	assert_true(fd >= 0);
	return fd;
}

/* Close fd now; kvt_conns_close_all() will not close it again. */
static inline void kvt_conns_close(struct kvt_conns *cs, int fd)
{
	for (int i = 0; i < cs->n; i++)
		if (cs->fd[i] == fd)
			cs->fd[i] = -1;
	close(fd);
}

static inline void kvt_conns_close_all(struct kvt_conns *cs)
{
	for (int i = 0; i < cs->n; i++)
		if (cs->fd[i] >= 0)
			close(cs->fd[i]);
	cs->n = 0;
}

/* Stop d (if running) and check its run: a clean exit (0) on SIGTERM and
 * no sanitizer report in its log (the log's first 60 lines then go to
 * stderr). 0, or -1 with the reason on stderr. */
static inline int kvtd_stop_and_check(struct kvtd *d)
{
	int rc = 0;
	if (d->pid > 0) {
		int code = kvtd_stop(d);
		if (code != 0) {
			fprintf(stderr, "kvd (log %s) exited with %d on SIGTERM\n", d->log, code);
			rc = -1;
		}
	}
	if (d->dir[0] && (kvt_file_contains(d->log, "Sanitizer") ||
			  kvt_file_contains(d->log, "runtime error:"))) {
		fprintf(stderr, "sanitizer report in %s:\n", d->log);
		FILE *f = fopen(d->log, "r");
		char line[512];
		for (int i = 0; f && i < 60 && fgets(line, sizeof line, f); i++)
			fputs(line, stderr);
		if (f)
			fclose(f);
		rc = -1;
	}
	return rc;
}

/* The end of a teardown: kvtd_stop_and_check() d2 (a second run, possibly
 * never started) then d, and remove both directories. 0 when both runs
 * were clean, else -1. */
static inline int kvtd_teardown(struct kvtd *d, struct kvtd *d2)
{
	int rc = kvtd_stop_and_check(d2);
	if (kvtd_stop_and_check(d) < 0)
		rc = -1;
	kvtd_cleanup(d2);
	kvtd_cleanup(d);
	return rc;
}

/* ---- requests without assertions (tests assert on the results) ------------------------------ */

/* Put k = v; the reply's status, or -1 when no reply came. */
static inline int kvt_put(int fd, uint64_t id, const char *k, const void *v, size_t vl)
{
	Kv__PutRequest rq = KV__PUT_REQUEST__INIT;
	rq.key.data = (uint8_t *)k;
	rq.key.len = strlen(k);
	rq.value.data = (uint8_t *)v;
	rq.value.len = vl;
	Kv__Envelope *e = kvt_call(fd, id, "Put", &rq.base);
	if (!e)
		return -1;
	int st = e->id == id ? (int)e->status_code : -1;
	kv__envelope__free_unpacked(e, NULL);
	return st;
}

/* Get k into out (NUL-terminated, cut to cap-1 bytes); the status, or -1. */
static inline int kvt_get(int fd, uint64_t id, const char *k, char *out, size_t cap)
{
	Kv__GetRequest rq = KV__GET_REQUEST__INIT;
	rq.key.data = (uint8_t *)k;
	rq.key.len = strlen(k);
	Kv__Envelope *e = kvt_call(fd, id, "Get", &rq.base);
	if (!e)
		return -1;
	int st = e->id == id ? (int)e->status_code : -1;
	if (st == 0 && cap > 0) {
		Kv__GetReply *r = kv__get_reply__unpack(NULL, e->payload.len, e->payload.data);
		if (!r) {
			st = -1;
		} else {
			size_t n = r->value.len < cap - 1 ? r->value.len : cap - 1;
			memcpy(out, r->value.data, n);
			out[n] = '\0';
			kv__get_reply__free_unpacked(r, NULL);
		}
	}
	kv__envelope__free_unpacked(e, NULL);
	return st;
}

/* Stats, unpacked (free with kv__stats_reply__free_unpacked), or NULL. */
static inline Kv__StatsReply *kvt_stats(int fd, uint64_t id)
{
	Kv__StatsRequest rq = KV__STATS_REQUEST__INIT;
	Kv__Envelope *e = kvt_call(fd, id, "Stats", &rq.base);
	if (!e)
		return NULL;
	Kv__StatsReply *r = NULL;
	if (e->id == id && e->status_code == 0)
		r = kv__stats_reply__unpack(NULL, e->payload.len, e->payload.data);
	kv__envelope__free_unpacked(e, NULL);
	return r;
}

#endif /* KV_TEST_DAEMON_H */
