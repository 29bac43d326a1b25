/*
 * test_faults.c — I/O errors injected at every step of put, rotation, hint
 * writing and merge, through the engine's syscall seam (kv_sys).
 *
 * For N = 1, 2, 3 ...: a scenario of synced puts, rotations (tiny
 * segments), background hint files and a merge (with puts racing it) runs
 * with the Nth file-system call made by the engine (open, write, fsync,
 * fdatasync, rename, unlink, ftruncate, pwrite — in kvd or in the merge worker,
 * which inherits the seam) failing with EIO, or ENOSPC for writes. Each
 * time: the failing operation reports an error (never success); after a
 * failure on the active segment the engine is read-only and stays so
 * (reads keep working); a failed merge leaves the store intact; and after
 * a reopen with working I/O every write acknowledged by a successful sync
 * is there with its value, nothing else was invented, and no temp file is
 * left. The loop ends when a run completes with no failure left to inject.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kv_engine.h"
#include "kv_sys.h"
#include "kv_test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/wait.h>
#include <time.h>

#define NK 60

static long fail_at, calls; /* fail the fail_at-th call (0: never) */
static int injected;

static int hit(void)
{
	if (fail_at && ++calls == fail_at) {
		injected = 1;
		return 1;
	}
	return 0;
}

static int f_open(const char *p, int fl, mode_t m)
{
	if ((fl & O_CREAT) && hit()) {
		errno = ENOSPC;
		return -1;
	}
	return kv_sys_default.open(p, fl, m);
}
static ssize_t f_write(int fd, const void *b, size_t n)
{
	if (hit()) {
		errno = ENOSPC;
		return -1;
	}
	return kv_sys_default.write(fd, b, n);
}
static ssize_t f_pwrite(int fd, const void *b, size_t n, off_t off)
{
	if (hit()) {
		errno = ENOSPC;
		return -1;
	}
	return kv_sys_default.pwrite(fd, b, n, off);
}
static int f_fsync(int fd)
{
	if (hit()) {
		errno = EIO;
		return -1;
	}
	return kv_sys_default.fsync(fd);
}
static int f_fdatasync(int fd)
{
	if (hit()) {
		errno = EIO;
		return -1;
	}
	return kv_sys_default.fdatasync(fd);
}
static int f_rename(const char *a, const char *b)
{
	if (hit()) {
		errno = EIO;
		return -1;
	}
	return kv_sys_default.rename(a, b);
}
static int f_unlink(const char *p)
{
	if (hit()) {
		errno = EIO;
		return -1;
	}
	return kv_sys_default.unlink(p);
}
static int f_ftruncate(int fd, off_t l)
{
	if (hit()) {
		errno = EIO;
		return -1;
	}
	return kv_sys_default.ftruncate(fd, l);
}

static void arm(long n)
{
	fail_at = n;
	calls = 0;
	injected = 0;
	kv_sys.open = f_open;
	kv_sys.write = f_write;
	kv_sys.pwrite = f_pwrite;
	kv_sys.fsync = f_fsync;
	kv_sys.fdatasync = f_fdatasync;
	kv_sys.rename = f_rename;
	kv_sys.unlink = f_unlink;
	kv_sys.ftruncate = f_ftruncate;
}

static void disarm(void)
{
	kv_sys = kv_sys_default;
	fail_at = 0;
}

static kv_engine *open_eng(const char *dir)
{
	struct kv_options o;
	kv_options_init(&o);
	o.max_segment_size = 8192;
	char err[512] = "";
	kv_engine *e = NULL;
	int rc = kv_engine_open(dir, &o, &e, err, sizeof err);
	if (rc)
		fail_msg("open %s: %s (%s)", dir, kv_strerror(rc), err);
	return e;
}

/* model: the value each key had at the last successful sync, and every
 * value ever written to it (to catch invented ones) */
static int durable[NK], latest[NK];

static void kname(char *k, size_t n, int i)
{
	snprintf(k, n, "fault-key-%02d", i);
}

static int vlen_for(int v)
{
	return 40 + v % 50;
}

static void vname(char *b, size_t n, int i, int v)
{
	snprintf(b, n, "k%02d-v%05d-%.*s", i, v, vlen_for(v), "================================="
							    "=================================");
}

/* Run the scenario; returns after the first failure the engine reports
 * on a write path, or at the end. */
