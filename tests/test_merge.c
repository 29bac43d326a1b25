/*
 * test_merge.c — the merge worker, driven through the engine API:
 * space reclaimed on disk (talent-plan's compaction test), writes racing a
 * merge, outputs loaded from their hint files, scans during a merge, and
 * the worker killed with SIGKILL at every crash point, and kvd itself
 * killed mid-merge: each time the store must equal a reference model, with
 * no temp files left and no space counted twice. Also the worker's rate
 * limit (kv_merge_params): a limited merge takes at least about data /
 * limit, 0 means unlimited, and a throttled worker still dies with kvd;
 * and its CPU priority (SCHED_IDLE or nice 10).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kv_engine.h"
#include "kv_merge.h"
#include "kv_test_util.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#define NK 1000
#define SEGSZ 65536

static uint64_t fake_now = 1700000000;
static uint64_t fake_clock(void *arg)
{
	(void)arg;
	return fake_now;
}

static char logbuf[16384];
static void capture_log(void *arg, int level, const char *msg)
{
	(void)arg;
	(void)level;
	size_t n = strlen(logbuf);
	if (n + strlen(msg) + 2 < sizeof logbuf)
		snprintf(logbuf + n, sizeof logbuf - n, "%s\n", msg);
}

static kv_engine *open_eng(const char *dir)
{
	struct kv_options o;
	kv_options_init(&o);
	o.max_segment_size = SEGSZ;
	o.clock = fake_clock;
	o.log = capture_log;
	char err[512] = "";
	kv_engine *e = NULL;
	int rc = kv_engine_open(dir, &o, &e, err, sizeof err);
	if (rc)
		fail_msg("open %s: %s (%s)", dir, kv_strerror(rc), err);
	return e;
}

/* Run a merge started with parameters p (NULL: kv_engine_merge_start())
 * to its end (bounded: 30 s). Returns the last step's value. */
static int run_merge_with(kv_engine *e, const struct kv_merge_params *p,
			  void (*during)(kv_engine *, int), int *steps_out)
{
	int rc = p ? kv_engine_merge_start_with(e, p) : kv_engine_merge_start(e, NULL, NULL);
	if (rc == 1)
		return 1;
	assert_int_equal(rc, 0);
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int steps = 0;
	for (;;) {
		rc = kv_engine_merge_step(e, 64);
		if (rc <= 0)
			break;
		if (during)
			during(e, steps);
		steps++;
		struct timespec ts = {0, 200000};
		nanosleep(&ts, NULL);
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec > 30)
			fail_msg("merge did not finish within 30 s");
	}
	if (steps_out)
		*steps_out = steps;
	return rc;
}

static int run_merge(kv_engine *e, void (*during)(kv_engine *, int), int *steps_out)
{
	return run_merge_with(e, NULL, during, steps_out);
}

static double secs_since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* --- reference model ------------------------------------------------------------------- */

struct model {
	char val[NK][64];
	int live[NK];
};
static struct model M;

static void kname(char *k, size_t n, int i)
{
	snprintf(k, n, "key-%04d", i);
}

static void m_put(kv_engine *e, int i, const char *v, uint32_t ttl)
{
	char k[32];
	kname(k, sizeof k, i);
	assert_int_equal(kv_engine_put(e, k, strlen(k), v, strlen(v), ttl), 0);
	snprintf(M.val[i], sizeof M.val[i], "%s", v);
	M.live[i] = 1;
}

static void m_del(kv_engine *e, int i)
{
	char k[32];
	kname(k, sizeof k, i);
	int rc = kv_engine_delete(e, k, strlen(k));
	assert_true(rc == 0 || rc == KV_ENOTFOUND);
	M.live[i] = 0;
}

static void m_check(kv_engine *e, const char *when)
{
	struct kv_buf b = {0};
	char k[32];
	int live = 0;
	for (int i = 0; i < NK; i++) {
		kname(k, sizeof k, i);
		int rc = kv_engine_get(e, k, strlen(k), &b, NULL);
		if (M.live[i]) {
			if (rc != 0 || b.len != strlen(M.val[i]) || memcmp(b.data, M.val[i], b.len))
				fail_msg("%s: %s lost or wrong (rc %d)", when, k, rc);
			live++;
		} else if (rc != KV_ENOTFOUND) {
			fail_msg("%s: %s resurrected", when, k);
		}
	}
	kv_buf_free(&b);
}

static uint64_t dir_bytes(const char *dir, int *tmp_files)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	uint64_t total = 0;
	char path[PATH_MAX];
	*tmp_files = 0;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		long long s = kvt_file_size(path);
		if (s > 0)
			total += (uint64_t)s;
		if (strstr(de->d_name, ".tmp"))
			(*tmp_files)++;
	}
	closedir(d);
	return total;
}

/* Files in dir whose name ends with suffix (".dseg": removed segments
 * not yet reaped, kv_engine.c invariant 8). */
