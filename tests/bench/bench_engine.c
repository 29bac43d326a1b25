/*
 * bench_engine.c — `make bench-engine`: the same workload through kvd's
 * engine and through LevelDB, in one run, with ratios.
 *
 *   fill   N random 16 B keys with 100 B values (no sync; one final sync)
 *   read   N random existing keys
 *   sync   S puts, each synced (fdatasync / leveldb sync=true)
 *   reopen N keys with hint files, and without (hints deleted)
 *   keydir bytes per key at N and at BIG keys of 16 B (stats and RSS delta)
 *
 * Usage: bench_engine [-n N] [-s S] [-b BIG] [-d DIR]
 * Defaults: N = 1,000,000, S = 2,000, BIG = 10,000,000, DIR = a temp dir
 * under /tmp. Nothing here is a test: figures are printed, not asserted.
 */
#include "kv_engine.h"
#include "kv_keydir.h"

#include <leveldb/c.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* key i: 16 pseudo-random bytes derived from i */
static void make_key(uint64_t i, char key[16])
{
	uint64_t s = i * 2654435761ull + 1, a = splitmix(&s), b = splitmix(&s);
	memcpy(key, &a, 8);
	memcpy(key + 8, &b, 8);
}

/* Anonymous resident memory (RssAnon): the process's own memory, without
 * the page cache of mapped segment files. */
