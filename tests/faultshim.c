/*
 * faultshim.c — an LD_PRELOAD shim for tests/test_server.c: the disk dies.
 * With KVT_FAIL_FDATASYNC_AFTER=N in the environment, the first N calls
 * of fdatasync() in the process work and every later one fails with EIO
 * without syncing anything (counted over all threads, so the sync thread
 * of kvd's group commit is covered). Without the variable it does nothing.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

static atomic_long calls;

int fdatasync(int fd)
{
	static int (*real)(int);
	const char *after = getenv("KVT_FAIL_FDATASYNC_AFTER");
	if (after && atomic_fetch_add(&calls, 1) >= atol(after)) {
		errno = EIO;
		return -1;
	}
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	return real(fd);
}