static int count_suffix(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;
	size_t sl = strlen(suffix);
	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		if (l > sl && strcmp(de->d_name + l - sl, suffix) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* Wait (at most 10 s) until the reaper thread has freed every removed
 * file; returns the milliseconds waited. */
static int reap_all(kv_engine *e, const char *dir)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		int ms = (int)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
		if (kv_engine_reap_pending(e) == 0 &&
		    count_suffix(dir, ".dseg") + count_suffix(dir, ".dhint") == 0)
			return ms;
		assert_true(ms < 10000);
		struct timespec nap = {0, 1000000};
		nanosleep(&nap, NULL);
	}
}

/* Mappings of this process whose file lives in dir (its maps line ends
 * "dir/NNNNNNNNNN.seg", ".dseg", "... (deleted)"...). */
static int mappings_in(const char *dir)
{
	FILE *f = fopen("/proc/self/maps", "r");
	assert_non_null(f);
	char line[PATH_MAX + 256];
	int n = 0;
	while (fgets(line, sizeof line, f))
		if (strstr(line, dir))
			n++;
	fclose(f);
	return n;
}

static void value_for(char *v, size_t n, int round, int i)
{
	snprintf(v, n, "r%03d-i%04d-%.40s", round, i, "................................................");
}

/* ~200-byte values for the space test (hint files add 32 B per key) */
static void big_value_for(char *v, size_t n, int round, int i)
{
	snprintf(v, n, "r%03d-i%04d-%0188d", round, i, 0);
}

/* A store with history: overwrites, deletes, a batch, an expired TTL. */
static void build_history(kv_engine *e, int rounds)
{
	char v[64];
	memset(&M, 0, sizeof M);
	for (int r = 0; r < rounds; r++)
		for (int i = 0; i < NK; i++) {
			value_for(v, sizeof v, r, i);
			m_put(e, i, v, 0);
		}
	for (int i = 0; i < NK; i += 7)
		m_del(e, i);
	struct kv_batch_op ops[2] = {{KV_OP_PUT, "key-0001", 8, "batched", 7, 0},
				     {KV_OP_DELETE, "key-0002", 8, NULL, 0, 0}};
	assert_int_equal(kv_engine_batch(e, ops, 2), 2);
	snprintf(M.val[1], sizeof M.val[1], "batched");
	M.live[2] = 0;
	m_put(e, 3, "short-lived", 5); /* expires below */
	fake_now += 10;
	M.live[3] = 0;
}

/* --- tests ---------------------------------------------------------------------------- */

static void test_compaction_settles(void **state)
{
	(void)state;
	char *dir = kvt_mkdtemp("mcompact");
	fake_now = 1700000000;
	kv_engine *e = open_eng(dir);
	char v[256];
	memset(&M, 0, sizeof M);
	int tmp;
	struct kv_buf b = {0};
	for (int round = 0; round < 30; round++) {
		for (int i = 0; i < NK; i++) {
			char k[32];
			big_value_for(v, sizeof v, round, i);
			kname(k, sizeof k, i);
			assert_int_equal(kv_engine_put(e, k, strlen(k), v, strlen(v), 0), 0);
		}
		if (round % 10 == 9) {
			assert_int_equal(run_merge(e, NULL, NULL), 0);
			reap_all(e, dir); /* the reaper thread frees the inputs' space */
			struct kv_stats st;
			kv_engine_stats(e, &st);
			uint64_t on_disk = dir_bytes(dir, &tmp);
			print_message("round %d: live %llu B, whole directory (segments, hints, "
				      "LOCK) %llu B (%.2fx), %zu segments\n",
				      round, (unsigned long long)st.live_bytes,
				      (unsigned long long)on_disk,
				      (double)on_disk / (double)st.live_bytes, st.nsegs);
			assert_true(on_disk <= st.live_bytes * 12 / 10); /* <= 1.2x live */
			assert_int_equal(st.merge.merges, (uint64_t)(round / 10 + 1));
			assert_true(st.merge.last_reclaimed > 0);
			kv_stats_free(&st);
		}
	}
	kv_engine_close(e);
	e = open_eng(dir);
	for (int i = 0; i < NK; i++) { /* all values intact after a restart */
		char k[32];
		kname(k, sizeof k, i);
		big_value_for(v, sizeof v, 29, i);
		assert_int_equal(kv_engine_get(e, k, strlen(k), &b, NULL), 0);
		assert_int_equal(b.len, strlen(v));
		assert_memory_equal(b.data, v, b.len);
	}
	kv_buf_free(&b);
	kv_engine_close(e);
	kvt_rmrf(dir);
	free(dir);
}

static void racing_writes(kv_engine *e, int step)
{
	char v[64];
	for (int j = 0; j < 5; j++) {
		int i = (step * 37 + j * 101) % NK;
		if ((step + j) % 4 == 0) {
			m_del(e, i);
		} else {
			snprintf(v, sizeof v, "during-%d-%d", step, j);
			m_put(e, i, v, 0);
		}
	}
}

