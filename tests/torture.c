/*
 * torture.c — crash torture for kvd (`make torture CYCLES=N`; 200 cycles
 * run inside `make test`).
 *
 * Each cycle: start a real kvd (sync mode rotating always / interval:50 /
 * never, tiny segments so rotations and merges happen), let C client
 * processes issue random puts, deletes and batches on keys they own, each
 * logging every request before it is sent and every acknowledgment after
 * it arrives (in shared memory, so nothing is lost when kvd dies), ask for
 * a merge in some cycles, then SIGKILL kvd at a random moment. After a
 * restart every key is read back and checked against the log:
 *
 *   lost       an acknowledged write is missing (older or absent value)
 *   phantom    a value that was never sent
 *   resurrect  an acknowledged delete came back
 *   torn       an in-flight batch is visible in part
 *   recovery   kvd failed to start again
 *
 * Keys belong to one client each, so a key's history is a sequence; the
 * one request a client has in flight when kvd dies may or may not have
 * landed (both are accepted, atomically for a batch). The store carries
 * over from cycle to cycle. One summary line per run; exit 1 on any
 * failure. Every wait is bounded.
 *
 * usage: torture [-n CYCLES] [-c CLIENTS] [-s SEED] [-m always|interval|never|all] [-v]
 * env:   KVD (default build/kvd)
 */
#include "kvclient.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXC 16
#define NKEYS 40      /* keys per client */
#define MAXOPS 20000  /* per client per cycle */
#define BATCH_MAX 4

enum { OP_PUT = 1, OP_DEL = 2, OP_BATCH = 3 };

struct op {
	uint8_t type;
	uint8_t nk;
	uint8_t acked;   /* 1 acked OK, 2 answered with an error (not applied) */
	uint8_t pad;
	uint16_t key[BATCH_MAX];
	uint32_t val[BATCH_MAX]; /* value id; 0 = delete */
};

struct clog {
	uint32_t nops; /* ops[0..nops) were sent (or about to be) */
	struct op ops[MAXOPS];
};

static struct clog *logs;                 /* shared with the clients */
static uint32_t state[MAXC][NKEYS];       /* verified store state, value id or 0 */
static uint32_t next_val[MAXC];
static const char *kvd_path, *shim_path;
static char dir[256], datadir[300], sock[300], logpath[300], journal[300], bakdir[300];
static int verbose, powercut_mode;
/* value id -> key+1 it was written to, per client (0: never sent) */
static uint16_t *val_key[MAXC];
static uint32_t val_cap[MAXC];

