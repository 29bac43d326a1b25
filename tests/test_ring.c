/*
 * test_ring.c — unit tests of kv_ring, kvd's batches of socket reads and
 * writes through io_uring (daemon/kv_ring.h), on socketpairs: a batch
 * reads and writes what recv/sendmsg would, every operation completes in
 * the call that runs it (an empty socket and a full one give -EAGAIN, they
 * never wait), each tag is reported once, a batch holds at most
 * KV_RING_MAX operations, a closed peer gives 0 or EPIPE without SIGPIPE.
 * Skipped (not failed) where the kernel refuses io_uring: kvd then runs
 * without it, which test_server checks.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kv_ring.h"

struct ctx {
	kv_ring *r;
	int a[KV_RING_MAX], b[KV_RING_MAX]; /* socketpairs: a[i] <-> b[i] */
	int res[KV_RING_MAX];
	unsigned calls[KV_RING_MAX];
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof *c);
	if (!c)
		return -1;
	for (unsigned i = 0; i < KV_RING_MAX; i++) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
			return -1;
		c->a[i] = sv[0];
		c->b[i] = sv[1];
	}
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	kv_ring_close(c->r);
	for (unsigned i = 0; i < KV_RING_MAX; i++) {
		close(c->a[i]);
		close(c->b[i]);
	}
	free(c);
	return 0;
}

static void open_or_skip(struct ctx *c)
{
	int rc = kv_ring_open(&c->r);
	if (rc == -ENOSYS || rc == -EPERM || rc == -ENOTSUP) {
		print_message("io_uring not available here (%s)\n", strerror(-rc));
		skip();
	}
	assert_int_equal(rc, 0);
	assert_non_null(c->r);
}

static void note(void *arg, uint64_t tag, int res)
{
	struct ctx *c = arg;
	assert_true(tag < KV_RING_MAX);
	c->res[tag] = res;
	c->calls[tag]++;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Reads of 64 sockets in one batch: the 32 with data get their bytes, the
 * 32 without get -EAGAIN at once; every tag is reported exactly once. */
static void test_recv_batch(void **state)
{
	struct ctx *c = *state;
	open_or_skip(c);
	static char buf[KV_RING_MAX][256];
	for (unsigned i = 0; i < KV_RING_MAX; i += 2) {
		char m[32];
		int n = snprintf(m, sizeof m, "message %u", i);
		assert_int_equal(write(c->b[i], m, (size_t)n), n);
	}
	for (unsigned i = 0; i < KV_RING_MAX; i++)
		assert_int_equal(kv_ring_recv(c->r, c->a[i], buf[i], sizeof buf[i], i), 0);
	assert_int_equal(kv_ring_queued(c->r), KV_RING_MAX);
	double t0 = now_s();
	assert_int_equal(kv_ring_run(c->r, note, c), (int)KV_RING_MAX);
	assert_true(now_s() - t0 < 2.0); /* nothing waited for a peer */
	assert_int_equal(kv_ring_queued(c->r), 0);
	for (unsigned i = 0; i < KV_RING_MAX; i++) {
		assert_int_equal(c->calls[i], 1);
		if (i % 2) {
			assert_int_equal(c->res[i], -EAGAIN);
			continue;
		}
		char m[32];
		int n = snprintf(m, sizeof m, "message %u", i);
		assert_int_equal(c->res[i], n);
		assert_memory_equal(buf[i], m, (size_t)n);
	}
}

/* A send of several buffers arrives whole and in order; a socket with no
 * room gives -EAGAIN instead of waiting; the ring goes on working. */
static void test_send_iov_and_full(void **state)
{
	struct ctx *c = *state;
	open_or_skip(c);
	struct iovec v[3] = {{"abc", 3}, {"", 0}, {"defgh", 5}};
	assert_int_equal(kv_ring_send(c->r, c->a[0], v, 3, 7), 0);
	assert_int_equal(kv_ring_run(c->r, note, c), 1);
	assert_int_equal(c->res[7], 8);
	char got[16] = {0};
	assert_int_equal(read(c->b[0], got, sizeof got), 8);
	assert_string_equal(got, "abcdefgh");

	/* fill a[1] until the ring reports -EAGAIN (bounded: a socket buffer
	 * is a few hundred KiB at most here) */
	static char big[65536];
	struct iovec bv = {big, sizeof big};
	size_t total = 0;
	int last = 0;
	double t0 = now_s();
	for (int i = 0; i < 1000 && last >= 0; i++) {
		assert_int_equal(kv_ring_send(c->r, c->a[1], &bv, 1, 1), 0);
		assert_int_equal(kv_ring_run(c->r, note, c), 1);
		last = c->res[1];
		if (last > 0)
			total += (size_t)last;
	}
	assert_int_equal(last, -EAGAIN);
	assert_true(total > 0);
	assert_true(now_s() - t0 < 5.0);
	/* drain a little: the next send goes through again */
	assert_true(read(c->b[1], big, sizeof big) > 0);
	assert_int_equal(kv_ring_send(c->r, c->a[1], &v[0], 1, 2), 0);
	assert_int_equal(kv_ring_run(c->r, note, c), 1);
	assert_int_equal(c->res[2], 3);
}

/* Invariant 2: the 65th operation is refused until the batch has run. */
static void test_batch_limit(void **state)
{
	struct ctx *c = *state;
	open_or_skip(c);
	static char buf[16];
	for (unsigned i = 0; i < KV_RING_MAX; i++)
		assert_int_equal(kv_ring_recv(c->r, c->a[i], buf, sizeof buf, i), 0);
	assert_int_equal(kv_ring_recv(c->r, c->a[0], buf, sizeof buf, 0), -ENOSPC);
	struct iovec v = {"x", 1};
	assert_int_equal(kv_ring_send(c->r, c->a[0], &v, 1, 0), -ENOSPC);
	assert_int_equal(kv_ring_run(c->r, note, c), (int)KV_RING_MAX);
	assert_int_equal(kv_ring_run(c->r, note, c), 0); /* nothing queued */
	assert_int_equal(kv_ring_recv(c->r, c->a[0], buf, sizeof buf, 0), 0);
	assert_int_equal(kv_ring_run(c->r, note, c), 1);
}

/* A closed peer: a read gives 0 (end of stream), a write -EPIPE, and the
 * process gets no SIGPIPE (it would die of it: the default action). */
static void test_closed_peer(void **state)
{
	struct ctx *c = *state;
	open_or_skip(c);
	signal(SIGPIPE, SIG_DFL);
	close(c->b[3]);
	c->b[3] = open("/dev/null", O_RDONLY); /* keep teardown's close valid */
	static char buf[16];
	struct iovec v = {"x", 1};
	assert_int_equal(kv_ring_recv(c->r, c->a[3], buf, sizeof buf, 0), 0);
	assert_int_equal(kv_ring_send(c->r, c->a[3], &v, 1, 1), 0);
	assert_int_equal(kv_ring_run(c->r, note, c), 2);
	assert_int_equal(c->res[0], 0);
	assert_int_equal(c->res[1], -EPIPE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_recv_batch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_send_iov_and_full, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_batch_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_closed_peer, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
