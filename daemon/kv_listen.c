/*
 * kv_listen.c — the listening socket (see kv_listen.h).
 *
 * Invariants:
 *  1. A socket file is removed only when a connect() to it was refused (a
 *     stale file left by a crash) or at exit when it is still the file this
 *     process created (same dev and inode): never a live daemon's socket,
 *     never systemd's.
 *  2. There is no window in which our socket file has wider permissions
 *     than asked: bind() runs under umask 0177, then chmod() to the mode.
 */
#include "kv_listen.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "kv_log.h"

int kv_listen_check(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	size_t n = path ? strlen(path) : 0;
	if (n == 0) {
		snprintf(err, errlen, "empty socket path");
		return -EINVAL;
	}
	if (n >= sizeof sa.sun_path) {
		snprintf(err, errlen, "socket path too long (%zu bytes, max %zu): %s", n,
		         sizeof sa.sun_path - 1, path);
		return -ENAMETOOLONG;
	}
	struct stat st;
	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		int e = errno;
		snprintf(err, errlen, "cannot stat socket %s: %s", path, strerror(e));
		return -e;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket", path);
		return -EEXIST;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "socket: %s", strerror(e));
		return -e;
	}
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, n + 1);
	int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
	int e = rc < 0 ? errno : 0;
	close(fd);
	if (rc == 0 || e == EAGAIN || e == EINPROGRESS) {
		snprintf(err, errlen, "another kvd is already serving on %s", path);
		return -EADDRINUSE;
	}
	if (e == ECONNREFUSED)
		return 1; /* stale: nobody listens */
	if (e == ENOENT)
		return 0;
	snprintf(err, errlen, "cannot check socket %s: %s", path, strerror(e));
	return -e;
}

int kv_listen_bind(struct kv_listener *l, const char *path, unsigned mode, char *err, size_t errlen)
{
	memset(l, 0, sizeof *l);
	l->fd = -1;
	int rc = kv_listen_check(path, err, errlen);
	if (rc < 0)
		return rc;
	snprintf(l->path, sizeof l->path, "%s", path);
	if (rc == 1) { /* invariant 1 */
		if (unlink(path) < 0 && errno != ENOENT) {
			int e = errno;
			snprintf(err, errlen, "cannot remove stale socket %s: %s", path,
			         strerror(e));
			return -e;
		}
		kv_log_info("removed stale socket %s", path);
	}
	l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (l->fd < 0) {
		int e = errno;
		snprintf(err, errlen, "socket: %s", strerror(e));
		return -e;
	}
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	mode_t old = umask(0177); /* invariant 2 */
	rc = bind(l->fd, (struct sockaddr *)&sa, sizeof sa);
	int e = errno;
	umask(old);
	if (rc < 0) {
		snprintf(err, errlen, "cannot bind %s: %s", path, strerror(e));
		return -e;
	}
	struct stat st;
	if (stat(path, &st) == 0) {
		l->owned = 1;
		l->dev = st.st_dev;
		l->ino = st.st_ino;
	}
	if (chmod(path, (mode_t)mode) < 0) {
		e = errno;
		snprintf(err, errlen, "cannot chmod %s to %04o: %s", path, mode, strerror(e));
		return -e;
	}
	if (listen(l->fd, SOMAXCONN) < 0) {
		e = errno;
		snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(e));
		return -e;
	}
	return 0;
}

int kv_listen_adopt(struct kv_listener *l, int fd, char *err, size_t errlen)
{
	int v = 0;
	socklen_t len = sizeof v;
	memset(l, 0, sizeof *l);
	l->fd = -1;
	l->inherited = 1;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) < 0) {
		int e = errno;
		snprintf(err, errlen, "inherited fd %d is not a socket: %s", fd, strerror(e));
		return -e;
	}
	if (v != SOCK_STREAM) {
		snprintf(err, errlen, "inherited fd %d is not a stream socket", fd);
		return -EINVAL;
	}
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof sa);
	socklen_t salen = sizeof sa;
	if (getsockname(fd, (struct sockaddr *)&sa, &salen) < 0 || sa.sun_family != AF_UNIX) {
		snprintf(err, errlen, "inherited fd %d is not a Unix socket", fd);
		return -EINVAL;
	}
	v = 0;
	len = sizeof v;
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) < 0 || !v) {
		snprintf(err, errlen, "inherited fd %d is not a listening socket", fd);
		return -EINVAL;
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		int e = errno;
		snprintf(err, errlen, "inherited fd %d: fcntl: %s", fd, strerror(e));
		return -e;
	}
	size_t plen = salen > offsetof(struct sockaddr_un, sun_path)
	                  ? salen - offsetof(struct sockaddr_un, sun_path)
	                  : 0;
	if (plen > 0 && sa.sun_path[0] != '\0') /* a path, not abstract/unnamed */
		snprintf(l->path, sizeof l->path, "%.*s", (int)strnlen(sa.sun_path, plen),
		         sa.sun_path);
	l->fd = fd;
	return 0;
}

void kv_listen_close(struct kv_listener *l)
{
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
}

void kv_listen_remove(struct kv_listener *l)
{
	struct stat st;
	if (l->inherited || !l->owned)
		return;
	if (stat(l->path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
		unlink(l->path);
	l->owned = 0;
}
