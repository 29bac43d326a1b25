/*
 * bench_hiccup.c — how long this machine takes the CPU away from a thread
 * that never sleeps: one spinning thread per CPU (or -n N), each reading
 * CLOCK_MONOTONIC back to back for -t seconds and keeping every gap of 10 µs
 * or more between two reads. Nothing in the program blocks, so a gap is time
 * the thread was not running: an interrupt, another task, or (on a VM) the
 * host running something else on the vCPU.
 *
 * make bench-redis runs it before its cells: a p99 of a few milliseconds
 * can only be read against the stalls the machine itself has.
 *
 * Prints one line: the share of the time lost in gaps, the number of gaps
 * of 0.5, 1 and 5 ms or more, and the longest, summed over the threads
 * (the share is the mean over the threads).
 *
 * usage: bench_hiccup [-t SECONDS] [-n THREADS]
 * Owns: its threads (joined before printing). Exit status 0, or 1 when a
 * thread cannot be started.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct spin {
	pthread_t tid;
	double seconds;
	uint64_t lost_ns, max_ns;
	uint64_t over_500us, over_1ms, over_5ms;
};

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void *spin_main(void *arg)
{
	struct spin *s = arg;
	uint64_t prev = now_ns();
	uint64_t end = prev + (uint64_t)(s->seconds * 1e9);
	while (prev < end) {
		uint64_t n = now_ns();
		uint64_t gap = n - prev;
		prev = n;
		if (gap < 10000u)
			continue;
		s->lost_ns += gap;
		if (gap > s->max_ns)
			s->max_ns = gap;
		s->over_500us += gap >= 500000u;
		s->over_1ms += gap >= 1000000u;
		s->over_5ms += gap >= 5000000u;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	double seconds = 2.0;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	int opt;
	while ((opt = getopt(argc, argv, "t:n:")) != -1) {
		if (opt == 't')
			seconds = atof(optarg);
		else if (opt == 'n')
			n = atol(optarg);
		else {
			fprintf(stderr, "usage: bench_hiccup [-t SECONDS] [-n THREADS]\n");
			return 2;
		}
	}
	if (seconds <= 0 || seconds > 600 || n < 1 || n > 1024) {
		fprintf(stderr, "bench_hiccup: -t must be in (0, 600], -n in 1..1024\n");
		return 2;
	}
	struct spin *s = calloc((size_t)n, sizeof *s);
	if (!s) {
		fprintf(stderr, "bench_hiccup: out of memory\n");
		return 1;
	}
	int rc = 0;
	long started = 0;
	for (; started < n; started++) {
		s[started].seconds = seconds;
		if (pthread_create(&s[started].tid, NULL, spin_main, &s[started]) != 0) {
			fprintf(stderr, "bench_hiccup: cannot start a thread\n");
			rc = 1;
			break;
		}
	}
	uint64_t lost = 0, max = 0, o500 = 0, o1 = 0, o5 = 0;
	for (long i = 0; i < started; i++) {
		pthread_join(s[i].tid, NULL);
		lost += s[i].lost_ns;
		max = s[i].max_ns > max ? s[i].max_ns : max;
		o500 += s[i].over_500us;
		o1 += s[i].over_1ms;
		o5 += s[i].over_5ms;
	}
	if (rc == 0)
		printf(
		    "%ld spinning threads for %.1f s: %.1f %% of the time lost in gaps >= 10 us; "
		    "gaps >= 0.5 ms: %llu, >= 1 ms: %llu, >= 5 ms: %llu; longest %.2f ms\n",
		    started, seconds, 100.0 * (double)lost / 1e9 / seconds / (double)started,
		    (unsigned long long)o500, (unsigned long long)o1, (unsigned long long)o5,
		    (double)max / 1e6);
	free(s);
	return rc;
}