static void test_writes_racing_merge(void **state)
{
	(void)state;
	char *dir = kvt_mkdtemp("mrace");
	fake_now = 1700000000;
	kv_engine *e = open_eng(dir);
	build_history(e, 5);
	int steps = 0;
	assert_int_equal(run_merge(e, racing_writes, &steps), 0);
	print_message("merge steps with racing writes: %d\n", steps);
	assert_true(steps > 3);
	m_check(e, "after merge");
	kv_engine_close(e);
	logbuf[0] = 0;
	e = open_eng(dir);
	m_check(e, "after restart");
	/* the merged outputs opened from their hint files: no scan, no hint rewrite */
	assert_null(strstr(logbuf, "unusable"));
	struct kv_stats st;
	kv_engine_stats(e, &st);
	for (size_t i = 0; i < st.nsegs; i++)
		assert_true(st.seg[i].active || st.seg[i].has_hint);
	kv_stats_free(&st);
	kv_engine_close(e);
	kvt_rmrf(dir);
	free(dir);
}

static void test_scan_during_merge(void **state)
{
	(void)state;
	char *dir = kvt_mkdtemp("mscan");
	fake_now = 1700000000;
	kv_engine *e = open_eng(dir);
	build_history(e, 4);
	assert_int_equal(kv_engine_merge_start(e, NULL, NULL), 0);
	/* a scan opened during the merge, read while the swap proceeds */
	kv_iter *it;
	assert_int_equal(kv_iter_open(e, "key-", 4, &it), 0);
	static char seen[NK];
	memset(seen, 0, sizeof seen);
	struct kv_buf val = {0};
	const void *k;
	size_t kl;
	int n = 0, rc, guard = 0;
	while ((rc = kv_iter_next(it, &k, &kl, &val)) == 1) {
		char name[16] = {0};
		memcpy(name, k, kl < 15 ? kl : 15);
		int i = atoi(name + 4);
		if (seen[i]++)
			fail_msg("%s returned twice", name);
		assert_int_equal(val.len, strlen(M.val[i]));
		assert_memory_equal(val.data, M.val[i], val.len);
		n++;
		if (n % 50 == 0 && guard++ < 1000)
			kv_engine_merge_step(e, 100);
	}
	assert_int_equal(rc, 0);
	int live = 0;
	for (int i = 0; i < NK; i++)
		live += M.live[i];
	assert_int_equal(n, live);
	/* inputs are not deleted while the iterator is open */
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 100000 && kv_engine_merge_step(e, 1000) > 0; i++) {
		struct kv_merge_info mi;
		kv_engine_merge_info(e, &mi);
		if (strcmp(mi.state, "deleting") == 0)
			break;
		struct timespec ts = {0, 100000};
		nanosleep(&ts, NULL);
		clock_gettime(CLOCK_MONOTONIC, &t);
		assert_true(t.tv_sec - t0.tv_sec < 30);
	}
	struct kv_merge_info mi;
	kv_engine_merge_info(e, &mi);
	assert_string_equal(mi.state, "deleting"); /* waiting for the iterator */
	kv_iter_close(it);
	for (int i = 0; i < 1000 && kv_engine_merge_step(e, 1000) > 0; i++)
		; /* now the inputs go, a few per step */
	kv_engine_merge_info(e, &mi);
	assert_string_equal(mi.state, "idle");
	assert_int_equal(mi.merges, 1);
	m_check(e, "after scan + merge");
	kv_buf_free(&val);
	kv_engine_close(e);
	kvt_rmrf(dir);
	free(dir);
}

static uint64_t expected_live_bytes(void)
{
	uint64_t total = 0;
	char k[32];
	for (int i = 0; i < NK; i++)
		if (M.live[i]) {
			kname(k, sizeof k, i);
			total += 24 + strlen(k) + strlen(M.val[i]);
		}
	return total;
}

/* Live bytes equal the model's exactly: no space counted twice. Before a
 * completed merge the expired record of build_history() (43 bytes) may
 * still be counted: expired keys are dropped from disk by merge. */
static void check_live_bytes(kv_engine *e, int point, int expired_may_remain)
{
	struct kv_stats st;
	kv_engine_stats(e, &st);
	uint64_t want = expected_live_bytes();
	int ok = st.live_bytes == want || (expired_may_remain && st.live_bytes == want + 43);
	if (!ok)
		fail_msg("point %d: live bytes %llu, expected %llu", point,
			 (unsigned long long)st.live_bytes, (unsigned long long)want);
	kv_stats_free(&st);
}

static void test_worker_killed_at_every_point(void **state)
{
	(void)state;
	char *base = kvt_mkdtemp("mkill");
	char work[PATH_MAX];
	fake_now = 1700000000;
	kv_engine *e = open_eng(base);
	build_history(e, 5);
	kv_engine_close(e);
	struct model saved = M;
	uint64_t saved_now = fake_now;
	snprintf(work, sizeof work, "%s.work", base);
	int point, completed = 0, killed = 0;
	for (point = 1; point <= 200 && !completed; point++) {
		M = saved;
		fake_now = saved_now;
		assert_int_equal(kvt_copy_dir(base, work), 0);
		e = open_eng(work);
		char num[16];
		snprintf(num, sizeof num, "%d", point);
		setenv("KVD_MERGE_CRASH_AT", num, 1);
		int rc = run_merge(e, racing_writes, NULL);
		unsetenv("KVD_MERGE_CRASH_AT");
		struct kv_merge_info mi;
		kv_engine_merge_info(e, &mi);
		if (rc == 0) {
			completed = 1;
		} else {
			assert_true(rc < 0);
			assert_non_null(strstr(mi.last_error, "signal 9"));
			killed++;
		}
		m_check(e, "after the worker died");
		int tmp;
		dir_bytes(work, &tmp);
		assert_int_equal(tmp, 0); /* a failed merge cleans up after itself */
		kv_engine_close(e);
		e = open_eng(work);
		m_check(e, "after restart");
		check_live_bytes(e, point, 1);
		/* and a merge after the crash completes cleanly */
		assert_true(run_merge(e, NULL, NULL) >= 0);
		m_check(e, "after a second merge");
		check_live_bytes(e, point, 0);
		kv_engine_close(e);
	}
	print_message("worker killed at %d distinct points, then a clean run\n", killed);
	assert_true(completed);
	assert_true(killed >= 20);
	kvt_rmrf(work);
	kvt_rmrf(base);
	free(base);
}

