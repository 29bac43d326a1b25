/*
 * test_poll.c — unit tests of kv_poll, the adaptive polling of kvd's loop
 * (daemon/kv_poll.h): the window grows for a client that answers within
 * max, shrinks to 0 for a slower one, an idle loop polls at most one
 * window, many active connections stop polling, and the figures Stats
 * reports add up. Time is simulated: no clock, no daemon.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kv_poll.h"

#define US 1000u

/* One request/reply cycle as the loop runs it: the pass that executed the
 * request ends at *t; the loop then asks kv_poll_idle every step_ns until
 * the client's next request comes gap_ns later. Returns the number of
 * polling passes (0: it slept at once). */
static unsigned cycle(struct kv_poll *p, uint64_t *t, uint64_t gap_ns, uint64_t step_ns)
{
	uint64_t end = *t + gap_ns;
	unsigned polls = 0;
	uint64_t now = *t;
	for (unsigned i = 0; i < 100000; i++) { /* bounded */
		if (now >= end)
			break;
		if (!kv_poll_idle(p, now)) {
			kv_poll_after(p, now, 0); /* the sleeping pass: woken by the request */
			break;
		}
		polls++;
		kv_poll_after(p, now, 0); /* a polling pass that found nothing */
		now += step_ns;
	}
	*t = end;
	kv_poll_after(p, *t, 1); /* the pass that executed the request */
	return polls;
}

/* A loop with bound max_ns after 10 requests of a client that answers in
 * gap_ns: returns the time of the last one. */
static uint64_t settle(struct kv_poll *p, uint64_t max_ns, uint64_t gap_ns)
{
	uint64_t t = 1000 * US;
	kv_poll_init(p, max_ns);
	for (int i = 0; i < 10; i++)
		cycle(p, &t, gap_ns, 1 * US);
	return t;
}

static void test_off_never_polls(void **state)
{
	(void)state;
	struct kv_poll p;
	kv_poll_init(&p, 0);
	uint64_t t = 1000 * US;
	for (int i = 0; i < 50; i++)
		assert_int_equal(cycle(&p, &t, 20 * US, 1 * US), 0);
	assert_int_equal(p.window_ns, 0);
	assert_int_equal(p.poll_ns, 0);
	assert_int_equal(p.hits + p.misses, 0);
}

/* A client answering in 25 µs: the window grows 10, 20, 40, 50 µs (max),
 * then every request is caught by polling and the window stays. */
static void test_fast_client_grows_then_hits(void **state)
{
	(void)state;
	struct kv_poll p;
	kv_poll_init(&p, 50 * US);
	uint64_t t = 1000 * US;
	cycle(&p, &t, 25 * US, 1 * US); /* first request: nothing to compare with */
	assert_int_equal(p.window_ns, 0);
	cycle(&p, &t, 25 * US, 1 * US); /* slept, woken within max: grow */
	assert_int_equal(p.window_ns, 10 * US);
	cycle(&p, &t, 25 * US, 1 * US); /* polled 10 µs, missed, slept: grow */
	assert_int_equal(p.window_ns, 20 * US);
	assert_int_equal(p.misses, 1);
	cycle(&p, &t, 25 * US, 1 * US);
	assert_int_equal(p.window_ns, 40 * US);
	uint64_t hits = p.hits;
	for (int i = 0; i < 100; i++)
		assert_true(cycle(&p, &t, 25 * US, 1 * US) > 0);
	assert_int_equal(p.hits, hits + 100);
	assert_int_equal(p.window_ns, 40 * US); /* hits leave it alone */
	assert_int_equal(p.misses, 2);
	/* time polling: 10 + 20 µs of misses, 25 µs per hit */
	assert_int_equal(p.poll_ns, 30 * US + 100 * 25 * US);
}

/* A client slower than max: the window halves down to 0, then the loop
 * sleeps at once after each request. */
static void test_slow_client_shrinks_to_zero(void **state)
{
	(void)state;
	struct kv_poll p;
	uint64_t t = settle(&p, 50 * US, 25 * US);
	assert_int_equal(p.window_ns, 40 * US);
	cycle(&p, &t, 200 * US, 1 * US); /* polled 40 µs, missed, slept 160: shrink */
	assert_int_equal(p.window_ns, 20 * US);
	cycle(&p, &t, 200 * US, 1 * US);
	assert_int_equal(p.window_ns, 10 * US);
	cycle(&p, &t, 200 * US, 1 * US); /* 5 µs is below the 10 µs start: 0 */
	assert_int_equal(p.window_ns, 0);
	uint64_t spent = p.poll_ns, misses = p.misses;
	for (int i = 0; i < 20; i++)
		assert_int_equal(cycle(&p, &t, 200 * US, 1 * US), 0);
	assert_int_equal(p.poll_ns, spent);
	assert_int_equal(p.misses, misses);
	assert_int_equal(p.window_ns, 0);
}

