/*
 * kv_test_util.h — small helpers shared by the cmocka tests: temporary
 * directories that are removed afterwards, and file helpers.
 * Header-only (static functions) so every test binary stays one .c file.
 */
#ifndef KV_TEST_UTIL_H
#define KV_TEST_UTIL_H

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int kvt_rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

/* Remove dir and everything below it. */
static inline void kvt_rmrf(const char *dir)
{
	nftw(dir, kvt_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Create a fresh temp dir; returns a malloc'ed path (caller frees after kvt_rmrf). */
static inline char *kvt_mkdtemp(const char *tag)
{
	char tmpl[256];
	snprintf(tmpl, sizeof tmpl, "/tmp/kvd-test-%s.XXXXXX", tag);
	char *d = mkdtemp(tmpl);
	return d ? strdup(d) : NULL;
}

/* Size of a file, -1 if it does not exist. */
static inline long long kvt_file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* Replace `to` with a copy of directory `from` (cp -a). 0 or -1. */
static inline int kvt_copy_dir(const char *from, const char *to)
{
	char cmd[2 * 4096 + 32];
	kvt_rmrf(to);
	snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", from, to);
	return system(cmd) == 0 ? 0 : -1;
}

#endif
