#!/bin/sh
# bench_redis.sh — `make bench-redis`: kvd against Redis (with AOF) on this
# machine, side by side, in the same invocation.
#
# For each durability mode pair (kvd --sync always <-> appendfsync always,
# interval:1000 <-> everysec, never <-> no) both servers run on fresh temp
# directories and Unix sockets, hold the same 1M keys (16-byte keys
# "key:%012d", 100-byte values), and take the same workload: SET/put and GET
# of random keys in a 1M-key space at c1P1, c50P1 and c50P16 —
# redis-benchmark for Redis, `kvctl bench` for kvd (both one client thread).
# Prints one table: requests/s, p99 and the server's and the client's CPU
# use per side and the ratio kvd/Redis, then memory per key after loading 1M keys and the restart time to the
# first successful ping with 1M keys (Redis: AOF load; kvd: hint files).
#
# Env: KVD, KVCTL (binaries; default build/kvd, build/kvctl), HICCUP
#      (build/bench_hiccup: run for 2 s before the first and after the last
#      cell, to show the stalls of the machine itself; skipped if missing),
#      BENCH_QUICK=1 (a fifth of the requests), BENCH_RUNS (runs per side
#      and cell, interleaved, best reported; default 2), BENCH_MODES (default
#      "always interval never"), BENCH_KEYS (default 1000000),
#      BENCH_NO_COMPACTION=1 (no background compaction on either side:
#      Redis --auto-aof-rewrite-percentage 0, kvd --merge-auto no; by default
#      both run theirs, and a fork for it may land inside a cell),
#      BENCH_PIN=1 (both servers, with their threads and children, on CPU 0
#      and both clients on CPU 1, with taskset: the same placement for both
#      sides instead of the scheduler's; see README "Against Redis").
# Invariants: every server started here is stopped by pid in the EXIT trap
# (SIGTERM, SIGKILL after 10 s); every wait is bounded; temp dirs removed.
set -u

KVD=${KVD:-build/kvd}
KVCTL=${KVCTL:-build/kvctl}
HICCUP=${HICCUP:-build/bench_hiccup}
QUICK=${BENCH_QUICK:-0}
if [ "${BENCH_NO_COMPACTION:-0}" = 1 ]; then
	R_EXTRA="--auto-aof-rewrite-percentage 0"
	K_EXTRA="--merge-auto no"
else
	R_EXTRA=
	K_EXTRA=
fi
MODES=${BENCH_MODES:-"always interval never"}
RUNS=${BENCH_RUNS:-2}
KEYS=${BENCH_KEYS:-1000000}
if [ "${BENCH_PIN:-0}" = 1 ]; then
	if ! command -v taskset >/dev/null 2>&1 || [ "$(nproc)" -lt 2 ]; then
		echo "bench-redis: BENCH_PIN=1 needs taskset and two CPUs" >&2
		exit 1
	fi
	ON_SRV="taskset -c 0"
	ON_CLI="taskset -c 1"
else
	ON_SRV=
	ON_CLI=
fi

# --- tools ----------------------------------------------------------------------
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1 ||
	! command -v redis-cli >/dev/null 2>&1; then
	echo "bench-redis: installing redis-server and redis-tools (apt-get)"
	if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
	$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
		redis-server redis-tools >/dev/null || {
		echo "bench-redis: cannot install Redis" >&2
		exit 1
	}
fi
for x in "$KVD" "$KVCTL"; do
	[ -x "$x" ] || { echo "bench-redis: $x is missing (run make)" >&2; exit 1; }
done

T=$(mktemp -d "${TMPDIR:-/tmp}/bench-redis.XXXXXX") || exit 1
RPID=
KPID=
stop_pid() { # pid: SIGTERM, wait up to 10 s, then SIGKILL
	[ -n "$1" ] || return 0
	kill -TERM "$1" 2>/dev/null || return 0
	n=0
	while kill -0 "$1" 2>/dev/null && [ $n -lt 200 ]; do
		sleep 0.05
		n=$((n + 1))
	done
	kill -KILL "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	return 0
}
cleanup() {
	stop_pid "$RPID"
	stop_pid "$KPID"
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

RS=$T/redis.sock
KS=$T/kvd.sock
RD=$T/redis
KD=$T/kvd
mkdir -p "$RD" "$KD"

now_ms() { date +%s%3N; }

redis_fsync() {
	case $1 in always) echo always ;; interval) echo everysec ;; never) echo no ;; esac
}
kvd_sync() {
	case $1 in always) echo always ;; interval) echo interval:1000 ;; never) echo never ;; esac
}