/* kvd itself killed mid-merge: a forked process plays kvd and SIGKILLs
 * itself after n merge steps; writes are synced so the model is exact. */
static void test_kvd_killed_mid_merge(void **state)
{
	(void)state;
	char *base = kvt_mkdtemp("mkvd");
	char work[PATH_MAX];
	fake_now = 1700000000;
	kv_engine *e = open_eng(base);
	build_history(e, 5);
	kv_engine_close(e);
	struct model saved = M;
	snprintf(work, sizeof work, "%s.work", base);
	for (int n = 0; n < 12; n++) {
		M = saved;
		assert_int_equal(kvt_copy_dir(base, work), 0);
		int pfd[2];
		assert_int_equal(pipe(pfd), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(pfd[0]);
			kv_engine *ce = open_eng(work);
			if (kv_engine_merge_start(ce, NULL, NULL) != 0)
				_exit(3);
			struct kv_merge_info mi;
			kv_engine_merge_info(ce, &mi);
			int wpid = mi.pid;
			for (int s = 0; s < n * 3; s++) {
				racing_writes(ce, s);
				kv_engine_sync(ce);
				kv_engine_merge_step(ce, 16);
				struct timespec ts = {0, 500000};
				nanosleep(&ts, NULL);
			}
			/* report the model's changes and the worker pid, then die */
			if (write(pfd[1], &wpid, sizeof wpid) != sizeof wpid ||
			    write(pfd[1], &M, sizeof M) != sizeof M)
				_exit(4);
			raise(SIGKILL);
		}
		close(pfd[1]);
		int wpid = 0;
		assert_int_equal(read(pfd[0], &wpid, sizeof wpid), (ssize_t)sizeof wpid);
		size_t got = 0;
		while (got < sizeof M) {
			ssize_t r = read(pfd[0], (char *)&M + got, sizeof M - got);
			assert_true(r > 0);
			got += (size_t)r;
		}
		close(pfd[0]);
		int status;
		waitpid(pid, &status, 0);
		assert_true(WIFSIGNALED(status));
		/* the worker dies with kvd (PR_SET_PDEATHSIG); wait for it, bounded */
		for (int i = 0; i < 500 && kill(wpid, 0) == 0; i++) {
			struct timespec ts = {0, 10000000};
			nanosleep(&ts, NULL);
		}
		assert_int_equal(kill(wpid, 0), -1);
		e = open_eng(work);
		m_check(e, "after kvd was killed mid-merge");
		int tmp;
		dir_bytes(work, &tmp);
		assert_int_equal(tmp, 0);
		check_live_bytes(e, n, 1);
		assert_true(run_merge(e, NULL, NULL) >= 0);
		m_check(e, "after a merge following the crash");
		check_live_bytes(e, n, 0);
		kv_engine_close(e);
		e = open_eng(work);
		m_check(e, "after a second restart");
		kv_engine_close(e);
	}
	kvt_rmrf(work);
	kvt_rmrf(base);
	free(base);
}

/* Threads of this process running at the given nice value. */
static int threads_at_nice(int nice)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	int n = 0;
	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		char path[300], buf[1024];
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%s/stat", de->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		size_t len = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[len] = 0;
		char *p = strrchr(buf, ')'); /* fields after the command name */
		long v = 0;
		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d "
				   "%*d %ld", &v) == 1 && v == nice)
			n++;
	}
	closedir(d);
	return n;
}

/* Merge inputs leave by a rename to .dseg/.dhint, and a thread frees
 * their blocks (kv_engine.c invariant 8). Those files are never read
 * again: a store reopened with one left behind (a stop or crash before the
 * reaper got to it), holding old values of keys whose tombstones the
 * merge dropped, must not bring them back, and must finish its removal. */