static long rss_kb(void)
{
	char line[256];
	long kb = 0;
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "RssAnon: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void rmrf(const char *d)
{
	char cmd[1400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", d);
}

static void remove_hints(const char *dir)
{
	char cmd[1400];
	snprintf(cmd, sizeof cmd, "rm -f '%s'/*.hint", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove hints\n");
}

static void die(const char *what, int rc, const char *err)
{
	fprintf(stderr, "bench_engine: %s: %s %s\n", what, kv_strerror(rc), err ? err : "");
	exit(1);
}

static kv_engine *kv_open_dir(const char *dir, double *secs)
{
	kv_engine *e;
	char err[512] = "";
	double t = now();
	int rc = kv_engine_open(dir, NULL, &e, err, sizeof err);
	if (rc)
		die("open", rc, err);
	if (secs)
		*secs = now() - t;
	return e;
}

int main(int argc, char **argv)
{
	long n = 1000000, nsync = 2000, big = 10000000;
	char base[512] = "";
	int opt;
	while ((opt = getopt(argc, argv, "n:s:b:d:")) != -1) {
		switch (opt) {
		case 'n': n = atol(optarg); break;
		case 's': nsync = atol(optarg); break;
		case 'b': big = atol(optarg); break;
		case 'd': snprintf(base, sizeof base, "%s", optarg); break;
		default:
			fprintf(stderr, "usage: %s [-n N] [-s SYNCED] [-b BIG] [-d DIR]\n", argv[0]);
			return 2;
		}
	}
	if (!base[0]) {
		snprintf(base, sizeof base, "/tmp/kvd-bench.XXXXXX");
		if (!mkdtemp(base)) {
			perror("mkdtemp");
			return 1;
		}
	}
	char kdir[600], ldir[600];
	snprintf(kdir, sizeof kdir, "%s/kvd", base);
	snprintf(ldir, sizeof ldir, "%s/leveldb", base);
	char key[16], val[100];
	memset(val, 'v', sizeof val);
	struct kv_buf b = {0};
	printf("bench-engine: %ld keys of 16 B, values of 100 B, %ld synced puts; data in %s\n", n,
	       nsync, base);

	/* --- kvd engine --- */
	kv_engine *e = kv_open_dir(kdir, NULL);
	double t = now();
	for (long i = 0; i < n; i++) {
		make_key((uint64_t)i, key);
		int rc = kv_engine_put(e, key, 16, val, sizeof val, 0);
		if (rc)
			die("put", rc, NULL);
	}
	kv_engine_sync(e);
	double kv_fill = now() - t;
	uint64_t rs = 42;
	t = now();
	for (long i = 0; i < n; i++) {
		make_key(splitmix(&rs) % (uint64_t)n, key);
		int rc = kv_engine_get(e, key, 16, &b, NULL);
		if (rc)
			die("get", rc, NULL);
	}
	double kv_read = now() - t;
	t = now();
	for (long i = 0; i < nsync; i++) {
		make_key((uint64_t)(n + i), key);
		kv_engine_put(e, key, 16, val, sizeof val, 0);
		int rc = kv_engine_sync(e);
		if (rc)
			die("sync", rc, NULL);
	}
	double kv_sync = now() - t;
	struct kv_stats st;
	kv_engine_stats(e, &st);
	double kv_bpk = st.keydir_bytes_per_key;
	kv_stats_free(&st);
	kv_engine_close(e);
	/* the first reopen writes the hint file of the segment that was active */
	e = kv_open_dir(kdir, NULL);
	kv_engine_close(e);
	double kv_reopen_hint, kv_reopen_scan;
	e = kv_open_dir(kdir, &kv_reopen_hint);
	kv_engine_close(e);
	remove_hints(kdir);
	e = kv_open_dir(kdir, &kv_reopen_scan);
	kv_engine_close(e);

	/* --- LevelDB --- */
	char *lerr = NULL;
	leveldb_options_t *lo = leveldb_options_create();
	leveldb_options_set_create_if_missing(lo, 1);
	leveldb_t *db = leveldb_open(lo, ldir, &lerr);
	if (lerr) {
		fprintf(stderr, "leveldb_open: %s\n", lerr);
		return 1;
	}
	leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
	leveldb_writeoptions_t *wos = leveldb_writeoptions_create();
	leveldb_writeoptions_set_sync(wos, 1);
	leveldb_readoptions_t *ro = leveldb_readoptions_create();
	t = now();
	for (long i = 0; i < n; i++) {
		make_key((uint64_t)i, key);
		leveldb_put(db, wo, key, 16, val, sizeof val, &lerr);
	}
	leveldb_put(db, wos, "sync", 4, "x", 1, &lerr);
	double lv_fill = now() - t;
	rs = 42;
	t = now();
	for (long i = 0; i < n; i++) {
		size_t vl;
		make_key(splitmix(&rs) % (uint64_t)n, key);
		char *v = leveldb_get(db, ro, key, 16, &vl, &lerr);
		if (!v) {
			fprintf(stderr, "leveldb_get: missing key\n");
			return 1;
		}
		leveldb_free(v);
	}
	double lv_read = now() - t;
	t = now();
	for (long i = 0; i < nsync; i++) {
		make_key((uint64_t)(n + i), key);
		leveldb_put(db, wos, key, 16, val, sizeof val, &lerr);
	}
	double lv_sync = now() - t;
	leveldb_close(db);
	t = now();
	db = leveldb_open(lo, ldir, &lerr);
	double lv_reopen = now() - t;
	leveldb_close(db);

	/* --- keydir memory at BIG keys (values empty to keep the disk small) --- */
	double big_bpk = 0, big_rss_bpk = 0;
	if (big > 0) {
		char bdir[600];
		snprintf(bdir, sizeof bdir, "%s/big", base);
		long rss0 = rss_kb();
		e = kv_open_dir(bdir, NULL);
		for (long i = 0; i < big; i++) {
			make_key((uint64_t)i, key);
			int rc = kv_engine_put(e, key, 16, "", 0, 0);
			if (rc)
				die("put", rc, NULL);
		}
		long rss1 = rss_kb();
		kv_engine_stats(e, &st);
		big_bpk = st.keydir_bytes_per_key;
		big_rss_bpk = (double)(rss1 - rss0) * 1024.0 / (double)big;
		kv_stats_free(&st);
		kv_engine_close(e);
	}

	/* --- keydir growth: the slowest single insert while growing to BIG keys --- */
	double worst_us = 0;
	long worst_at = 0;
	if (big > 0) {
		kv_keydir *kd = kv_keydir_new();
		for (long i = 0; i < big; i++) {
			struct kv_loc loc = {1, (uint32_t)i, 40, 0};
			make_key((uint64_t)i, key);
			double t1 = now();
			kv_keydir_put(kd, key, 16, &loc, NULL);
			double d = (now() - t1) * 1e6;
			if (d > worst_us) {
				worst_us = d;
				worst_at = i;
			}
		}
		kv_keydir_free(kd);
	}

	printf("\n%-34s %14s %14s %8s\n", "workload", "kvd engine", "LevelDB", "ratio");
	printf("%-34s %12.0f/s %12.0f/s %7.2fx\n", "fill (puts/s)", n / kv_fill, n / lv_fill,
	       lv_fill / kv_fill);
	printf("%-34s %12.0f/s %12.0f/s %7.2fx\n", "random read (gets/s)", n / kv_read, n / lv_read,
	       lv_read / kv_read);
	printf("%-34s %12.0f/s %12.0f/s %7.2fx\n", "synced puts (puts/s)", nsync / kv_sync,
	       nsync / lv_sync, lv_sync / kv_sync);
	printf("%-34s %12.3f s %12.3f s\n", "reopen with hint files", kv_reopen_hint, lv_reopen);
	printf("%-34s %12.3f s\n", "reopen without hint files (scan)", kv_reopen_scan);
	printf("%-34s %10.1f B/key (16 B key: %.1f B + key)\n", "keydir at N keys", kv_bpk,
	       kv_bpk - 16);
	if (big > 0)
		printf("%-34s %10.1f B/key (%.1f B + key); RSS delta %.1f B/key\n",
		       "keydir at BIG keys", big_bpk, big_bpk - 16, big_rss_bpk);
	if (big > 0)
		printf("%-34s (RSS delta = anonymous memory growth of the process while loading)\n", "");
	if (big > 0)
		printf("%-34s %10.0f us (at key %ld; incremental resize, no stall)\n",
		       "slowest keydir insert to BIG keys", worst_us, worst_at);
	printf("\ntargets: fill and read >= 2x LevelDB; reopen of 1M keys < 0.5 s with hints; "
	       "keydir <= 32 B + key\n");
	kv_buf_free(&b);
	rmrf(base);
	return 0;
}