# start_redis MODE: start on $RD (kept across modes), wait for PING. Sets
# RPID and RESTART_MS (exec to first successful ping).
start_redis() {
	t0=$(now_ms)
	$ON_SRV redis-server --port 0 --unixsocket "$RS" --save '' --appendonly yes \
		--appendfsync "$(redis_fsync "$1")" --dir "$RD" --logfile "$T/redis.log" $R_EXTRA \
		>/dev/null 2>&1 &
	RPID=$!
	n=0
	until redis-cli -s "$RS" ping 2>/dev/null | grep -q PONG; do
		n=$((n + 1))
		if [ $n -gt 6000 ] || ! kill -0 "$RPID" 2>/dev/null; then
			echo "bench-redis: redis-server did not start:" >&2
			tail -5 "$T/redis.log" >&2
			exit 1
		fi
		sleep 0.005
	done
	RESTART_MS=$(($(now_ms) - t0))
}

start_kvd() {
	t0=$(now_ms)
	$ON_SRV "$KVD" --data-dir "$KD" --socket "$KS" --sync "$(kvd_sync "$1")" --log-level warn $K_EXTRA \
		>>"$T/kvd.log" 2>&1 &
	KPID=$!
	n=0
	until "$KVCTL" -s "$KS" ping >/dev/null 2>&1; do
		n=$((n + 1))
		if [ $n -gt 6000 ] || ! kill -0 "$KPID" 2>/dev/null; then
			echo "bench-redis: kvd did not start:" >&2
			tail -5 "$T/kvd.log" >&2
			exit 1
		fi
		sleep 0.005
	done
	RESTART_MS=$(($(now_ms) - t0))
}

# --- load 1M keys into both ----------------------------------------------------------
load_both() {
	awk -v n="$KEYS" 'BEGIN {
		v = sprintf("%0100d", 0); gsub(/0/, "x", v)
		for (i = 0; i < n; i++)
			printf "*3\r\n$3\r\nSET\r\n$16\r\n%s\r\n$100\r\n%s\r\n", sprintf("key:%012d", i), v
	}' | redis-cli -s "$RS" --pipe >"$T/load.out" 2>&1 ||
		{ echo "bench-redis: loading Redis failed:" >&2; tail -3 "$T/load.out" >&2; exit 1; }
	"$KVCTL" -s "$KS" bench -t put --seq -n "$KEYS" -r "$KEYS" -c 50 -P 64 --json \
		>"$T/load.json" || { echo "bench-redis: loading kvd failed" >&2; exit 1; }
}

jfield() { # FILE KEY: a number field of a one-line JSON object
	sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p" "$1" | head -1
}

# --- one cell ------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # PID: user + system CPU of the whole process so far, in clock ticks
	awk '{ sub(/^.*\) /, ""); print $12 + $13 }' /proc/"$1"/stat 2>/dev/null || echo 0
}
srv_pct() { # TICKS0 TICKS1 MS: percent of one core over MS of wall time
	awk -v a="$1" -v b="$2" -v ms="$3" -v hz="$CLK_TCK" \
		'BEGIN { printf "%.0f", (b - a) * 100000 / hz / (ms > 0 ? ms : 1) }'
}
# run_redis OP C P N / run_kvd OP C P N: one run each; set r_rps r_p99 r_cpu
# (client) r_srv (server) / k_*
run_redis() {
	s0=$(cpu_ticks "$RPID")
	t0=$(now_ms)
	# the subshell's `times`: its children's CPU on the second line ("0m1.23s 0m0.45s")
	rb_times=$($ON_CLI redis-benchmark -s "$RS" -t "$1" -d 100 -r "$KEYS" -c "$2" -P "$3" -n "$4" \
		--csv >"$T/rb.csv" 2>"$T/rb.err"; times)
	t1=$(now_ms)
	r_srv=$(srv_pct "$s0" "$(cpu_ticks "$RPID")" $((t1 - t0)))
	r_rps=$(awk -F'"' 'NR==2 {print $4}' "$T/rb.csv")
	r_p99=$(awk -F'"' 'NR==2 {print $14}' "$T/rb.csv")
	r_cpu=$(echo "$rb_times" | awk -v ms=$((t1 - t0)) 'NR==2 {
		split($1, u, "m"); split($2, y, "m")
		printf "%.0f", (u[1] * 60 + u[2] + y[1] * 60 + y[2]) * 100000 / (ms > 0 ? ms : 1) }')
}
run_kvd() {
	s0=$(cpu_ticks "$KPID")
	t0=$(now_ms)
	if ! $ON_CLI "$KVCTL" -s "$KS" bench -t "$1" -d 100 -r "$KEYS" -c "$2" -P "$3" -n "$4" --json \
		>"$T/kb.json" 2>"$T/kb.err"; then
		echo "bench-redis: kvctl bench failed ($1 c$2 P$3):" >&2
		cat "$T/kb.err" >&2
		FAILED=1
	fi
	t1=$(now_ms)
	k_srv=$(srv_pct "$s0" "$(cpu_ticks "$KPID")" $((t1 - t0)))
	k_rps=$(jfield "$T/kb.json" rps)
	k_p99=$(jfield "$T/kb.json" p99_ms)
	k_cpu=$(jfield "$T/kb.json" cpu_pct)
}
# better A B: 1 if the run (rps A) beats the best so far (rps B)
better() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { exit !(a > b) }'; }