static void test_removed_files_never_read(void **state)
{
	(void)state;
	char *dir = kvt_mkdtemp("mreap");
	char saved[PATH_MAX], path[PATH_MAX];
	snprintf(saved, sizeof saved, "%s.first-segment", dir);
	fake_now = 1700000000;
	kv_engine *e = open_eng(dir);
	char v[256];
	memset(&M, 0, sizeof M);
	for (int r = 0; r < 4; r++) /* a few segments of 64 KiB */
		for (int i = 0; i < NK; i++) {
			value_for(v, sizeof v, r, i);
			m_put(e, i, v, 0);
		}
	for (int i = 0; i < 10000 && kv_engine_tick(e); i++) /* hint files of the sealed */
		;
	assert_true(count_suffix(dir, ".hint") >= 1);
	/* keep a copy of segment 1: round-0 values of every key, and more */
	snprintf(path, sizeof path, "%s/0000000001.seg", dir);
	char cmd[3 * PATH_MAX];
	snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, saved);
	assert_int_equal(system(cmd), 0);
	for (int i = 0; i < NK; i += 3)
		m_del(e, i);
	int nseg = count_suffix(dir, ".seg");
	assert_int_equal(run_merge(e, NULL, NULL), 0);
	int ms = reap_all(e, dir); /* every input renamed, then freed */
	assert_int_equal(threads_at_nice(19), 1); /* the reaper yields to the loop */
	/* it unmapped the inputs (and any hint job's mapping): what is left
	 * mapped is the outputs and the active segment */
	assert_true(mappings_in(dir) <= count_suffix(dir, ".seg"));
	print_message("%d segments merged; their files freed %d ms after the merge\n", nseg, ms);
	assert_false(kvt_file_size(path) >= 0); /* segment 1 is gone */
	m_check(e, "after the merge and the reaping");
	kv_engine_close(e);

	/* as if kvd died before the reaper freed segment 1 */
	snprintf(path, sizeof path, "%s/0000000001.dseg", dir);
	snprintf(cmd, sizeof cmd, "mv '%s' '%s'", saved, path);
	assert_int_equal(system(cmd), 0);
	e = open_eng(dir);
	m_check(e, "reopened with a removed segment present");
	struct kv_buf b = {0};
	char k[32];
	kname(k, sizeof k, 0); /* deleted; segment 1 holds a value of it */
	assert_int_equal(kv_engine_get(e, k, strlen(k), &b, NULL), KV_ENOTFOUND);
	reap_all(e, dir);
	assert_false(kvt_file_size(path) >= 0);
	kv_engine_close(e);
	e = open_eng(dir);
	m_check(e, "reopened after the reaping");
	kv_buf_free(&b);
	kv_engine_close(e);
	kvt_rmrf(dir);
	free(dir);
}

static void test_nothing_to_merge(void **state)
{
	(void)state;
	char *dir = kvt_mkdtemp("mnone");
	kv_engine *e = open_eng(dir);
	assert_int_equal(kv_engine_merge_start(e, NULL, NULL), 1);
	kv_engine_put(e, "a", 1, "b", 1, 0);
	assert_int_equal(kv_engine_merge_start(e, NULL, NULL), 1); /* no dead bytes */
	kv_engine_put(e, "a", 1, "c", 1, 0);
	assert_false(kv_engine_merge_wanted(e, 0.4, 1u << 30)); /* the active does not count */
	assert_int_equal(kv_engine_merge_start(e, NULL, NULL), 0);
	assert_int_equal(kv_engine_merge_start(e, NULL, NULL), KV_EBUSY);
	while (kv_engine_merge_step(e, 100) > 0)
		;
	kv_engine_close(e);
	kvt_rmrf(dir);
	free(dir);
}

/* Keys of the largest size move too: their reports (32 + 65,536 bytes)
 * are bigger than the worker's 64 KiB report batches. */
static void test_largest_keys_merge(void **state)
{
	(void)state;
	char *dir = kvt_mkdtemp("mbigkey");
	kv_engine *e = open_eng(dir);
	static char key[3][KV_MAX_KEY];
	for (int k = 0; k < 3; k++) {
		memset(key[k], 'a' + k, sizeof key[k]);
		for (int r = 0; r < 3; r++) { /* two dead versions of each */
			char v[16];
			snprintf(v, sizeof v, "v%d-%d", k, r);
			assert_int_equal(kv_engine_put(e, key[k], KV_MAX_KEY, v, strlen(v), 0), 0);
		}
	}
	assert_int_equal(run_merge(e, NULL, NULL), 0);
	struct kv_merge_info mi;
	kv_engine_merge_info(e, &mi);
	assert_true(mi.last_reclaimed > 0);
	for (int pass = 0; pass < 2; pass++) { /* after the merge, then a restart */
		for (int k = 0; k < 3; k++) {
			struct kv_buf b = {0};
			char want[16];
			snprintf(want, sizeof want, "v%d-2", k);
			assert_int_equal(kv_engine_get(e, key[k], KV_MAX_KEY, &b, NULL), 0);
			assert_int_equal(b.len, strlen(want));
			assert_memory_equal(b.data, want, b.len);
			kv_buf_free(&b);
		}
		kv_engine_close(e);
		e = open_eng(dir);
	}
	kv_engine_close(e);
	kvt_rmrf(dir);
	free(dir);
}

/* kv_engine_merge_backlog() says when reports wait in kvd's buffer (kvd's
 * loop then steps again at once instead of waiting for the pipe), and a
 * step applies no more than its budget: stepped one report at a time, the
 * moves of the first output stay buffered over many steps. */
