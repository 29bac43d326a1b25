/*
 * kv_poll.c — adaptive polling before kvd's loop sleeps (interface and
 * invariants in kv_poll.h).
 */
#include "kv_poll.h"

#include <string.h>

static uint64_t grow_start(const struct kv_poll *p)
{
	return p->max_ns < KV_POLL_GROW_START_NS ? p->max_ns : KV_POLL_GROW_START_NS;
}

void kv_poll_init(struct kv_poll *p, uint64_t max_ns)
{
	memset(p, 0, sizeof *p);
	p->max_ns = max_ns;
	p->epoch = 1;
}

void kv_poll_set_max(struct kv_poll *p, uint64_t max_ns)
{
	p->max_ns = max_ns;
	if (p->window_ns > max_ns)
		p->window_ns = max_ns;
}

/* End a poll that did not catch a request. */
static void poll_missed(struct kv_poll *p, uint64_t now)
{
	if (!p->poll_start)
		return;
	p->poll_ns += now - p->poll_start;
	p->misses++;
	p->poll_start = 0;
}

int kv_poll_idle(struct kv_poll *p, uint64_t now)
{
	unsigned active = p->active > p->active_prev ? p->active : p->active_prev;
	if (p->window_ns && p->last_work && now - p->last_work < p->window_ns &&
	    active <= KV_POLL_MAX_ACTIVE) {
		if (!p->poll_start)
			p->poll_start = now;
		return 1;
	}
	poll_missed(p, now);
	p->slept = 1;
	return 0;
}

void kv_poll_after(struct kv_poll *p, uint64_t now, int worked)
{
	if (now - p->epoch_start >= KV_POLL_EPOCH_NS) {
		p->active_prev = p->active;
		p->active = 0;
		p->epoch++;
		p->epoch_start = now;
	}
	if (!worked)
		return;
	if (p->last_work) {
		uint64_t gap = now - p->last_work;
		if (p->poll_start) { /* caught while polling */
			p->poll_ns += now - p->poll_start;
			p->hits++;
		} else if (p->slept && gap <= p->max_ns) { /* polling would have caught it */
			uint64_t w = p->window_ns ? p->window_ns * 2 : grow_start(p);
			p->window_ns = w < p->max_ns ? w : p->max_ns;
		} else if (p->slept) { /* a slower client: poll less */
			p->window_ns /= 2;
			if (p->window_ns < grow_start(p))
				p->window_ns = 0;
		}
	}
	p->last_work = now;
	p->poll_start = 0;
	p->slept = 0;
}
