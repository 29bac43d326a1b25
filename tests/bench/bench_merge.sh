#!/bin/sh
# bench_merge.sh — `make bench-merge`: client latency with and without a merge
# running, and merge throughput next to the disk's sequential write rate.
#
# Loads a data set of about 1 GB (KEYS keys of 1,000-byte values, each written
# twice: half the records are dead), then runs the same 50-client get+put load
# (kvctl bench -c 50 -P 1) once idle and once while `kvctl merge` compacts it.
# Env: KVD, KVCTL, KEYS (default 500000), REQS (default 200000), DIR.
set -u
KVD=${KVD:-build/kvd}
KVCTL=${KVCTL:-build/kvctl}
KEYS=${KEYS:-500000}
REQS=${REQS:-200000}
DIR=${DIR:-$(mktemp -d /tmp/kvd-bench-merge.XXXXXX)}
SOCK=$DIR/kvd.sock
PID=
cleanup() {
	[ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
kv() { "$KVCTL" -s "$SOCK" "$@"; }

# the disk's sequential write rate, where the data lives
dd if=/dev/zero of="$DIR/seqprobe" bs=1M count=512 conv=fdatasync 2>"$DIR/dd.txt" >/dev/null
SEQ=$(awk '/copied/ { print $(NF-1), $NF }' "$DIR/dd.txt")
rm -f "$DIR/seqprobe"

"$KVD" --data-dir "$DIR/data" --socket "$SOCK" --sync interval:1000 --merge-auto no \
	--log-level warn 2>"$DIR/kvd.log" &
PID=$!
i=0
until kv ping >/dev/null 2>&1; do i=$((i + 1)); [ $i -gt 100 ] && { cat "$DIR/kvd.log"; exit 1; }; sleep 0.1; done

echo "bench-merge: loading $KEYS keys x 2 versions of 1,000-byte values (about $((KEYS * 2 * 1040 / 1000000)) MB)..."
kv -t 60000 bench -t put --seq -r "$KEYS" -n $((KEYS * 2)) -d 1000 -c 8 -P 16 >/dev/null ||
	{ echo "load failed"; exit 1; }
kv stats | grep -E '^(keys|disk_bytes|live_bytes|dead_bytes) '

run_load() {
	kv -t 60000 bench -t get,put -r "$KEYS" -n "$REQS" -d 1000 -c 50 -P 1 --json
}
echo "idle: 50 clients, get and put, no merge"
run_load >"$DIR/idle.json" || exit 1
echo "during a merge: the same load, started right after 'kvctl merge'"
kv merge >/dev/null
run_load >"$DIR/merge.json" || exit 1
state=$(kv stats | awk '$1 == "merge_state" { print $2 }')
echo "merge state when the load ended: $state (running = the whole load overlapped the merge)"
i=0
while [ "$(kv stats | awk '$1 == "merge_state" { print $2 }')" != idle ] && [ $i -lt 600 ]; do
	sleep 0.5; i=$((i + 1))
done
kv stats | grep -E '^(keys|disk_bytes|live_bytes|dead_bytes|merge_last_ms|merge_reclaimed_bytes) '
ms=$(kv stats | awk '$1 == "merge_last_ms" { print $2 }')
live=$(kv stats | awk '$1 == "live_bytes" { print $2 }')

python3 - "$DIR/idle.json" "$DIR/merge.json" "$ms" "$live" "$SEQ" <<'PY'
import json, sys
def load(p):
    out = {}
    for line in open(p):
        line = line.strip()
        if line.startswith('{'):
            o = json.loads(line)
            out[o.get('op')] = o
    return out
idle, merge = load(sys.argv[1]), load(sys.argv[2])
ms, live, seq = float(sys.argv[3] or 0), float(sys.argv[4] or 0), sys.argv[5]
def ms_(o, k):
    return float(o.get(k + '_ms', 0))
print()
print('%-6s %12s %10s %10s %12s %10s %10s %10s' % ('op', 'idle ops/s', 'idle p50', 'idle p99',
      'merge ops/s', 'merge p50', 'merge p99', 'p99 ratio'))
for op in ('get', 'put'):
    a, b = idle.get(op, {}), merge.get(op, {})
    pa, pb = ms_(a, 'p99'), ms_(b, 'p99')
    print('%-6s %12.0f %8.2fms %8.2fms %12.0f %8.2fms %8.2fms %9.2fx' % (op, float(a.get('rps', 0)),
          ms_(a, 'p50'), pa, float(b.get('rps', 0)), ms_(b, 'p50'), pb, pb / pa if pa else 0))
if ms > 0:
    print('\nmerge: %.0f MB of live data rewritten in %.1f s = %.0f MB/s; disk sequential write: %s'
          % (live / 1e6, ms / 1000, live / 1e6 / (ms / 1000), seq))
print('target: p99 during a merge <= 2x idle p99')
PY