static void test_backlog_worked_off_in_steps(void **state)
{
	(void)state;
	char *dir = kvt_mkdtemp("mbacklog");
	fake_now = 1700000000;
	kv_engine *e = open_eng(dir);
	char v[256];
	memset(&M, 0, sizeof M);
	for (int r = 0; r < 3; r++)
		for (int i = 0; i < NK; i++) {
			value_for(v, sizeof v, r, i);
			m_put(e, i, v, 0);
		}
	assert_int_equal(kv_engine_merge_backlog(e), 0); /* no merge */
	assert_int_equal(kv_engine_merge_start(e, NULL, NULL), 0);
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rc, steps = 0, backlog_steps = 0;
	while ((rc = kv_engine_merge_step(e, 1)) > 0) {
		steps++;
		backlog_steps += kv_engine_merge_backlog(e);
		struct timespec nap = {0, 100000};
		nanosleep(&nap, NULL);
		clock_gettime(CLOCK_MONOTONIC, &t);
		assert_true(t.tv_sec - t0.tv_sec < 60);
	}
	assert_int_equal(rc, 0);
	print_message("%d steps of one report, %d of them with a backlog left\n", steps,
		      backlog_steps);
	assert_true(steps > NK); /* one move per step at most, NK keys moved */
	assert_true(backlog_steps > NK / 2);
	assert_int_equal(kv_engine_merge_backlog(e), 0);
	m_check(e, "after a merge stepped one report at a time");
	kv_engine_close(e);
	kvt_rmrf(dir);
	free(dir);
}

/* Hint jobs wait while a merge runs: the segment sealed when the merge
 * began is one of its inputs, so a hint file for it would be thrown away
 * (and cost the loop meanwhile). */
static char nohint_path[PATH_MAX];
static void no_input_hint(kv_engine *e, int step)
{
	(void)step;
	kv_engine_tick(e);
	struct stat st;
	assert_int_not_equal(stat(nohint_path, &st), 0);
}

static void test_no_hint_jobs_during_merge(void **state)
{
	(void)state;
	char *dir = kvt_mkdtemp("mnohint");
	kv_engine *e = open_eng(dir);
	char k[32], v[256];
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 200; i++) {
			kname(k, sizeof k, i);
			big_value_for(v, sizeof v, round, i);
			assert_int_equal(kv_engine_put(e, k, strlen(k), v, strlen(v), 0), 0);
		}
	while (kv_engine_tick(e)) /* the hints of segments sealed so far */
		;
	struct kv_stats st;
	assert_int_equal(kv_engine_stats(e, &st), 0);
	uint32_t active = 0;
	for (size_t i = 0; i < st.nsegs; i++)
		if (st.seg[i].id > active)
			active = st.seg[i].id;
	kv_stats_free(&st);
	snprintf(nohint_path, sizeof nohint_path, "%s/%010u.hint", dir, active);
	int steps = 0;
	assert_int_equal(run_merge(e, no_input_hint, &steps), 0);
	print_message("%d merge steps with ticks, no hint job for input segment %u\n", steps,
		      active);
	kv_engine_close(e);
	kvt_rmrf(dir);
	free(dir);
}

/* --- the rate limit ---------------------------------------------------------------- */

#define RL_VLEN 3000 /* NK keys of 3,000 bytes: about 2.9 MiB live */

static void rl_value(char *v, int round, int i)
{
	memset(v, 'a' + (i + round) % 26, RL_VLEN);
	snprintf(v, 24, "r%d-i%04d-", round, i);
}

/* NK keys of RL_VLEN bytes, then 50 of them overwritten (dead bytes, so
 * there is something to merge). Nearly every byte of the segments is
 * live: a merge reads about NK * RL_VLEN bytes. */
static void rl_fill(kv_engine *e)
{
	static char v[RL_VLEN];
	char k[32];
	for (int i = 0; i < NK; i++) {
		rl_value(v, 0, i);
		kname(k, sizeof k, i);
		assert_int_equal(kv_engine_put(e, k, strlen(k), v, RL_VLEN, 0), 0);
	}
	for (int i = 0; i < 50; i++) {
		rl_value(v, 1, i);
		kname(k, sizeof k, i);
		assert_int_equal(kv_engine_put(e, k, strlen(k), v, RL_VLEN, 0), 0);
	}
}

static void rl_check(kv_engine *e, const char *when)
{
	static char v[RL_VLEN];
	struct kv_buf b = {0};
	char k[32];
	for (int i = 0; i < NK; i++) {
		rl_value(v, i < 50 ? 1 : 0, i);
		kname(k, sizeof k, i);
		int rc = kv_engine_get(e, k, strlen(k), &b, NULL);
		if (rc != 0 || b.len != RL_VLEN || memcmp(b.data, v, RL_VLEN) != 0)
			fail_msg("%s: %s lost or wrong (rc %d)", when, k, rc);
	}
	kv_buf_free(&b);
}

/* 1 MiB/s over ~2.9 MiB read: at least ~2.7 s (a 100 ms burst and the
 * last partial chunk go unpaced); asserted >= 2 s, and bounded. */
