#!/bin/sh
# demo.sh — `make demo`: a narrated walkthrough of kvd using kvd and kvctl only,
# on a temporary data directory: first writes and reads, crash recovery
# (kill -9 mid-write, then a torn tail), compaction (a merge), statistics.
# It stops the daemon it started, whatever happens. Env: KVD, KVCTL.
set -u
KVD=${KVD:-build/kvd}
KVCTL=${KVCTL:-build/kvctl}
DEMO=$(mktemp -d /tmp/kvd-demo.XXXXXX)
DATA=$DEMO/data
SOCK=$DEMO/kvd.sock
LOG=$DEMO/kvd.log
PID=

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" 2>/dev/null || printf '\n==> %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
kv() { "$KVCTL" -s "$SOCK" "$@"; }

stop() {
	[ -n "$PID" ] || return 0
	kill -TERM "$PID" 2>/dev/null
	i=0
	while kill -0 "$PID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	kill -KILL "$PID" 2>/dev/null
	wait "$PID" 2>/dev/null
	PID=
}
cleanup() { stop; rm -rf "$DEMO"; }
trap cleanup EXIT INT TERM

start() {
	"$KVD" --data-dir "$DATA" --socket "$SOCK" --sync always --max-segment-size 256K \
		--log-level info >>"$LOG" 2>&1 &
	PID=$!
	i=0
	until kv ping >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt 100 ] || ! kill -0 "$PID" 2>/dev/null; then
			echo "kvd did not start; its log:"; cat "$LOG"; exit 1
		fi
		sleep 0.1
	done
}

say "1. Initialise: start kvd on an empty data directory ($DATA)"
echo "kvd --data-dir $DATA --socket $SOCK --sync always --max-segment-size 256K &"
start
run "$KVCTL" -s "$SOCK" ping

say "2. Write and read keys"
run "$KVCTL" -s "$SOCK" put user:1 alice
run "$KVCTL" -s "$SOCK" put user:2 bob
run "$KVCTL" -s "$SOCK" put session:42 temporary --ttl 60
echo "$ printf 'put user:3 carol\ndel user:2\n' | kvctl batch     (atomic)"
printf 'put user:3 carol\ndel user:2\n' | kv batch
run "$KVCTL" -s "$SOCK" get user:1; echo
run "$KVCTL" -s "$SOCK" scan user:
echo "$ kvctl get user:2   (deleted by the batch: exit status 1)"
kv get user:2; echo "exit status $?"

say "3. Crash recovery: kill -9 kvd in the middle of a stream of writes"
echo "a bulk loader pipes 1,000,000 puts through kvctl while we pull the plug..."
seq 0 999999 | sed 's/.*/put bulk:& value-&/' >"$DEMO/bulk.txt"
: >"$DEMO/acks.txt"
kv <"$DEMO/bulk.txt" >"$DEMO/acks.txt" 2>/dev/null &
LOADER=$!
i=0 # pull the plug once 20,000 puts are acknowledged (at most 10 s)
while [ "$(wc -l <"$DEMO/acks.txt")" -lt 20000 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
echo "$ kill -9 $PID"
kill -KILL "$PID"; wait "$PID" 2>/dev/null; PID=
wait "$LOADER" 2>/dev/null
acked=$(grep -c '^OK$' "$DEMO/acks.txt")
echo "the loader saw $acked acknowledged puts before kvd died"
SEG=$(ls "$DATA"/*.seg | tail -n 1)
echo "now tear the tail of the active segment, as a crash in the middle of a write() would:"
echo "append the first 40 bytes of a record (copied from the oldest segment): a write that
never completed, so was never acknowledged:"
FIRST=$(ls "$DATA"/*.seg | head -n 1)
echo "$ dd if=$(basename "$FIRST") bs=1 skip=32 count=40 >> $(basename "$SEG")"
dd if="$FIRST" bs=1 skip=32 count=40 2>/dev/null >>"$SEG"
echo "restart kvd; recovery scans the newest segment and cuts the torn record:"
: >"$LOG"
start
grep -E 'torn tail|serving' "$LOG" | sed 's/^<[0-9]>//; s/^/  kvd log: /'
n=$(kv scan bulk: --keys-only | wc -l)
echo "keys bulk:* recovered: $n (acknowledged before the crash: $acked)"
# read back every acknowledged key in one pipelined pass
grep -n '^OK$' "$DEMO/acks.txt" | cut -d: -f1 | awk '{ print "get bulk:" $1 - 1 }' |
	kv 2>/dev/null | grep -c '^(not found)$' >"$DEMO/missing.txt"
missing=$(cat "$DEMO/missing.txt")
echo "acknowledged puts missing after recovery: $missing"
run "$KVCTL" -s "$SOCK" put after:crash "appends land on a clean boundary"
run "$KVCTL" -s "$SOCK" get after:crash; echo

say "4. Compaction: overwrite the same 500 keys 30 times"
r=0
while [ $r -lt 30 ]; do
	k=0
	while [ $k -lt 500 ]; do echo "put hot:$k round-$r-................................................."; k=$((k + 1)); done
	r=$((r + 1))
done | kv >/dev/null
echo "$ du -sh data; kvctl stats (excerpt)"
du -sh "$DATA" | sed 's/^/  /'
kv stats | grep -E '^(keys|segments|disk_bytes|live_bytes|dead_bytes) ' | sed 's/^/  /'
run "$KVCTL" -s "$SOCK" -t 60000 merge --wait
echo "$ du -sh data; kvctl stats (excerpt)"
du -sh "$DATA" | sed 's/^/  /'
kv stats | grep -E '^(keys|segments|disk_bytes|live_bytes|dead_bytes) ' | sed 's/^/  /'
echo "every value is still there, e.g.:"
run "$KVCTL" -s "$SOCK" get hot:499; echo

say "5. Statistics"
run "$KVCTL" -s "$SOCK" stats

say "6. Stop kvd (SIGTERM: finish in-flight requests, sync, remove the socket)"
echo "$ kill -TERM $PID"
stop
tail -n 2 "$LOG" | sed 's/^<[0-9]>//; s/^/  kvd log: /'
echo
echo "demo finished; the temporary data directory is removed."