/* After its last request an idle loop polls for one window, then sleeps;
 * timer wake-ups later do not start another poll. */
static void test_idle_polls_one_window(void **state)
{
	(void)state;
	struct kv_poll p;
	uint64_t t = settle(&p, 50 * US, 25 * US);
	uint64_t w = p.window_ns, spent = p.poll_ns, misses = p.misses;
	assert_true(w > 0);
	assert_true(kv_poll_idle(&p, t));
	assert_true(kv_poll_idle(&p, t + w - 1));
	assert_false(kv_poll_idle(&p, t + w));
	assert_int_equal(p.misses, misses + 1);
	assert_int_equal(p.poll_ns, spent + w);
	for (int i = 1; i <= 5; i++) { /* timer passes, no request */
		kv_poll_after(&p, t + w + (uint64_t)i * 1000 * US, 0);
		assert_false(kv_poll_idle(&p, t + w + (uint64_t)i * 1000 * US));
	}
	assert_int_equal(p.misses, misses + 1);
	assert_int_equal(p.poll_ns, spent + w);
	/* the request that finally comes, seconds later, shrinks the window */
	kv_poll_after(&p, t + 5000 * 1000 * US, 1);
	assert_int_equal(p.window_ns, w / 2 >= KV_POLL_GROW_START_NS ? w / 2 : 0);
}

/* More than KV_POLL_MAX_ACTIVE connections in an epoch: no polling until
 * a whole epoch passed with few of them again. */
static void test_many_connections_stop_polling(void **state)
{
	(void)state;
	struct kv_poll p;
	uint64_t conn[KV_POLL_MAX_ACTIVE + 1] = {0};
	kv_poll_init(&p, 50 * US);
	uint64_t t = 1000 * US;
	for (int i = 0; i < 10; i++) {
		kv_poll_seen(&p, &conn[0]);
		cycle(&p, &t, 25 * US, 1 * US);
	}
	assert_true(p.window_ns > 0);
	assert_true(kv_poll_idle(&p, t));
	kv_poll_after(&p, t, 0);
	for (unsigned i = 0; i <= KV_POLL_MAX_ACTIVE; i++) {
		kv_poll_seen(&p, &conn[i]);
		kv_poll_seen(&p, &conn[i]); /* once per epoch */
	}
	assert_int_equal(p.active, KV_POLL_MAX_ACTIVE + 1);
	kv_poll_after(&p, t + 1, 1);
	t += 1;
	assert_false(kv_poll_idle(&p, t)); /* this epoch */
	/* the next epoch still remembers the previous one */
	t += KV_POLL_EPOCH_NS;
	kv_poll_after(&p, t, 0);
	kv_poll_seen(&p, &conn[0]);
	kv_poll_after(&p, t, 1);
	assert_false(kv_poll_idle(&p, t));
	/* one more epoch with one connection: polling again */
	t += KV_POLL_EPOCH_NS;
	kv_poll_after(&p, t, 0);
	kv_poll_seen(&p, &conn[0]);
	kv_poll_after(&p, t, 1);
	assert_true(kv_poll_idle(&p, t));
}

/* SIGHUP: a smaller bound clamps the window; 0 stops polling. */
static void test_set_max(void **state)
{
	(void)state;
	struct kv_poll p;
	uint64_t t = settle(&p, 100 * US, 60 * US);
	assert_int_equal(p.window_ns, 80 * US);
	kv_poll_set_max(&p, 30 * US);
	assert_int_equal(p.window_ns, 30 * US);
	for (int i = 0; i < 10; i++)
		cycle(&p, &t, 20 * US, 1 * US);
	assert_int_equal(p.window_ns, 30 * US);
	kv_poll_set_max(&p, 0);
	assert_int_equal(p.window_ns, 0);
	for (int i = 0; i < 10; i++)
		assert_int_equal(cycle(&p, &t, 20 * US, 1 * US), 0);
	assert_int_equal(p.window_ns, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_off_never_polls),
		cmocka_unit_test(test_fast_client_grows_then_hits),
		cmocka_unit_test(test_slow_client_shrinks_to_zero),
		cmocka_unit_test(test_idle_polls_one_window),
		cmocka_unit_test(test_many_connections_stop_polling),
		cmocka_unit_test(test_set_max),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