static void test_rate_limit_slows_merge(void **state)
{
	(void)state;
	char *dir = kvt_mkdtemp("mrate");
	fake_now = 1700000000;
	kv_engine *e = open_eng(dir);
	rl_fill(e);
	struct kv_stats st;
	kv_engine_stats(e, &st);
	double mib = (double)st.disk_bytes / (1 << 20);
	kv_stats_free(&st);
	logbuf[0] = 0;
	struct kv_merge_params p = {1u << 20, NULL, NULL};
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(kv_engine_merge_start_with(e, &p), 0);
	assert_non_null(strstr(logbuf, "rate limit 1 MiB/s"));
	int rc;
	while ((rc = kv_engine_merge_step(e, 1000)) > 0) {
		struct timespec ts = {0, 2000000};
		nanosleep(&ts, NULL);
		if (secs_since(&t0) > 10)
			fail_msg("a 1 MiB/s merge of %.1f MiB took over 10 s", mib);
	}
	double took = secs_since(&t0);
	print_message("1 MiB/s merge of %.2f MiB on disk: %.2f s\n", mib, took);
	assert_int_equal(rc, 0);
	assert_true(mib > 2.5);
	assert_true(took >= 2.0);
	rl_check(e, "after a limited merge");
	kv_engine_close(e);
	e = open_eng(dir);
	rl_check(e, "after a restart");
	kv_engine_close(e);
	kvt_rmrf(dir);
	free(dir);
}

static int init_fd = -1;
static void child_init_mark(void *arg)
{
	if (write(init_fd, arg, 1) != 1)
		_exit(5);
}

/* 0 = unlimited, the same with NULL parameters; child_init still runs. */
static void test_rate_limit_zero_unlimited(void **state)
{
	(void)state;
	char *dir = kvt_mkdtemp("mrate0");
	fake_now = 1700000000;
	kv_engine *e = open_eng(dir);
	rl_fill(e);
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	init_fd = pfd[1];
	logbuf[0] = 0;
	struct kv_merge_params p = {0, child_init_mark, "x"};
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(run_merge_with(e, &p, NULL, NULL), 0);
	print_message("unlimited merge: %.3f s\n", secs_since(&t0));
	assert_non_null(strstr(logbuf, "no rate limit"));
	char ch = 0;
	assert_int_equal(read(pfd[0], &ch, 1), 1);
	assert_int_equal(ch, 'x');
	close(pfd[0]);
	close(pfd[1]);
	init_fd = -1;
	rl_check(e, "after an unlimited merge");
	/* again, with NULL parameters */
	char k[32], v[RL_VLEN];
	for (int i = 0; i < 50; i++) {
		rl_value(v, 1, i);
		kname(k, sizeof k, i);
		assert_int_equal(kv_engine_put(e, k, strlen(k), v, RL_VLEN, 0), 0);
	}
	assert_int_equal(kv_engine_merge_start_with(e, NULL), 0);
	while (kv_engine_merge_step(e, 1000) > 0) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
		if (secs_since(&t0) > 30)
			fail_msg("merge did not finish within 30 s");
	}
	rl_check(e, "after a second unlimited merge");
	struct kv_merge_info mi;
	kv_engine_merge_info(e, &mi);
	assert_int_equal(mi.merges, 2);
	kv_engine_close(e);
	e = open_eng(dir);
	rl_check(e, "after a restart");
	kv_engine_close(e);
	kvt_rmrf(dir);
	free(dir);
}

/* pid has exited: gone, or a zombie its new parent has not reaped yet
 * (kill(pid, 0) still succeeds on a zombie). */
static int pid_dead(int pid)
{
	char path[64], buf[256];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	const char *p = strrchr(buf, ')'); /* "pid (comm) S ..." */
	return !p || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X';
}

/* kvd killed while its worker sleeps in the rate limit: the worker dies
 * with it at once (PR_SET_PDEATHSIG), and nothing is lost. */
static void test_rate_limited_worker_dies_with_kvd(void **state)
{
	(void)state;
	char *dir = kvt_mkdtemp("mratekill");
	fake_now = 1700000000;
	kv_engine *e = open_eng(dir);
	rl_fill(e);
	kv_engine_close(e);
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(pfd[0]);
		kv_engine *ce = open_eng(dir);
		struct kv_merge_params p = {8u << 10, NULL, NULL}; /* 8 KiB/s: asleep */
		if (kv_engine_merge_start_with(ce, &p) != 0)
			_exit(3);
		struct kv_merge_info mi;
		kv_engine_merge_info(ce, &mi);
		int wpid = mi.pid;
		struct timespec ts = {0, 300000000};
		nanosleep(&ts, NULL); /* the worker is in its first sleeps now */
		if (write(pfd[1], &wpid, sizeof wpid) != sizeof wpid)
			_exit(4);
		raise(SIGKILL);
	}
	close(pfd[1]);
	int wpid = 0;
	assert_int_equal(read(pfd[0], &wpid, sizeof wpid), (ssize_t)sizeof wpid);
	close(pfd[0]);
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFSIGNALED(status));
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 500 && !pid_dead(wpid); i++) {
		struct timespec ts = {0, 10000000};
		nanosleep(&ts, NULL);
	}
	assert_true(pid_dead(wpid));
	print_message("throttled worker dead %.3f s after kvd\n", secs_since(&t0));
	e = open_eng(dir);
	rl_check(e, "after kvd was killed during a limited merge");
	int tmp;
	dir_bytes(dir, &tmp);
	assert_int_equal(tmp, 0);
	kv_engine_close(e);
	kvt_rmrf(dir);
	free(dir);
}