# cell MODE OP C P N: RUNS runs per side, interleaved (Redis, kvd, Redis,
# kvd ...: the disk's speed drifts over seconds, so neither side gets all
# the good or bad moments); each side's best run (by ops/s) is reported.
# One line "mode op cell rps p99 kvd_rps kvd_p99 kvd_cpu redis_cpu redis_srv
# kvd_srv" to $T/table.
cell() {
	mode=$1 op=$2 c=$3 p=$4 n=$5
	rop=set
	kop=put
	[ "$op" = GET ] && rop=get && kop=get
	br_rps=0 br_p99=0 br_cpu=0 br_srv=0 bk_rps=0 bk_p99=0 bk_cpu=0 bk_srv=0
	i=0
	while [ $i -lt "$RUNS" ]; do
		run_redis $rop "$c" "$p" "$n"
		if better "$r_rps" "$br_rps"; then br_rps=$r_rps br_p99=$r_p99 br_cpu=$r_cpu br_srv=$r_srv; fi
		run_kvd $kop "$c" "$p" "$n"
		if better "$k_rps" "$bk_rps"; then bk_rps=$k_rps bk_p99=$k_p99 bk_cpu=$k_cpu bk_srv=$k_srv; fi
		i=$((i + 1))
	done
	echo "$mode $op c${c}P$p $br_rps $br_p99 $bk_rps $bk_p99 $bk_cpu $br_cpu $br_srv $bk_srv" >>"$T/table"
	printf '  %-8s %-4s c%sP%-3s Redis %9.0f/s p99 %6.3f ms   kvd %9.0f/s p99 %6.3f ms\n' \
		"$mode" "$op" "$c" "$p" "$br_rps" "$br_p99" "$bk_rps" "$bk_p99" >&2
}

# requests per cell: about 2-4 s each on this kind of machine
nreq() { # MODE C P
	if [ "$2" = 1 ]; then
		if [ "$1" = always ]; then n=20000; else n=50000; fi
	elif [ "$3" = 1 ]; then
		if [ "$1" = always ]; then n=100000; else n=200000; fi
	else
		n=1000000
	fi
	[ "$QUICK" = 1 ] && n=$((n / 5))
	echo $n
}

# --- main -------------------------------------------------------------------------------------
FAILED=0
: >"$T/table"
first=1
echo "bench-redis: kvd $("$KVD" --version 2>&1 | head -1) vs $(redis-server --version | cut -d' ' -f1-3)" >&2
hiccup() { # the machine's own stalls, both CPUs spinning, nothing else running
	if [ -x "$HICCUP" ]; then "$HICCUP" -t 2 2>&1; else echo "($HICCUP missing: not measured)"; fi
}
hic0=$(hiccup)
for mode in $MODES; do
	start_redis "$mode"
	r_start=$RESTART_MS
	start_kvd "$mode"
	k_start=$RESTART_MS
	if [ $first = 1 ]; then
		echo "bench-redis: loading $KEYS keys into both ($mode)" >&2
		load_both
		r_keys=$(redis-cli -s "$RS" dbsize | tr -d '\r')
		r_mem=$(redis-cli -s "$RS" info memory | tr -d '\r' | sed -n 's/^used_memory:\(.*\)/\1/p')
		r_rss=$(grep VmRSS /proc/"$RPID"/status | awk '{print $2 * 1024}')
		"$KVCTL" -s "$KS" stats --json >"$T/stats.json"
		k_keys=$(jfield "$T/stats.json" keys)
		k_kd=$(jfield "$T/stats.json" keydir_bytes)
		k_rss=$(grep VmRSS /proc/"$KPID"/status | awk '{print $2 * 1024}')
		k_anon=$(grep RssAnon /proc/"$KPID"/status | awk '{print $2 * 1024}')
		# restart with the keys: Redis replays its AOF, kvd reads hint files
		stop_pid "$RPID"
		RPID=
		stop_pid "$KPID"
		KPID=
		start_redis "$mode"
		r_restart=$RESTART_MS
		start_kvd "$mode"
		k_restart=$RESTART_MS
		r_keys2=$(redis-cli -s "$RS" dbsize | tr -d '\r')
		"$KVCTL" -s "$KS" stats --json >"$T/stats2.json"
		k_keys2=$(jfield "$T/stats2.json" keys)
		first=0
	fi
	echo "bench-redis: mode $mode (Redis started in ${r_start} ms, kvd in ${k_start} ms)" >&2
	sync # the load's dirty pages reach the disk before any cell is timed
	sleep 1
	for cp in "1 1" "50 1" "50 16"; do
		set -- $cp
		n=$(nreq "$mode" "$1" "$2")
		cell "$mode" SET "$1" "$2" "$n"
		cell "$mode" GET "$1" "$2" "$n"
	done
	stop_pid "$RPID"
	RPID=
	stop_pid "$KPID"
	KPID=
