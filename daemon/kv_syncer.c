/*
 * kv_syncer.c — the group-commit sync thread (interface and invariants in
 * kv_syncer.h).
 *
 *   loop thread                         sync thread
 *   kv_syncer_submit(k) ──> pending = k ──> takes it (pending = 0), runs
 *   (replaces a pending k-1: inv. 1)       fdatasync, done = k, eventfd += 1,
 *                                          takes the next pending at once
 *   kv_syncer_collect() <── eventfd ───────┘
 */
#include "kv_syncer.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

struct kv_syncer {
	pthread_t tid;
	pthread_mutex_t mu;
	pthread_cond_t cv;      /* work for the thread; progress for wait */
	uint64_t pending;       /* commit waiting for a run, 0 = none */
	struct kv_sync_job job; /* its job */
	uint64_t running;       /* commit whose run is in progress, 0 = none */
	uint64_t done;          /* invariant 2 */
	uint64_t runs;          /* runs since the last collect */
	uint64_t run_ns;        /* their duration */
	int rc;                 /* first failure since the last collect (inv. 3) */
	struct kv_sync_job failed_job;
	int stop;
	int efd;
	struct kv_sync_fd sf; /* the thread's own */
};

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *syncer_main(void *arg)
{
	struct kv_syncer *sy = arg;
	pthread_mutex_lock(&sy->mu);
	for (;;) {
		while (!sy->pending && !sy->stop)
			pthread_cond_wait(&sy->cv, &sy->mu);
		if (!sy->pending)
			break; /* stop, nothing left */
		uint64_t k = sy->pending;
		struct kv_sync_job j = sy->job;
		sy->pending = 0;
		sy->running = k;
		pthread_mutex_unlock(&sy->mu);
		uint64_t t0 = mono_ns();
		int rc = kv_engine_sync_run(&sy->sf, &j);
		uint64_t dt = mono_ns() - t0;
		pthread_mutex_lock(&sy->mu);
		sy->run_ns += dt;
		sy->running = 0;
		sy->done = k;
		sy->runs++;
		if (rc && !sy->rc) {
			sy->rc = rc;
			sy->failed_job = j;
		}
		pthread_cond_broadcast(&sy->cv);
		uint64_t one = 1;
		ssize_t w;
		do
			w = write(sy->efd, &one, sizeof one);
		while (w < 0 && errno == EINTR);
	}
	pthread_mutex_unlock(&sy->mu);
	return NULL;
}

int kv_syncer_start(struct kv_syncer **out)
{
	int rc;
	struct kv_syncer *sy = calloc(1, sizeof *sy);
	*out = NULL;
	if (!sy)
		return -ENOMEM;
	sy->sf = (struct kv_sync_fd)KV_SYNC_FD_INIT;
	sy->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (sy->efd < 0) {
		rc = -errno;
		free(sy);
		return rc;
	}
	pthread_mutex_init(&sy->mu, NULL);
	pthread_cond_init(&sy->cv, NULL);
	/* the thread takes no signals: they stay with the event loop */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&sy->tid, NULL, syncer_main, sy);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		pthread_cond_destroy(&sy->cv);
		pthread_mutex_destroy(&sy->mu);
		close(sy->efd);
		free(sy);
		return -rc;
	}
	*out = sy;
	return 0;
}

int kv_syncer_fd(const struct kv_syncer *sy)
{
	return sy->efd;
}

void kv_syncer_submit(struct kv_syncer *sy, uint64_t commit, const struct kv_sync_job *j)
{
	pthread_mutex_lock(&sy->mu);
	int dir = sy->pending ? sy->job.dir : 0; /* invariant 1 */
	sy->pending = commit;
	sy->job = *j;
	sy->job.dir |= dir;
	if (!sy->running)
		pthread_cond_broadcast(&sy->cv);
	pthread_mutex_unlock(&sy->mu);
}

void kv_syncer_collect(struct kv_syncer *sy, uint64_t *done, uint64_t *runs, uint64_t *ns,
		       int *rc, struct kv_sync_job *failed_job)
{
	uint64_t v;
	pthread_mutex_lock(&sy->mu);
	(void)!read(sy->efd, &v, sizeof v); /* reset the counter; EAGAIN is fine */
	*done = sy->done;
	*runs = sy->runs;
	*ns = sy->run_ns;
	*rc = sy->rc;
	if (sy->rc && failed_job)
		*failed_job = sy->failed_job;
	sy->rc = 0;
	sy->runs = 0;
	sy->run_ns = 0;
	pthread_mutex_unlock(&sy->mu);
}

void kv_syncer_wait(struct kv_syncer *sy)
{
	pthread_mutex_lock(&sy->mu);
	while (sy->pending || sy->running)
		pthread_cond_wait(&sy->cv, &sy->mu);
	pthread_mutex_unlock(&sy->mu);
}

void kv_syncer_stop(struct kv_syncer *sy)
{
	if (!sy)
		return;
	pthread_mutex_lock(&sy->mu);
	sy->stop = 1;
	pthread_cond_broadcast(&sy->cv);
	pthread_mutex_unlock(&sy->mu);
	pthread_join(sy->tid, NULL);
	kv_engine_sync_fd_close(&sy->sf);
	pthread_cond_destroy(&sy->cv);
	pthread_mutex_destroy(&sy->mu);
	close(sy->efd);
	free(sy);
}