/* kvd closing the report pipe wakes a throttled worker, which stops (its
 * ERROR report meets the broken pipe: SIGPIPE) instead of sleeping on
 * until its next report (at 8 KiB/s, over 10 s away). A forked process
 * plays kvd, so the worker is its child. */
static void test_rate_limited_worker_stops_on_broken_pipe(void **state)
{
	(void)state;
	char *dir = kvt_mkdtemp("mratepipe");
	fake_now = 1700000000;
	kv_engine *e = open_eng(dir);
	rl_fill(e);
	kv_engine_close(e);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		kv_engine *ce = open_eng(dir);
		struct kv_merge_params p = {8u << 10, NULL, NULL}; /* 8 KiB/s: asleep */
		if (kv_engine_merge_start_with(ce, &p) != 0)
			_exit(3);
		struct kv_merge_info mi;
		kv_engine_merge_info(ce, &mi);
		struct timespec ts = {0, 300000000};
		nanosleep(&ts, NULL); /* the worker is in its first sleeps now */
		close(kv_engine_merge_fd(ce));
		int st = 0;
		for (int i = 0; i < 200; i++) { /* bounded: 2 s */
			if (waitpid(mi.pid, &st, WNOHANG) == mi.pid)
				_exit(WIFSIGNALED(st) && WTERMSIG(st) == SIGPIPE ? 0 : 5);
			nanosleep(&(struct timespec){0, 10000000}, NULL);
		}
		kill(mi.pid, SIGKILL);
		_exit(6); /* still asleep after 2 s */
	}
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	e = open_eng(dir);
	rl_check(e, "after a merge stopped by a broken pipe");
	int tmp;
	dir_bytes(dir, &tmp);
	assert_int_equal(tmp, 0);
	kv_engine_close(e);
	kvt_rmrf(dir);
	free(dir);
}

/* The worker's CPU priority (kv_merge_params.cpu): SCHED_IDLE, or nice 10
 * above ours under SCHED_OTHER. A throttled worker lives long enough to
 * look at; closing the engine kills it, and nothing is lost. */
static void test_worker_cpu_priority(void **state)
{
	(void)state;
	char *dir = kvt_mkdtemp("mprio");
	fake_now = 1700000000;
	errno = 0;
	int own = getpriority(PRIO_PROCESS, 0);
	assert_int_equal(errno, 0);
	for (int cpu = KV_MERGE_CPU_LOW; cpu <= KV_MERGE_CPU_IDLE; cpu++) {
		kv_engine *e = open_eng(dir);
		rl_fill(e);
		struct kv_merge_params p = {8u << 10, NULL, NULL, cpu}; /* 8 KiB/s: asleep */
		assert_int_equal(kv_engine_merge_start_with(e, &p), 0);
		struct kv_merge_info mi;
		kv_engine_merge_info(e, &mi);
		assert_true(mi.pid > 0);
		int want = cpu == KV_MERGE_CPU_IDLE ? SCHED_IDLE : SCHED_OTHER;
		int want_nice = cpu == KV_MERGE_CPU_IDLE ? own : (own + 10 > 19 ? 19 : own + 10);
		int policy = -1, nice = -100;
		/* the worker sets it right after the fork: bounded wait, 2 s */
		for (int i = 0; i < 200; i++) {
			policy = sched_getscheduler(mi.pid);
			errno = 0;
			nice = getpriority(PRIO_PROCESS, (id_t)mi.pid);
			if (policy == want && nice == want_nice)
				break;
			nanosleep(&(struct timespec){0, 10000000}, NULL);
		}
		print_message("cpu %s: worker policy %d (want %d), nice %d (want %d)\n",
			      cpu == KV_MERGE_CPU_IDLE ? "idle" : "low", policy, want, nice, want_nice);
		assert_int_equal(policy, want);
		assert_int_equal(nice, want_nice);
		kv_engine_close(e); /* kills the worker */
		e = open_eng(dir);
		rl_check(e, "after a merge abandoned at close");
		kv_engine_close(e);
	}
	kvt_rmrf(dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nothing_to_merge),
		cmocka_unit_test(test_no_hint_jobs_during_merge),
		cmocka_unit_test(test_compaction_settles),
		cmocka_unit_test(test_removed_files_never_read),
		cmocka_unit_test(test_largest_keys_merge),
		cmocka_unit_test(test_backlog_worked_off_in_steps),
		cmocka_unit_test(test_writes_racing_merge),
		cmocka_unit_test(test_scan_during_merge),
		cmocka_unit_test(test_worker_killed_at_every_point),
		cmocka_unit_test(test_kvd_killed_mid_merge),
		cmocka_unit_test(test_rate_limit_slows_merge),
		cmocka_unit_test(test_rate_limit_zero_unlimited),
		cmocka_unit_test(test_rate_limited_worker_dies_with_kvd),
		cmocka_unit_test(test_rate_limited_worker_stops_on_broken_pipe),
		cmocka_unit_test(test_worker_cpu_priority),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
