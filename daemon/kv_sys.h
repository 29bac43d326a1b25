/*
 * kv_sys.h — the syscall seam of the engine. Every file operation the
 * engine makes on its data directory goes through the kv_sys table, so a
 * test can replace one entry to inject EIO, ENOSPC or a short write at any
 * step of put, rotation or merge (SQLite's aSyscall[] idea). The helpers
 * below add EINTR retry, short-write loops and O_CLOEXEC.
 *
 * Invariant: production code never calls open/write/pwrite/pread/fsync/fdatasync/
 * rename/unlink/ftruncate/close on data files directly, only via kv_sys.
 */
#ifndef KV_SYS_H
#define KV_SYS_H

#include <stddef.h>
#include <sys/types.h>

struct kv_sys_table {
	int (*open)(const char *path, int flags, mode_t mode);
	ssize_t (*write)(int fd, const void *buf, size_t n);
	ssize_t (*pread)(int fd, void *buf, size_t n, off_t off);
	ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
	int (*fsync)(int fd);
	int (*fdatasync)(int fd);
	int (*rename)(const char *from, const char *to);
	int (*unlink)(const char *path);
	int (*ftruncate)(int fd, off_t len);
	int (*close)(int fd);
};

/* The live table; tests may overwrite entries and restore kv_sys_default. */
extern struct kv_sys_table kv_sys;
extern const struct kv_sys_table kv_sys_default;

/* open with O_CLOEXEC, retried on EINTR. Returns fd or -errno. */
int kv_open(const char *path, int flags, mode_t mode);
/* Write all n bytes (loops over short writes). 0 or -errno; a write that
 * makes no progress is -EIO. */
int kv_write_all(int fd, const void *buf, size_t n);
/* Write all n bytes at off (pwrite: the file position does not move).
 * 0 or -errno; a write that makes no progress is -EIO. */
int kv_pwrite_all(int fd, const void *buf, size_t n, off_t off);
/* Read exactly n bytes at off: 0, -errno, or -ENODATA at end of file. */
int kv_pread_all(int fd, void *buf, size_t n, off_t off);
int kv_fsync(int fd);     /* 0 or -errno; EINTR is NOT retried: it is an error */
int kv_fdatasync(int fd); /* same */
int kv_close(int fd);     /* 0 or -errno; fd is closed either way */
int kv_rename(const char *from, const char *to);
int kv_unlink(const char *path);
int kv_ftruncate(int fd, off_t len);
/* fsync the directory dir. 0 or -errno. */
int kv_fsync_dir(const char *dir);

#endif