static uint64_t rnd_state;
static uint64_t rnd(void)
{
	uint64_t z = (rnd_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int keyname(char *buf, size_t n, int c, int k)
{
	return snprintf(buf, n, "t%02d-key%03d", c, k);
}

static int valname(char *buf, size_t n, int c, uint32_t v)
{
	/* values of varied length; the id can be read back */
	return snprintf(buf, n, "c%02d-v%010u-%.*s", c, v, (int)(v % 97),
			"pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp"
			"ppppppppppppppppppppppppp");
}

static pid_t start_kvd(const char *mode)
{
	pid_t pid = fork();
	if (pid == 0) {
		int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 2);
			dup2(fd, 1);
			close(fd);
		}
		if (powercut_mode) {
			setenv("LD_PRELOAD", shim_path, 1);
			/* a sanitizer build (make test SAN=1) refuses a preloaded
			 * library ahead of its runtime unless told it is fine */
			const char *asan = getenv("ASAN_OPTIONS");
			char opts[512];
			snprintf(opts, sizeof opts, "%s%sverify_asan_link_order=0", asan ? asan : "",
				 asan && *asan ? ":" : "");
			setenv("ASAN_OPTIONS", opts, 1);
			setenv("PC_JOURNAL", journal, 1);
			setenv("PC_ROOT", datadir, 1);
			setenv("PC_BACKUP", bakdir, 1);
		}
		execl(kvd_path, kvd_path, "--data-dir", datadir, "--socket", sock, "--sync", mode,
		      "--max-segment-size", "32K", "--log-level", "warn", (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* Wait for kvd to answer a ping (bounded). 0 or -1. */
static int wait_ready(pid_t pid)
{
	uint64_t t0 = now_ms();
	while (now_ms() - t0 < 15000) {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			if (WIFSIGNALED(st))
				fprintf(stderr, "torture: kvd died of signal %d while starting\n",
					WTERMSIG(st));
			else
				fprintf(stderr, "torture: kvd exited with %d while starting\n",
					WEXITSTATUS(st));
			return -1;
		}
		kvc_client *c = NULL;
		if (kvc_connect(sock, 1000, &c, NULL, 0) == KVC_OK) {
			int rc = kvc_ping(c, NULL);
			kvc_close(c);
			if (rc == KVC_OK)
				return 0;
		}
		sleep_ms(5);
	}
	fprintf(stderr, "torture: kvd did not answer a ping within 15 s of its start\n");
	return -1;
}

/* Reap what a killed kvd left behind: its merge worker, reparented to us
 * (we are a subreaper), dies of PR_SET_PDEATHSIG a moment after kvd. A
 * restart before that would race the worker for the data and the socket,
 * which a service manager rules out by killing the whole unit. Called
 * with no other children alive; bounded at 10 s. */
static void reap_orphans(void)
{
	for (int i = 0; i < 2000; i++) {
		pid_t p = waitpid(-1, NULL, WNOHANG);
		if (p < 0) /* ECHILD: nobody left */
			return;
		if (p == 0)
			sleep_ms(5);
	}
	fprintf(stderr, "torture: a child of kvd outlived it by 10 s\n");
}

static void kill_wait(pid_t pid, int sig)
{
	kill(pid, sig);
	for (int i = 0; i < 1000; i++) {
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return;
		sleep_ms(5);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* A client: random ops on its keys until the connection dies or the op
 * budget is spent. Logs each op before sending, its ack after. */
static void client_main(int c, uint64_t seed)
{
	struct clog *lg = &logs[c];
	kvc_client *cl = NULL;
	char keys[BATCH_MAX][32], vals[BATCH_MAX][160];
	rnd_state = seed;
	if (kvc_connect(sock, 2000, &cl, NULL, 0) != KVC_OK)
		_exit(0);
	kvc_set_timeout(cl, 10000);
	uint32_t v = next_val[c];
	while (lg->nops < MAXOPS) {
		struct op o = {0};
		uint64_t r = rnd() % 100;
		o.type = r < 60 ? OP_PUT : r < 80 ? OP_DEL : OP_BATCH;
		o.nk = o.type == OP_BATCH ? (uint8_t)(2 + rnd() % (BATCH_MAX - 1)) : 1;
		for (int i = 0; i < o.nk; i++) {
			int dup;
			do { /* distinct keys inside a batch */
				o.key[i] = (uint16_t)(rnd() % NKEYS);
				dup = 0;
				for (int j = 0; j < i; j++)
					dup |= o.key[j] == o.key[i];
			} while (dup);
			int del = o.type == OP_DEL || (o.type == OP_BATCH && rnd() % 4 == 0);
			o.val[i] = del ? 0 : ++v;
		}
		uint32_t n = lg->nops;
		lg->ops[n] = o;
		__atomic_store_n(&lg->nops, n + 1, __ATOMIC_RELEASE);
		int rc;
		struct kvc_op bops[BATCH_MAX];
		for (int i = 0; i < o.nk; i++) {
			int kl = keyname(keys[i], sizeof keys[i], c, o.key[i]);
			int vl = o.val[i] ? valname(vals[i], sizeof vals[i], c, o.val[i]) : 0;
			bops[i] = (struct kvc_op){o.val[i] ? KVC_OP_PUT : KVC_OP_DEL, keys[i],
						  (size_t)kl, vals[i], (size_t)vl, 0};
		}
		if (o.type == OP_PUT)
			rc = kvc_put(cl, bops[0].key, bops[0].klen, bops[0].value, bops[0].vlen, 0, 0);
		else if (o.type == OP_DEL)
			rc = kvc_del(cl, bops[0].key, bops[0].klen, 0);
		else
			rc = kvc_batch(cl, bops, o.nk, 0, NULL);
		if (rc == KVC_OK || (o.type == OP_DEL && rc == KVC_NOT_FOUND)) {
			__atomic_store_n(&lg->ops[n].acked, 1, __ATOMIC_RELEASE);
		} else if (rc < 100) {
			__atomic_store_n(&lg->ops[n].acked, 2, __ATOMIC_RELEASE);
		} else {
			break; /* kvd is gone: this op stays in flight */
		}
	}
	kvc_close(cl);
	_exit(0);
}

struct result {
	uint64_t checked, lost, phantom, resurrect, torn, recovery, crc, dropped;
};

static void note_value(int c, uint32_t v, int k)
{
	if (v >= val_cap[c]) {
		uint32_t cap = val_cap[c] ? val_cap[c] : 65536;
		while (cap <= v)
			cap *= 2;
		val_key[c] = realloc(val_key[c], cap * sizeof *val_key[c]);
		memset(val_key[c] + val_cap[c], 0, (cap - val_cap[c]) * sizeof *val_key[c]);
		val_cap[c] = cap;
	}
	val_key[c][v] = (uint16_t)(k + 1);
}

static int in_history(int c, uint32_t v, int k)
{
	return v == 0 || (v < val_cap[c] && val_key[c][v] == k + 1);
}

static uint32_t parse_val(const void *v, size_t vlen, int c)
{
	char buf[32];
	if (vlen < 15)
		return UINT32_MAX;
	memcpy(buf, v, 15); /* "cNN-vDDDDDDDDDD" */
	buf[15] = 0;
	int cc;
	unsigned id;
	if (sscanf(buf, "c%02d-v%10u", &cc, &id) != 2 || cc != c)
		return UINT32_MAX;
	char want[160];
	int wl = valname(want, sizeof want, c, id);
	if ((size_t)wl != vlen || memcmp(want, v, vlen) != 0)
		return UINT32_MAX;
	return id;
}

/* Check every key of client c against its log; update state[c]. */
static void verify_client(kvc_client *cl, int c, struct result *res, int cycle, int strict)
{
	struct clog *lg = &logs[c];
	uint32_t A[NKEYS], B[NKEYS];
	memcpy(A, state[c], sizeof A);
	uint32_t n = lg->nops;
	int inflight = -1;
	uint32_t maxv = next_val[c];
	for (uint32_t i = 0; i < n; i++) {
		struct op *o = &lg->ops[i];
		for (int j = 0; j < o->nk; j++) {
			if (o->val[j] > maxv)
				maxv = o->val[j];
			if (o->val[j])
				note_value(c, o->val[j], o->key[j]);
		}
		if (o->acked == 1) {
			for (int j = 0; j < o->nk; j++)
				A[o->key[j]] = o->val[j];
			res->checked++;
		} else if (o->acked == 0) {
			inflight = (int)i; /* only the last op can be in flight */
		}
	}
	memcpy(B, A, sizeof B);
	if (inflight >= 0)
		for (int j = 0; j < lg->ops[inflight].nk; j++)
			B[lg->ops[inflight].key[j]] = lg->ops[inflight].val[j];
	next_val[c] = maxv;
	int used_a = 0, used_b = 0; /* for the in-flight batch */
	char key[32];
	for (int k = 0; k < NKEYS; k++) {
		int kl = keyname(key, sizeof key, c, k);
		void *v = NULL;
		size_t vl = 0;
		int rc = kvc_get(cl, key, (size_t)kl, &v, &vl, NULL);
		uint32_t got;
		if (rc == KVC_NOT_FOUND) {
			got = 0;
		} else if (rc == KVC_OK) {
			got = parse_val(v, vl, c);
		} else {
			fprintf(stderr, "cycle %d: get %s: %s\n", cycle, key, kvc_status_str(rc));
			if (rc == KVC_DATA_LOSS)
				res->crc++;
			else
				res->recovery++;
			kvc_free(v);
			continue;
		}
		kvc_free(v);
		if (!strict) {
			/* after a power cut in interval/never mode: any state from the
			 * key's history (a prefix of it), never an unknown value */
			if (got == UINT32_MAX || !in_history(c, got, k)) {
				res->phantom++;
				fprintf(stderr, "cycle %d: %s holds a value never written to it\n",
					cycle, key);
			} else if (got != A[k] && got != B[k]) {
				res->dropped++; /* unsynced writes dropped: allowed */
			}
			state[c][k] = got == UINT32_MAX ? A[k] : got;
			continue;
		}
		if (got == UINT32_MAX) {
			res->phantom++;
			fprintf(stderr, "cycle %d: %s holds a value never written\n", cycle, key);
		} else if (got == A[k]) {
			used_a |= A[k] != B[k];
		} else if (got == B[k]) {
			used_b = 1;
		} else if (got == 0) {
			res->lost++;
			fprintf(stderr, "cycle %d: %s lost (want v%u)\n", cycle, key, A[k]);
		} else if (A[k] == 0) {
			res->resurrect++;
			fprintf(stderr, "cycle %d: %s resurrected v%u (deleted)\n", cycle, key, got);
		} else {
			res->lost++;
			fprintf(stderr, "cycle %d: %s holds v%u, want v%u\n", cycle, key, got, A[k]);
		}
		state[c][k] = got == UINT32_MAX ? A[k] : got;
	}
	if (strict && inflight >= 0 && lg->ops[inflight].type == OP_BATCH && used_a && used_b) {
		res->torn++;
		fprintf(stderr, "cycle %d: client %d's in-flight batch is partly visible\n", cycle, c);
	}
}

/* --- power cut ----------------------------------------------------------------------- */

struct pfile {
	char path[300];
	long long size, synced;
	long long dlo, dhi; /* bytes written since the last sync: [dlo, dhi) */
	int gone;
};
struct pdirop {
	char type;
	char a[300], b[300];
};

static struct pfile *pf_find(struct pfile *f, int *n, const char *path, int create)
{
	for (int i = 0; i < *n; i++)
		if (!f[i].gone && strcmp(f[i].path, path) == 0)
			return &f[i];
	if (!create || *n >= 4096)
		return NULL;
	struct pfile *x = &f[(*n)++];
	memset(x, 0, sizeof *x);
	x->dlo = LLONG_MAX;
	snprintf(x->path, sizeof x->path, "%s", path);
	return x;
}

/* Replay the shim's journal and discard a random part of what was not
 * durable: names created, renamed or removed since the last directory
 * fsync are undone from a random point on (in reverse order), and every
 * file loses a random part of the bytes written since its last fsync
 * (a cut, sometimes with a zeroed block before it). Returns the number of
 * bytes discarded. */
static long long powercut(void)
{
	static struct pfile f[4096];
	static struct pdirop ops[4096];
	int nf = 0, nops = 0;
	long long discarded = 0;
	FILE *j = fopen(journal, "r");
	if (!j)
		return 0;
	char line[800], a[300], b[300];
	long long x, y;
	while (fgets(line, sizeof line, j)) {
		struct pfile *p;
		if (sscanf(line, "C %299s", a) == 1) {
			p = pf_find(f, &nf, a, 1);
			if (p) {
				p->size = p->synced = 0;
			}
			if (nops < 4096)
				ops[nops++] = (struct pdirop){'C', "", ""};
			snprintf(ops[nops - 1].a, sizeof ops[0].a, "%s", a);
		} else if (sscanf(line, "W %299s %lld %lld", a, &x, &y) == 3) {
			p = pf_find(f, &nf, a, 1);
			if (p && x + y > p->size)
				p->size = x + y;
			if (p && x < p->dlo)
				p->dlo = x;
			if (p && x + y > p->dhi)
				p->dhi = x + y;
		} else if (sscanf(line, "T %299s %lld", a, &x) == 2) {
			p = pf_find(f, &nf, a, 1);
			if (p) {
				p->size = x;
				if (p->synced > x)
					p->synced = x;
				if (p->dhi > x)
					p->dhi = x;
			}
		} else if (sscanf(line, "S %299s", a) == 1) {
			p = pf_find(f, &nf, a, 0);
			if (p) {
				p->synced = p->size;
				p->dlo = LLONG_MAX;
				p->dhi = 0;
			}
		} else if (line[0] == 'D') {
			nops = 0;
		} else if (sscanf(line, "R %299s %299s", a, b) == 2) {
			struct pfile *src = pf_find(f, &nf, a, 0), *dst = pf_find(f, &nf, b, 1);
			if (dst) {
				dst->size = src ? src->size : -1;
				dst->synced = src ? src->synced : -1;
			}
			if (src)
				src->gone = 1;
			if (nops < 4096) {
				ops[nops] = (struct pdirop){'R', "", ""};
				snprintf(ops[nops].a, sizeof ops[0].a, "%s", a);
				snprintf(ops[nops].b, sizeof ops[0].b, "%s", b);
				nops++;
			}
		} else if (sscanf(line, "U %299s %299s", a, b) == 2) {
			p = pf_find(f, &nf, a, 0);
			if (p)
				p->gone = 1;
			if (nops < 4096) {
				ops[nops] = (struct pdirop){'U', "", ""};
				snprintf(ops[nops].a, sizeof ops[0].a, "%s", a);
				snprintf(ops[nops].b, sizeof ops[0].b, "%s", b);
				nops++;
			}
		}
	}
	fclose(j);
	/* 1. file contents: keep the synced part and a random part of the rest */
	for (int i = 0; i < nf; i++) {
		struct pfile *p = &f[i];
		/* 1a. writes since the last sync into space the file already had
		 * (kvd's zeros written ahead of the active segment, invariant 7
		 * of kv_engine.c): a random tail of them never reached the disk,
		 * and those bytes read as the zeros they were before */
		long long hi = p->dhi < p->synced ? p->dhi : p->synced;
		if (!p->gone && p->dlo < hi) {
			long long at = p->dlo + (long long)(rnd() % (uint64_t)(hi - p->dlo + 1));
			int fd = at < hi ? open(p->path, O_WRONLY) : -1;
			if (fd >= 0) {
				static const char zero[4096];
				for (long long o = at; o < hi; o += (long long)sizeof zero) {
					size_t n = hi - o < (long long)sizeof zero ? (size_t)(hi - o)
										   : sizeof zero;
					if (pwrite(fd, zero, n, o) == (ssize_t)n)
						discarded += (long long)n;
				}
				close(fd);
			}
		}
		if (p->gone || p->size < 0 || p->synced < 0 || p->size <= p->synced)
			continue;
		struct stat st;
		if (stat(p->path, &st) != 0)
			continue;
		long long keep = p->synced + (long long)(rnd() % (uint64_t)(p->size - p->synced + 1));
		if (keep > st.st_size)
			keep = st.st_size;
		discarded += st.st_size - keep;
		if (truncate(p->path, keep) != 0)
			continue;
		if (rnd() % 2 && keep - p->synced > 512) { /* a page never written back */
			long long at = p->synced + (long long)(rnd() % (uint64_t)(keep - p->synced - 512));
			int fd = open(p->path, O_WRONLY);
			if (fd >= 0) {
				char zero[512] = {0};
				if (pwrite(fd, zero, sizeof zero, at) == (ssize_t)sizeof zero)
					discarded += 512;
				close(fd);
			}
		}
	}
	/* 2. names: undo the directory operations after a random point */
	int k = nops ? (int)(rnd() % (uint64_t)(nops + 1)) : 0;
	for (int i = nops - 1; i >= k; i--) {
		if (ops[i].type == 'C') {
			unlink(ops[i].a);
		} else if (ops[i].type == 'R') {
			rename(ops[i].b, ops[i].a);
		} else if (ops[i].type == 'U' && strcmp(ops[i].b, "-") != 0) {
			if (link(ops[i].b, ops[i].a) == 0)
				discarded++;
		}
	}
	/* kept until the next cut: when the check after this one fails, the
	 * directory kept for inspection holds the journal that explains it */
	char prev[sizeof journal + 8];
	snprintf(prev, sizeof prev, "%s.prev", journal);
	rename(journal, prev);
	return discarded;
}

int main(int argc, char **argv)
{
	int cycles = 200, nclients = 4, opt;
	const char *modes_arg = "all";
	uint64_t seed = (uint64_t)time(NULL);
	while ((opt = getopt(argc, argv, "n:c:s:m:vp")) != -1) {
		switch (opt) {
		case 'n': cycles = atoi(optarg); break;
		case 'c': nclients = atoi(optarg); break;
		case 's': seed = strtoull(optarg, NULL, 10); break;
		case 'm': modes_arg = optarg; break;
		case 'v': verbose = 1; break;
		case 'p': powercut_mode = 1; break;
		default:
			fprintf(stderr, "usage: torture [-n CYCLES] [-c CLIENTS] [-s SEED] "
					"[-m always|interval|never|all] [-p] [-v]\n");
			return 2;
		}
	}
	if (nclients < 1 || nclients > MAXC) {
		fprintf(stderr, "torture: 1..%d clients\n", MAXC);
		return 2;
	}
	/* kvd's orphaned merge workers come to us; see reap_orphans() */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	kvd_path = getenv("KVD") ? getenv("KVD") : "build/kvd";
	shim_path = getenv("POWERCUT_SHIM") ? getenv("POWERCUT_SHIM") : "build/libpowercut.so";
	snprintf(dir, sizeof dir, "/tmp/kvd-torture.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(datadir, sizeof datadir, "%s/data", dir);
	snprintf(sock, sizeof sock, "%s/kvd.sock", dir);
	snprintf(logpath, sizeof logpath, "%s/kvd.log", dir);
	snprintf(journal, sizeof journal, "%s/journal", dir);
	snprintf(bakdir, sizeof bakdir, "%s/unlinked", dir);
	if (powercut_mode) {
		char rp[PATH_MAX];
		if (!realpath(shim_path, rp)) {
			fprintf(stderr, "torture: %s: %s\n", shim_path, strerror(errno));
			return 2;
		}
		shim_path = strdup(rp);
		mkdir(bakdir, 0755);
		mkdir(datadir, 0750);
	}
	logs = mmap(NULL, sizeof(struct clog) * MAXC, PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (logs == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	rnd_state = seed;
	const char *modes[3] = {"always", "interval:50", "never"};
	struct result res = {0};
	int merges_asked = 0;
	uint64_t t0 = now_ms();
	int cyc;
	for (cyc = 0; cyc < cycles; cyc++) {
		const char *mode = strcmp(modes_arg, "all") == 0 ? modes[cyc % 3]
				   : strcmp(modes_arg, "interval") == 0 ? "interval:50"
									 : modes_arg;
		pid_t kvd = start_kvd(mode);
		if (wait_ready(kvd) < 0) {
			res.recovery++;
			fprintf(stderr, "cycle %d: kvd did not come up (see %s)\n", cyc, logpath);
			kill_wait(kvd, SIGKILL);
			break;
		}
		memset(logs, 0, sizeof(struct clog) * (size_t)nclients);
		pid_t cl[MAXC];
		for (int c = 0; c < nclients; c++) {
			uint64_t s = rnd();
			cl[c] = fork();
			if (cl[c] == 0)
				client_main(c, s);
		}
		unsigned run = 20 + (unsigned)(rnd() % 120);
		if (rnd() % 3 == 0) { /* a merge racing the kill */
			sleep_ms(run / 2);
			kvc_client *mc = NULL;
			if (kvc_connect(sock, 1000, &mc, NULL, 0) == KVC_OK) {
				if (kvc_merge(mc, 0, NULL) == KVC_OK)
					merges_asked++;
				kvc_close(mc);
			}
			sleep_ms(run / 2);
		} else {
			sleep_ms(run);
		}
		kill_wait(kvd, SIGKILL); /* the crash */
		long long lost_bytes = 0;
		for (int c = 0; c < nclients; c++) {
			int done = 0;
			for (int i = 0; i < 2000 && !done; i++) {
				done = waitpid(cl[c], NULL, WNOHANG) == cl[c];
				if (!done)
					sleep_ms(5);
			}
			if (!done) {
				kill(cl[c], SIGKILL);
				waitpid(cl[c], NULL, 0);
			}
		}
		reap_orphans();
		if (powercut_mode) /* the clients are gone: now the power fails */
			lost_bytes = powercut();
		(void)lost_bytes;
		/* restart and check */
		kvd = start_kvd(mode);
		if (wait_ready(kvd) < 0) {
			res.recovery++;
			fprintf(stderr, "cycle %d: recovery failed (see %s)\n", cyc, logpath);
			kill_wait(kvd, SIGKILL);
			break;
		}
		kvc_client *vc = NULL;
		if (kvc_connect(sock, 2000, &vc, NULL, 0) != KVC_OK) {
			res.recovery++;
			kill_wait(kvd, SIGKILL);
			break;
		}
		kvc_set_timeout(vc, 10000);
		int strict = !powercut_mode || strcmp(mode, "always") == 0;
		for (int c = 0; c < nclients; c++)
			verify_client(vc, c, &res, cyc, strict);
		kvc_close(vc);
		kill_wait(kvd, SIGTERM);
		reap_orphans();
		if (verbose)
			printf("cycle %d (%s): ok so far, %llu acknowledged writes checked\n", cyc, mode,
			       (unsigned long long)res.checked);
		if (res.lost + res.phantom + res.resurrect + res.torn + res.recovery + res.crc)
			break;
	}
	uint64_t fails = res.lost + res.phantom + res.resurrect + res.torn + res.recovery + res.crc;
	printf("torture%s: %d cycles (%s, %d clients, seed %llu, %d merges asked) in %.1f s: "
	       "%llu acknowledged writes checked, failures %llu (lost %llu, never written %llu, "
	       "resurrected %llu, torn batches %llu, failed recoveries %llu, checksum errors "
	       "%llu)%s\n",
	       powercut_mode ? " (power cut)" : "", cyc, modes_arg, nclients,
	       (unsigned long long)seed, merges_asked,
	       (double)(now_ms() - t0) / 1000.0, (unsigned long long)res.checked,
	       (unsigned long long)fails, (unsigned long long)res.lost,
	       (unsigned long long)res.phantom, (unsigned long long)res.resurrect,
	       (unsigned long long)res.torn, (unsigned long long)res.recovery,
	       (unsigned long long)res.crc, "");
	if (powercut_mode)
		printf("torture (power cut): %llu unsynced key states rolled back "
		       "(allowed in interval/never mode)\n",
		       (unsigned long long)res.dropped);
	if (fails) {
		fprintf(stderr, "torture: data kept in %s for inspection\n", dir);
		return 1;
	}
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "torture: could not remove %s\n", dir);
	return 0;
}
