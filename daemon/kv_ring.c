/*
 * kv_ring.c — batches of non-blocking socket reads and writes through
 * io_uring (interface and invariants in kv_ring.h).
 */
#include "kv_ring.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct kv_ring {
	struct io_uring ring;
	struct msghdr msg[KV_RING_MAX]; /* one per queued send (invariant 3) */
	uint64_t tag[KV_RING_MAX];
	unsigned char fin[KV_RING_MAX]; /* during a run: done() was called */
	unsigned n;                     /* queued, not yet run */
	int failed;                     /* a run could not submit: the ring is unusable */
	uint64_t runs, fail_after;      /* KV_RING_FAIL_ENV; 0 = never */
};

int kv_ring_open(kv_ring **out)
{
	*out = NULL;
	kv_ring *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	int rc = -ENOTSUP;
	/* Only this thread submits, and completions are reaped right away, so
	 * the kernel need not interrupt the thread to run completion work. */
	struct io_uring_params p = {0};
#if defined(IORING_SETUP_SINGLE_ISSUER) && defined(IORING_SETUP_COOP_TASKRUN)
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN;
#endif
	int err = io_uring_queue_init_params(KV_RING_MAX, &r->ring, &p);
	if (err == -EINVAL && p.flags) { /* a kernel older than these flags */
		memset(&p, 0, sizeof p);
		err = io_uring_queue_init_params(KV_RING_MAX, &r->ring, &p);
	}
	if (err < 0) {
		rc = err;
		goto out;
	}
	struct io_uring_probe *probe = io_uring_get_probe_ring(&r->ring);
	int ok = probe && io_uring_opcode_supported(probe, IORING_OP_RECV) &&
	         io_uring_opcode_supported(probe, IORING_OP_SENDMSG);
	if (probe)
		io_uring_free_probe(probe);
	if (!ok) {
		io_uring_queue_exit(&r->ring);
		rc = -ENOTSUP;
		goto out;
	}
	const char *fail = getenv(KV_RING_FAIL_ENV);
	r->fail_after = fail ? strtoull(fail, NULL, 10) : 0;
	*out = r;
	r = NULL;
	rc = 0;
out:
	free(r);
	return rc;
}

void kv_ring_close(kv_ring *r)
{
	if (!r)
		return;
	io_uring_queue_exit(&r->ring);
	free(r);
}

unsigned kv_ring_queued(const kv_ring *r)
{
	return r->n;
}

static struct io_uring_sqe *next_sqe(kv_ring *r, uint64_t tag)
{
	if (r->n >= KV_RING_MAX || r->failed)
		return NULL;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
	if (!sqe)
		return NULL;
	r->tag[r->n] = tag;
	io_uring_sqe_set_data64(sqe, r->n);
	r->n++;
	return sqe;
}

int kv_ring_recv(kv_ring *r, int fd, void *buf, size_t len, uint64_t tag)
{
	struct io_uring_sqe *sqe = next_sqe(r, tag);
	if (!sqe)
		return -ENOSPC;
	io_uring_prep_recv(sqe, fd, buf, len, MSG_DONTWAIT);
	return 0;
}

int kv_ring_send(kv_ring *r, int fd, const struct iovec *iov, int niov, uint64_t tag)
{
	unsigned i = r->n;
	struct io_uring_sqe *sqe = next_sqe(r, tag);
	if (!sqe)
		return -ENOSPC;
	struct msghdr *m = &r->msg[i];
	memset(m, 0, sizeof *m);
	m->msg_iov = (struct iovec *)iov; /* read only by the kernel */
	m->msg_iovlen = (size_t)niov;
	/* MSG_DONTWAIT: a full socket gives -EAGAIN, never a parked request
	 * (a writev through io_uring would wait for room: invariant 1). */
	io_uring_prep_sendmsg(sqe, fd, m, MSG_DONTWAIT | MSG_NOSIGNAL);
	return 0;
}

int kv_ring_run(kv_ring *r, void (*done)(void *arg, uint64_t tag, int res), void *arg)
{
	unsigned n = r->n;
	unsigned got = 0;
	int rc = 0;
	if (n == 0)
		return 0;
	memset(r->fin, 0, n);
	if (r->fail_after && r->runs++ >= r->fail_after) {
		rc = -EIO; /* the test hook: nothing was submitted */
		goto fail;
	}
	do
		rc = io_uring_submit_and_wait(&r->ring, n);
	while (rc == -EINTR);
	if (rc < 0)
		goto fail;
	while (got < n) {
		struct io_uring_cqe *cqe;
		unsigned head, k = 0;
		io_uring_for_each_cqe(&r->ring, head, cqe)
		{
			uint64_t i = io_uring_cqe_get_data64(cqe);
			if (i < n && !r->fin[i]) {
				r->fin[i] = 1;
				got++;
				done(arg, r->tag[i], cqe->res);
			}
			k++;
		}
		io_uring_cq_advance(&r->ring, k);
		if (got < n) {
			rc = io_uring_wait_cqe(&r->ring, &cqe);
			if (rc < 0 && rc != -EINTR)
				goto fail;
		}
	}
	r->n = 0;
	return (int)n;
fail:
	/* Nothing more can be known about the unreaped operations: the ring
	 * is given up (the caller closes it and does them itself). */
	r->failed = rc;
	for (unsigned i = 0; i < n; i++)
		if (!r->fin[i])
			done(arg, r->tag[i], -ECANCELED);
	r->n = 0;
	return rc;
}
