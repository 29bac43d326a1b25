/*
 * bench_sync.c — `make bench-sync`: group commit under --sync always.
 *
 * In one run: the raw fdatasync rate of the disk under the data directory
 * (4 KiB append + fdatasync, one writer), then a fresh kvd --sync always
 * driven by 1, 10 and 50 client threads doing blocking 100-byte puts for
 * a few seconds each. Prints puts/s, the speed-up over one client, kvd's
 * fdatasyncs per second and mean writes per fdatasync (from Stats), and
 * how close kvd's sync rate comes to the raw rate (1.0 = one fdatasync
 * per loop iteration, back to back).
 *
 * usage: bench_sync [-t SECONDS] [-d DIR]     env: KVD (default build/kvd)
 */
#include "kvclient.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char sock[512];
static volatile int stop;
static double seconds = 3.0;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double raw_fdatasync_rate(const char *dir)
{
	char path[600];
	snprintf(path, sizeof path, "%s/fsync-probe", dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return 0;
	char buf[4096];
	memset(buf, 'x', sizeof buf);
	long n = 0;
	double t0 = now(), t;
	do {
		if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf || fdatasync(fd) != 0)
			break;
		n++;
		t = now();
	} while (t - t0 < seconds);
	close(fd);
	unlink(path);
	return (double)n / (now() - t0);
}

struct worker {
	int id;
	long puts;
	int err;
};

static void *run(void *arg)
{
	struct worker *w = arg;
	kvc_client *c = NULL;
	char key[32], val[100];
	memset(val, 'v', sizeof val);
	if (kvc_connect(sock, 5000, &c, NULL, 0) != KVC_OK) {
		w->err = 1;
		return NULL;
	}
	while (!stop) {
		int kl = snprintf(key, sizeof key, "w%02d-%08ld", w->id, w->puts % 100000);
		if (kvc_put(c, key, (size_t)kl, val, sizeof val, 0, 0) != KVC_OK) {
			w->err = 1;
			break;
		}
		w->puts++;
	}
	kvc_close(c);
	return NULL;
}

static int stats(uint64_t *syncs, uint64_t *writes)
{
	kvc_client *c = NULL;
	struct kvc_stats *st = NULL;
	if (kvc_connect(sock, 5000, &c, NULL, 0) != KVC_OK || kvc_stats(c, &st) != KVC_OK) {
		kvc_close(c);
		return -1;
	}
	*syncs = st->syncs;
	*writes = st->synced_writes;
	kvc_stats_free(st);
	kvc_close(c);
	return 0;
}

int main(int argc, char **argv)
{
	char dir[512] = "";
	int opt;
	while ((opt = getopt(argc, argv, "t:d:")) != -1) {
		if (opt == 't')
			seconds = atof(optarg);
		else if (opt == 'd')
			snprintf(dir, sizeof dir, "%s", optarg);
		else {
			fprintf(stderr, "usage: bench_sync [-t SECONDS] [-d DIR]\n");
			return 2;
		}
	}
	if (!dir[0]) {
		snprintf(dir, sizeof dir, "/tmp/kvd-bench-sync.XXXXXX");
		if (!mkdtemp(dir)) {
			perror("mkdtemp");
			return 1;
		}
	}
	const char *kvd = getenv("KVD") ? getenv("KVD") : "build/kvd";
	char data[600];
	snprintf(data, sizeof data, "%s/data", dir);
	snprintf(sock, sizeof sock, "%s/kvd.sock", dir);
	signal(SIGPIPE, SIG_IGN);

	double raw = raw_fdatasync_rate(dir);
	printf("bench-sync: raw fdatasync rate of %s: %.0f/s (4 KiB append + fdatasync)\n", dir,
	       raw);
	pid_t pid = fork();
	if (pid == 0) {
		execl(kvd, kvd, "--data-dir", data, "--socket", sock, "--sync", "always",
		      "--log-level", "warn", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		kvc_client *c = NULL;
		if (kvc_connect(sock, 100, &c, NULL, 0) == KVC_OK) {
			kvc_close(c);
			break;
		}
		usleep(10000);
	}
	static const int clients[] = {1, 10, 50};
	double base = 0;
	printf("\n%8s %12s %10s %14s %16s %18s\n", "clients", "puts/s", "vs 1", "fdatasync/s",
	       "writes/fdatasync", "syncs vs raw rate");
	for (size_t k = 0; k < sizeof clients / sizeof *clients; k++) {
		int n = clients[k];
		struct worker w[50];
		pthread_t th[50];
		uint64_t s0 = 0, w0 = 0, s1 = 0, w1 = 0;
		stats(&s0, &w0);
		stop = 0;
		double t0 = now();
		for (int i = 0; i < n; i++) {
			w[i] = (struct worker){i, 0, 0};
			pthread_create(&th[i], NULL, run, &w[i]);
		}
		usleep((useconds_t)(seconds * 1e6));
		stop = 1;
		long total = 0;
		int err = 0;
		for (int i = 0; i < n; i++) {
			pthread_join(th[i], NULL);
			total += w[i].puts;
			err |= w[i].err;
		}
		double el = now() - t0;
		stats(&s1, &w1);
		double rate = (double)total / el, syncs = (double)(s1 - s0) / el;
		if (k == 0)
			base = rate;
		printf("%8d %12.0f %9.1fx %14.0f %16.1f %18.2f%s\n", n, rate, rate / base, syncs,
		       s1 > s0 ? (double)(w1 - w0) / (double)(s1 - s0) : 0.0,
		       raw > 0 ? syncs / raw : 0.0, err ? "  (client errors!)" : "");
	}
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("\ntargets: 50 clients >= 10x one client; kvd's fdatasync rate within 0.8 of the "
	       "raw rate\n");
	return 0;
}
