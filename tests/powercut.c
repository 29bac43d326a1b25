/*
 * powercut.c — an LD_PRELOAD shim for the power-cut simulation of
 * tests/torture.c (-p). It journals, for files under $PC_ROOT, every
 * write (offset, length), truncate, fsync/fdatasync, create, rename and
 * unlink, and every fsync of the directory itself, one line per event on
 * the O_APPEND file $PC_JOURNAL, before the call returns. Unlinked files
 * are first hard-linked into $PC_BACKUP so the harness can bring them back
 * (a name removed since the last directory fsync may reappear after a
 * power cut). After SIGKILL the harness replays the journal and discards a
 * random part of whatever was not made durable (torture.c: powercut()).
 *
 * Journal lines: "C path" create, "W path off len", "T path len",
 * "S path" file synced, "D" directory synced, "R from to", "U path backup".
 * Only the calls kvd's engine makes are covered (open, write, pwrite,
 * ftruncate, fsync, fdatasync, rename, unlink, close), from any thread:
 * each descriptor is used by one thread, a journal line is one write()
 * to an O_APPEND file, and path buffers are per thread.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAXFD 4096

static char *fdpath[MAXFD];
static int fdisdir[MAXFD];
static int jfd = -1;
static char root[PATH_MAX], backup[PATH_MAX / 2];
static size_t rootlen;
static unsigned long nbak;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static int (*real_open)(const char *, int, ...);
static int (*real_close)(int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_ftruncate)(int, off_t);
static int (*real_rename)(const char *, const char *);
static int (*real_unlink)(const char *);

__attribute__((constructor)) static void init(void)
{
	real_write = dlsym(RTLD_NEXT, "write");
	real_pwrite = dlsym(RTLD_NEXT, "pwrite");
	real_open = dlsym(RTLD_NEXT, "open");
	real_close = dlsym(RTLD_NEXT, "close");
	real_fsync = dlsym(RTLD_NEXT, "fsync");
	real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
	real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
	real_rename = dlsym(RTLD_NEXT, "rename");
	real_unlink = dlsym(RTLD_NEXT, "unlink");
	const char *j = getenv("PC_JOURNAL"), *r = getenv("PC_ROOT"), *b = getenv("PC_BACKUP");
	if (!j || !r || !b)
		return;
	if (!realpath(r, root))
		snprintf(root, sizeof root, "%s", r);
	rootlen = strlen(root);
	snprintf(backup, sizeof backup, "%s", b);
	jfd = real_open(j, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

static void jlog(const char *fmt, ...)
{
	char line[PATH_MAX * 2 + 64];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (jfd >= 0 && n > 0 && (size_t)n < sizeof line)
		real_write(jfd, line, (size_t)n);
}

/* The absolute path of p when it lies under root, else NULL (a buffer of
 * the calling thread's own: kvd's sync thread opens segment files while
 * the event loop opens others; one shared buffer let one thread's file be
 * journalled under the other's name, so its fdatasyncs went unseen and the
 * harness reported acknowledged writes lost). */
static const char *tracked(const char *p)
{
	static __thread char abs[PATH_MAX * 2 + 2];
	if (jfd < 0 || !p)
		return NULL;
	if (p[0] == '/') {
		snprintf(abs, sizeof abs, "%s", p);
	} else {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof cwd))
			return NULL;
		snprintf(abs, sizeof abs, "%s/%s", cwd, p);
	}
	/* normalise "//" and "/./" enough for kvd's own paths */
	char *q;
	while ((q = strstr(abs, "/./")) != NULL)
		memmove(q, q + 2, strlen(q + 2) + 1);
	while ((q = strstr(abs, "//")) != NULL)
		memmove(q, q + 1, strlen(q + 1) + 1);
	size_t n = strlen(abs);
	if (n > 1 && abs[n - 1] == '/')
		abs[n - 1] = 0;
	if (strncmp(abs, root, rootlen) != 0 || (abs[rootlen] != '/' && abs[rootlen] != 0))
		return NULL;
	return abs;
}

int open(const char *path, int flags, ...)
{
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, int);
		va_end(ap);
	}
	const char *t = tracked(path);
	int existed = 1;
	if (t && (flags & O_CREAT)) {
		struct stat st;
		existed = stat(path, &st) == 0;
	}
	int fd = real_open(path, flags, mode);
	if (fd >= 0 && fd < MAXFD && t) {
		free(fdpath[fd]);
		fdpath[fd] = strdup(t);
		fdisdir[fd] = strcmp(t, root) == 0;
		if (!existed)
			jlog("C %s\n", t);
	}
	return fd;
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int close(int fd)
{
	if (fd >= 0 && fd < MAXFD) {
		free(fdpath[fd]);
		fdpath[fd] = NULL;
	}
	return real_close(fd);
}

ssize_t write(int fd, const void *buf, size_t n)
{
	if (fd >= 0 && fd < MAXFD && fdpath[fd] && !fdisdir[fd]) {
		off_t off = lseek(fd, 0, SEEK_CUR);
		ssize_t w = real_write(fd, buf, n);
		if (w > 0)
			jlog("W %s %lld %zd\n", fdpath[fd], (long long)off, w);
		return w;
	}
	return real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	ssize_t w = real_pwrite(fd, buf, n, off);
	if (w > 0 && fd >= 0 && fd < MAXFD && fdpath[fd])
		jlog("W %s %lld %zd\n", fdpath[fd], (long long)off, w);
	return w;
}

pid_t fork(void)
{
	pid_t (*real_fork)(void) = dlsym(RTLD_NEXT, "fork");
	pid_t pid = real_fork();
	if (pid == 0)
		jfd = -1; /* the merge worker: its durable steps are fsync + rename,
			     journalled below only for the parent; see torture.c */
	return pid;
}

int ftruncate(int fd, off_t len)
{
	int rc = real_ftruncate(fd, len);
	if (rc == 0 && fd >= 0 && fd < MAXFD && fdpath[fd])
		jlog("T %s %lld\n", fdpath[fd], (long long)len);
	return rc;
}

static int synced(int fd, int rc)
{
	if (rc == 0 && fd >= 0 && fd < MAXFD && fdpath[fd]) {
		if (fdisdir[fd])
			jlog("D\n");
		else
			jlog("S %s\n", fdpath[fd]);
	}
	return rc;
}

int fsync(int fd)
{
	return synced(fd, real_fsync(fd));
}

int fdatasync(int fd)
{
	return synced(fd, real_fdatasync(fd));
}

int rename(const char *from, const char *to)
{
	char f[PATH_MAX];
	const char *t = tracked(from);
	if (t)
		snprintf(f, sizeof f, "%s", t);
	int rc = real_rename(from, to);
	const char *tt = tracked(to);
	if (rc == 0 && t && tt)
		jlog("R %s %s\n", f, tt);
	return rc;
}

int unlink(const char *path)
{
	const char *t = tracked(path);
	char bak[PATH_MAX + 64];
	if (t) {
		snprintf(bak, sizeof bak, "%s/%lu-%d", backup, nbak++, (int)getpid());
		if (link(path, bak) != 0)
			bak[0] = 0;
	}
	int rc = real_unlink(path);
	if (rc == 0 && t)
		jlog("U %s %s\n", t, bak[0] ? bak : "-");
	return rc;
}
