/*
 * kv_sys.c — the syscall seam (see kv_sys.h) and its EINTR-safe wrappers.
 */
#include "kv_sys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

static int sys_open(const char *path, int flags, mode_t mode)
{
	return open(path, flags, mode);
}

const struct kv_sys_table kv_sys_default = {
	.open = sys_open,
	.write = write,
	.pread = pread,
	.pwrite = pwrite,
	.fsync = fsync,
	.fdatasync = fdatasync,
	.rename = rename,
	.unlink = unlink,
	.ftruncate = ftruncate,
	.close = close,
};

struct kv_sys_table kv_sys = {
	.open = sys_open,
	.write = write,
	.pread = pread,
	.pwrite = pwrite,
	.fsync = fsync,
	.fdatasync = fdatasync,
	.rename = rename,
	.unlink = unlink,
	.ftruncate = ftruncate,
	.close = close,
};

int kv_open(const char *path, int flags, mode_t mode)
{
	int fd;
	do
		fd = kv_sys.open(path, flags | O_CLOEXEC, mode);
	while (fd < 0 && errno == EINTR);
	return fd < 0 ? -errno : fd;
}

int kv_write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n > 0) {
		ssize_t w = kv_sys.write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int kv_pwrite_all(int fd, const void *buf, size_t n, off_t off)
{
	const char *p = buf;
	while (n > 0) {
		ssize_t w = kv_sys.pwrite(fd, p, n, off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		p += w;
		n -= (size_t)w;
		off += w;
	}
	return 0;
}

int kv_pread_all(int fd, void *buf, size_t n, off_t off)
{
	char *p = buf;
	while (n > 0) {
		ssize_t r = kv_sys.pread(fd, p, n, off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -ENODATA;
		p += r;
		n -= (size_t)r;
		off += r;
	}
	return 0;
}

int kv_fsync(int fd)
{
	return kv_sys.fsync(fd) < 0 ? -errno : 0;
}

int kv_fdatasync(int fd)
{
	return kv_sys.fdatasync(fd) < 0 ? -errno : 0;
}

int kv_close(int fd)
{
	/* Linux closes the fd even when close() fails; never retry. */
	return kv_sys.close(fd) < 0 && errno != EINTR ? -errno : 0;
}

int kv_rename(const char *from, const char *to)
{
	return kv_sys.rename(from, to) < 0 ? -errno : 0;
}

int kv_unlink(const char *path)
{
	return kv_sys.unlink(path) < 0 ? -errno : 0;
}

int kv_ftruncate(int fd, off_t len)
{
	int rc;
	do
		rc = kv_sys.ftruncate(fd, len);
	while (rc < 0 && errno == EINTR);
	return rc < 0 ? -errno : 0;
}

int kv_fsync_dir(const char *dir)
{
	int fd = kv_open(dir, O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return fd;
	int rc = kv_fsync(fd);
	int rc2 = kv_close(fd);
	return rc ? rc : rc2;
}
