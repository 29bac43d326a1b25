/*
 * kv_ring.h — batches of non-blocking socket reads and writes, submitted
 * in one system call (io_uring, through liburing).
 *
 * Job: kvd's loop reads every connection an epoll_wait returned and writes
 * every connection that has replies, one system call each. Where a system
 * call is expensive (on this kind of VM about 1 µs of entry and exit alone,
 * against well under 0.1 µs on bare metal), those calls are most of the
 * cost of a small request. Queued here and run together, N reads (or N
 * writes) cost one io_uring_enter.
 *
 * Use: kv_ring_recv()/kv_ring_send() queue operations with a caller's tag;
 * kv_ring_run() submits them all, waits until every one has completed and
 * calls done(arg, tag, res) for each, res being what recv(2)/sendmsg(2)
 * would have returned (bytes, or a negative errno such as -EAGAIN).
 *
 * Invariants:
 *  1. Every operation is non-blocking (MSG_DONTWAIT): the kernel completes
 *     it inside the io_uring_enter that submits it, so kv_ring_run() never
 *     waits for a peer, and nothing is in flight once it has returned.
 *  2. At most KV_RING_MAX operations are queued; kv_ring_recv/send return
 *     -ENOSPC beyond that (the caller runs the batch and queues again).
 *  3. Buffers and iovecs given to kv_ring_recv/send are the caller's and
 *     must stay valid until kv_ring_run() returns; the ring keeps no
 *     pointer to them afterwards.
 *  4. kv_ring_open() failing (no io_uring in the kernel, or forbidden: EPERM,
 *     ENOSYS) is not an error for kvd: the caller goes on with one system
 *     call per operation.
 */
#ifndef KV_RING_H
#define KV_RING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define KV_RING_MAX 64u /* operations per batch */
/* Tests only: with this set to N, the ring fails (as if io_uring_enter
 * had failed) on its run after N successful ones, so that kvd's fallback
 * to plain system calls can be tested. */
#define KV_RING_FAIL_ENV "KVD_RING_FAIL_AFTER"

typedef struct kv_ring kv_ring;

/* A ring for batches of up to KV_RING_MAX operations. On success *out is
 * the caller's (kv_ring_close). Returns 0 or a negative errno. */
int kv_ring_open(kv_ring **out);
void kv_ring_close(kv_ring *r); /* NULL is fine; nothing may be queued */

/* Queue a recv of up to len bytes into buf. 0, or -ENOSPC (invariant 2). */
int kv_ring_recv(kv_ring *r, int fd, void *buf, size_t len, uint64_t tag);
/* Queue a send of the niov buffers of iov. 0, or -ENOSPC. */
int kv_ring_send(kv_ring *r, int fd, const struct iovec *iov, int niov, uint64_t tag);
unsigned kv_ring_queued(const kv_ring *r);

/* Submit the queued operations and wait for all of them; done() is called
 * once per operation, in completion order, and must not queue on this
 * ring. Returns the number of operations run, or a negative errno when
 * the ring failed (submitting or waiting): then done() got -ECANCELED for
 * every operation without a result, which the caller redoes itself, and
 * the ring is unusable (kv_ring_close it; queueing on it gives -ENOSPC). */
int kv_ring_run(kv_ring *r, void (*done)(void *arg, uint64_t tag, int res), void *arg);

#endif