static void scenario(kv_engine *e, int *write_failed, int *merge_failed)
{
	char k[32], v[160];
	int ver = 1;
	int pending[NK];
	memcpy(pending, latest, sizeof pending);
	for (int round = 0; round < 6; round++) {
		for (int j = 0; j < 25; j++) {
			int i = (round * 25 + j * 7) % NK;
			kname(k, sizeof k, i);
			vname(v, sizeof v, i, ver);
			int rc = kv_engine_put(e, k, strlen(k), v, strlen(v), 0);
			if (rc) {
				assert_true(kv_engine_readonly(e) || rc == -ENOSPC || rc == -EIO);
				*write_failed = 1;
				return;
			}
			pending[i] = ver++;
			if (j % 5 == 4) {
				rc = kv_engine_sync(e);
				if (rc) {
					*write_failed = 1;
					assert_true(kv_engine_readonly(e));
					return;
				}
				memcpy(durable, pending, sizeof durable);
			}
			kv_engine_tick(e); /* hint files in slices */
		}
		if (round == 3) { /* a merge, with puts racing it */
			int rc = kv_engine_merge_start(e, NULL, NULL);
			if (rc < 0) {
				*write_failed = kv_engine_readonly(e);
				*merge_failed = !*write_failed;
				if (*write_failed)
					return;
			}
			for (int s = 0; rc == 0 && s < 20000; s++) {
				int st = kv_engine_merge_step(e, 64);
				if (st == 0)
					break;
				if (st < 0) {
					*merge_failed = 1;
					break;
				}
				struct timespec ts = {0, 100000};
				nanosleep(&ts, NULL);
			}
		}
	}
	memcpy(latest, pending, sizeof latest);
}

static int tmp_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;
	while ((de = readdir(d)) != NULL)
		n += strstr(de->d_name, ".tmp") != NULL;
	closedir(d);
	return n;
}

static void check_store(kv_engine *e, long n)
{
	struct kv_buf b = {0};
	char k[32], v[160];
	for (int i = 0; i < NK; i++) {
		kname(k, sizeof k, i);
		int rc = kv_engine_get(e, k, strlen(k), &b, NULL);
		if (durable[i] == 0) {
			/* never synced: absent, or a value that was written to it */
			if (rc == 0 && (b.len < 10 || memcmp(b.data + 1, k + 10, 2) != 0))
				fail_msg("N=%ld: %s holds a value never written to it", n, k);
			continue;
		}
		if (rc != 0)
			fail_msg("N=%ld: %s lost (synced version %d): %s", n, k, durable[i],
				 kv_strerror(rc));
		int got = 0;
		if (b.len < 10 || sscanf(b.data + 5, "%5d", &got) != 1 || got < durable[i])
			fail_msg("N=%ld: %s went back to version %d (synced %d)", n, k, got, durable[i]);
		vname(v, sizeof v, i, got);
		if (b.len != strlen(v) || memcmp(b.data, v, b.len) != 0)
			fail_msg("N=%ld: %s holds a corrupt value", n, k);
	}
	kv_buf_free(&b);
}

static void test_fault_every_step(void **state)
{
	(void)state;
	int sites = 0, merge_fails = 0, write_fails = 0;
	long n;
	for (n = 1; n < 2000; n++) {
		char *dir = kvt_mkdtemp("faults");
		memset(durable, 0, sizeof durable);
		memset(latest, 0, sizeof latest);
		kv_engine *e = open_eng(dir);
		arm(n);
		int wf = 0, mf = 0;
		scenario(e, &wf, &mf);
		int hit_one = injected;
		if (wf) { /* fail-stop: stays read-only, reads still work */
			assert_true(kv_engine_readonly(e));
			assert_int_equal(kv_engine_put(e, "x", 1, "y", 1, 0), KV_EREADONLY);
			assert_int_equal(kv_engine_sync(e), KV_EREADONLY);
			struct kv_buf b = {0};
			kv_engine_get(e, "fault-key-00", 12, &b, NULL);
			kv_buf_free(&b);
		}
		/* wait for a merge worker the fault may have left running */
		for (int s = 0; s < 20000 && kv_engine_merge_step(e, 1000) > 0; s++) {
			struct timespec ts = {0, 100000};
			nanosleep(&ts, NULL);
		}
		disarm();
		kv_engine_close(e);
		e = open_eng(dir); /* recovery with working I/O */
		check_store(e, n);
		assert_int_equal(tmp_files(dir), 0);
		kv_engine_close(e);
		kvt_rmrf(dir);
		free(dir);
		sites += hit_one;
		write_fails += wf;
		merge_fails += mf;
		if (!hit_one)
			break; /* the scenario ran out of calls to fail */
	}
	print_message("faults injected at %d distinct calls (%d turned the engine read-only, "
		      "%d failed a merge); run %ld completed without one\n",
		      sites, write_fails, merge_fails, n);
	assert_true(sites >= 50);
	assert_true(write_fails > 0 && merge_fails > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fault_every_step),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