done

hic1=$(hiccup)

# --- the table ----------------------------------------------------------------------------------
echo
echo "kvd vs Redis $(redis-server --version | cut -d' ' -f3 | cut -d= -f2) (AOF), Unix sockets, 100-byte values, random keys in a ${KEYS}-key space,"
echo "one client thread on each side (redis-benchmark / kvctl bench), best of $RUNS interleaved runs per side. p99 in ms."
echo "Win: ratio >= 1.2 and kvd p99 <= Redis p99."
[ -n "$K_EXTRA" ] && echo "Background compaction off on both sides (BENCH_NO_COMPACTION=1)."
[ -n "$ON_SRV" ] && echo "Servers on CPU 0, clients on CPU 1 (BENCH_PIN=1)."
echo
awk '
BEGIN {
	printf "%-8s %-3s %-6s | %9s %7s %4s %4s | %9s %7s %4s %4s | %5s %s\n", "mode", "op", "cell", \
		"Redis/s", "p99", "srv%", "cli%", "kvd/s", "p99", "srv%", "cli%", "ratio", "verdict"
	print "-------------------+-----------------------------+-----------------------------+-----------------"
}
{
	ratio = ($4 > 0) ? $6 / $4 : 0
	v = (ratio >= 1.2 && $7 <= $5) ? "win" : (ratio >= 1.2 ? "p99 loses" : (($7 <= $5) ? "rate loses" : "loses"))
	printf "%-8s %-3s %-6s | %9.0f %7.3f %4.0f %4.0f | %9.0f %7.3f %4.0f %4.0f | %5.2f %s\n", \
		$1, $2, $3, $4, $5, $10, $9, $6, $7, $11, $8, ratio, v
}' "$T/table"
echo "(modes: always = kvd --sync always / appendfsync always; interval = interval:1000 / everysec;"
echo " never = never / appendfsync no. srv% = the server process's CPU use, cli% = the benchmark"
echo " client's (user + sys over wall time, 100 = one core; kvd polls for its next request up to"
echo " --poll-us before it sleeps, see README \"Polling\"): Redis on the left, kvd on the right.)"
if [ -n "${r_keys:-}" ]; then
	echo
	awk -v rk="$r_keys" -v rm="$r_mem" -v rr="$r_rss" -v kk="$k_keys" -v kd="$k_kd" \
		-v kr="$k_rss" -v ka="$k_anon" 'BEGIN {
		printf "memory per key after loading %d keys:\n", rk
		printf "  Redis used_memory %6.1f B/key   (process RSS %6.1f B/key)\n", rm / rk, rr / rk
		printf "  kvd   keydir      %6.1f B/key   (process RSS %6.1f B/key, anonymous %6.1f B/key; %d keys)\n", kd / kk, kr / kk, ka / kk, kk
		printf "  ratio kvd/Redis: keydir %.2f, anonymous RSS %.2f (target <= 0.5)\n", kd / kk / (rm / rk), ka / kk / (rm / rk)
	}'
	awk -v r="$r_restart" -v k="$k_restart" -v rk="$r_keys2" -v kk="$k_keys2" 'BEGIN {
		printf "restart to the first successful ping with the keys loaded:\n"
		printf "  Redis %d ms (%d keys, AOF), kvd %d ms (%d keys, hint files); ratio %.2f (target <= 0.5)\n", r, rk, k, kk, (r > 0 ? k / r : 0)
	}'
fi
echo "stalls of the machine itself (bench_hiccup: a p99 near these gaps measures the machine):"
echo "  before the cells: $hic0"
echo "  after the cells:  $hic1"
[ "$FAILED" = 0 ] || { echo "bench-redis: some kvctl bench runs reported failed requests" >&2; exit 1; }
exit 0
