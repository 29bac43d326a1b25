#!/bin/sh
# test_kvctl.sh — integration test of kvctl (and through it libkvclient)
# against a real kvd on a temporary data directory and socket.
#
# Environment (set by `make test`): KVD (kvd binary), KVCTL (kvctl binary),
# B (build dir). Plain POSIX sh: `make test` runs it with sh (dash).
#
# Invariants: every daemon or helper started here is killed by pid in the
# EXIT trap (SIGTERM, then SIGKILL after 5 s); every wait and loop is bounded;
# every case prints one PASS/FAIL line; the exit status is non-zero if any
# case failed.
set -u

KVD=${KVD:-build/kvd}
KVCTL=${KVCTL:-build/kvctl}
B=${B:-build}

T=$(mktemp -d "${TMPDIR:-/tmp}/kvctl-test.XXXXXX") || exit 1
S=$T/s.sock
PIDS=""
npass=0
nfail=0

stop_pid() { # pid: SIGTERM, wait up to 5 s, then SIGKILL
	kill -TERM "$1" 2>/dev/null || return 0
	n=0
	while kill -0 "$1" 2>/dev/null && [ $n -lt 50 ]; do
		sleep 0.1
		n=$((n + 1))
	done
	kill -KILL "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	return 0
}
cleanup() {
	for p in $PIDS; do stop_pid "$p"; done
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

pass() { echo "PASS: $1"; npass=$((npass + 1)); }
fail() { echo "FAIL: $1"; nfail=$((nfail + 1)); }

# run CMD...: stdout -> $T/out, stderr -> $T/err, exit status -> $rc
run() {
	"$@" >"$T/out" 2>"$T/err"
	rc=$?
}
errtxt() { head -c 400 "$T/err" | tr '\n' ' '; }

# check NAME WANT_RC WANT_STDOUT CMD...: exact stdout (trailing newlines aside)
check() {
	name=$1 want_rc=$2 want_out=$3
	shift 3
	run "$@"
	out=$(cat "$T/out")
	if [ "$rc" -eq "$want_rc" ] && [ "$out" = "$want_out" ]; then
		pass "$name"
	else
		fail "$name: exit $rc (want $want_rc), stdout '$(printf %s "$out" | head -c 200)' (want '$want_out'), stderr: $(errtxt)"
	fi
}

# check_err NAME WANT_RC PATTERN CMD...: exit status and a stderr pattern (grep -E)
check_err() {
	name=$1 want_rc=$2 pat=$3
	shift 3
	run "$@"
	if [ "$rc" -eq "$want_rc" ] && grep -Eq -- "$pat" "$T/err"; then
		pass "$name"
	else
		fail "$name: exit $rc (want $want_rc), stderr '$(errtxt)' (want /$pat/)"
	fi
}

kc() { "$KVCTL" -s "$S" "$@"; }

# hex of a file, no spaces
hexof() { od -An -v -tx1 "$1" | tr -d ' \n'; }

if [ ! -x "$KVCTL" ]; then
	fail "kvctl binary $KVCTL not found (build it first)"
	exit 1
fi
if [ ! -x "$KVD" ]; then
	fail "kvd binary $KVD not found (build it first)"
	exit 1
fi

# ---- cases that need no daemon -------------------------------------------------
check_err "no daemon: exit 3 and a message naming the socket" 3 \
	"cannot connect to $T/absent.sock: No such file or directory" \
	"$KVCTL" -s "$T/absent.sock" ping
run sh -c "echo ping | '$KVCTL' -s '$T/absent.sock'"
[ "$rc" -eq 3 ] && pass "no daemon, pipe mode: exit 3" || fail "no daemon, pipe mode: exit $rc (want 3)"
check_err "usage: unknown command -> 2" 2 "unknown command" "$KVCTL" -s "$S" frobnicate
check_err "usage: get without key -> 2" 2 "usage: kvctl get" "$KVCTL" -s "$S" get
check_err "usage: put without value -> 2" 2 "usage: kvctl put" "$KVCTL" -s "$S" put k
check_err "usage: bad --ttl -> 2" 2 "ttl" "$KVCTL" -s "$S" put k v --ttl soon
check_err "usage: unknown option -> 2" 2 "unknown option" "$KVCTL" -s "$S" get k --bogus
check_err "usage: bad hex -> 2" 2 "not valid hex" "$KVCTL" -s "$S" --hex get 0g
check_err "usage: empty key -> 2" 2 "must not be empty" "$KVCTL" -s "$S" get ""
check_err "usage: bad -t -> 2" 2 "timeout" "$KVCTL" -s "$S" -t xyz ping
run "$KVCTL" --version
if [ "$rc" -eq 0 ] && grep -q '^kvctl [0-9]' "$T/out"; then pass "--version"; else fail "--version: exit $rc"; fi

# A socket that accepts but never answers: the timeout must fire.
if command -v python3 >/dev/null 2>&1; then
	python3 -c 'import socket,sys,time
s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8); time.sleep(20)' "$T/mute.sock" &
	MUTE=$!
	PIDS="$PIDS $MUTE"
	n=0
	while [ ! -S "$T/mute.sock" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
	check_err "timeout: silent server -> exit 4 TIMEOUT" 4 "TIMEOUT" "$KVCTL" -s "$T/mute.sock" -t 300 ping
	stop_pid "$MUTE"
fi

# ---- start kvd -------------------------------------------------------------------
mkdir -p "$T/data"
"$KVD" --data-dir "$T/data" --socket "$S" >"$T/kvd.log" 2>&1 &
KVD_PID=$!
PIDS="$PIDS $KVD_PID"
ready=0
n=0
while [ $n -lt 100 ]; do # <= 10 s
	if ! kill -0 "$KVD_PID" 2>/dev/null; then break; fi
	if "$KVCTL" -s "$S" -t 1000 ping >/dev/null 2>&1; then
		ready=1
		break
	fi
	sleep 0.1
	n=$((n + 1))
done
if [ $ready = 0 ]; then
	fail "kvd did not become ready within 10 s; its log:"
	sed 's/^/    /' "$T/kvd.log" | head -30
	exit 1
fi
pass "kvd ready after $n polls"

# ---- basic commands -------------------------------------------------------------------
run kc ping
if [ "$rc" -eq 0 ] && grep -q '^PONG (kvd ' "$T/out"; then pass "ping"; else fail "ping: exit $rc, $(cat "$T/out") $(errtxt)"; fi
check "put" 0 "OK" kc put k1 v1
check "get" 0 "v1" kc get k1
run kc get k1
[ "$(wc -c <"$T/out")" -eq 2 ] && pass "get adds no newline when stdout is not a terminal" ||
	fail "get wrote $(wc -c <"$T/out") bytes for a 2-byte value"
check "put overwrites" 0 "OK" kc put k1 "value two"
check "get after overwrite" 0 "value two" kc get k1
check "put --sync" 0 "OK" kc put k2 v2 --sync
check "options after arguments and -s after the command" 0 "v2" "$KVCTL" get k2 -s "$S"
check "del" 0 "OK" kc del k1
check_err "get missing -> exit 1 and a message" 1 "key not found: k1" kc get k1
check_err "del missing -> exit 1" 1 "not found" kc del k1
check "value starting with '-' after --" 0 "OK" kc put dash -- -5
check "get it back" 0 "-5" kc get dash
check "sync" 0 "OK" kc sync
check "KVD_SOCKET is used without -s" 0 "v2" env KVD_SOCKET="$S" "$KVCTL" get k2

# ---- binary safety -------------------------------------------------------------------
i=0
: >"$T/all256"
while [ $i -lt 256 ]; do
	printf "\\$(printf %03o $i)" >>"$T/all256"
	i=$((i + 1))
done
cp "$T/all256" "$T/bin"
head -c 100000 /dev/urandom >>"$T/bin"
cat "$T/all256" >>"$T/bin"
if [ "$(wc -c <"$T/all256")" -ne 256 ]; then fail "test setup: all256 is not 256 bytes"; fi
run kc put binval - <"$T/bin"
if [ "$rc" -eq 0 ]; then
	kc get binval >"$T/bin.out" 2>"$T/err"
	cmp -s "$T/bin" "$T/bin.out" && pass "binary round trip (all 256 byte values + random)" ||
		fail "binary round trip: files differ ($(wc -c <"$T/bin.out") bytes back) $(errtxt)"
else
	fail "binary put: exit $rc $(errtxt)"
fi
run kc put empty - </dev/null
kc get empty >"$T/empty.out" 2>"$T/err"
rc2=$?
[ "$rc" -eq 0 ] && [ $rc2 -eq 0 ] && [ ! -s "$T/empty.out" ] && pass "empty value" ||
	fail "empty value: put $rc get $rc2, $(wc -c <"$T/empty.out") bytes"

# The largest value (64 MiB) goes through; one byte more is refused with a clear message.
head -c 67108864 /dev/urandom >"$T/max"
run kc -t 60000 put maxval - <"$T/max"
if [ "$rc" -eq 0 ] && kc -t 60000 get maxval >"$T/max.out" 2>"$T/err" && cmp -s "$T/max" "$T/max.out"; then
	pass "64 MiB value round trip"
else
	fail "64 MiB value: put exit $rc $(errtxt)"
fi
rm -f "$T/max.out"
cat "$T/max" "$T/all256" >"$T/toobig"
rm -f "$T/max"
run kc put big - <"$T/toobig"
if { [ "$rc" -eq 2 ] || [ "$rc" -eq 4 ]; } && grep -q "too large" "$T/err"; then
	pass "value above 64 MiB -> exit $rc with a clear message"
else
	fail "value above 64 MiB: exit $rc, stderr $(errtxt)"
fi
rm -f "$T/toobig"
check_err "a key that was too large was not stored" 1 "not found" kc get big

# ---- --hex ------------------------------------------------------------------------------
H=$(hexof "$T/all256")
check "--hex put, key and value = all 256 byte values" 0 "OK" kc --hex put "$H" "$H"
check "--hex get prints hex" 0 "$H" kc --hex get "$H"
kc --hex get "$H" >/dev/null 2>&1
run kc get "$(printf 'k\001')"
[ "$rc" -eq 1 ] && pass "--hex key is stored as bytes, not as its hex text" || fail "hex key lookup: exit $rc"
# every single-byte key, through pipe mode (one process) and back
i=0
: >"$T/hexcmds"
: >"$T/hexwant"
while [ $i -lt 256 ]; do
	x=$(printf %02x $i)
	echo "put $x 76$x" >>"$T/hexcmds"
	i=$((i + 1))
done
i=0
while [ $i -lt 256 ]; do
	x=$(printf %02x $i)
	echo "get $x" >>"$T/hexcmds"
	i=$((i + 1))
done
i=0
while [ $i -lt 256 ]; do echo OK >>"$T/hexwant"; i=$((i + 1)); done
i=0
while [ $i -lt 256 ]; do printf '76%02x\n' $i >>"$T/hexwant"; i=$((i + 1)); done
run kc --hex <"$T/hexcmds"
if [ "$rc" -eq 0 ] && cmp -s "$T/out" "$T/hexwant"; then
	pass "--hex: every single-byte key 00..ff put and read back"
else
	fail "--hex single-byte keys: exit $rc, $(diff "$T/hexwant" "$T/out" | head -5 | tr '\n' ' ') $(errtxt)"
fi
check "--hex CLI get of key 00" 0 "7600" kc --hex get 00
check "--hex CLI get of key 0a" 0 "760a" kc --hex get 0a
check "--hex CLI get of key ff" 0 "76ff" kc --hex get ff
run kc --hex scan --keys-only
n=$(grep -Ec '^[0-9a-f]{2}$' "$T/out")
[ "$rc" -eq 0 ] && [ "$n" -eq 256 ] && pass "--hex scan lists the 256 single-byte keys" ||
	fail "--hex scan: exit $rc, $n single-byte keys"

# the key size limit: 65536 bytes is fine, 65537 is refused (pipe mode: no argv limit)
k64=$(head -c 65536 /dev/zero | od -An -v -tx1 | tr -d ' \n' | tr 0 6)
printf 'put %s 01\nget %s\nput %s00 01\n' "$k64" "$k64" "$k64" >"$T/bigkey"
run kc --hex <"$T/bigkey"
l1=$(sed -n 1p "$T/out")
l2=$(sed -n 2p "$T/out")
l3=$(sed -n 3p "$T/out")
if [ "$l1" = OK ] && [ "$l2" = 01 ] && expr "$l3" : 'ERR USAGE: .*65537 bytes' >/dev/null && [ "$rc" -eq 4 ]; then
	pass "64 KiB key accepted, 64 KiB + 1 refused"
else
	fail "key limit: exit $rc, lines '$l1' '$l2' '$(printf %s "$l3" | head -c 120)'"
fi

# ---- batch -------------------------------------------------------------------------------------
printf '%s\n' '# a comment' 'put b1 one' 'put "b 2" "two words"' '' 'put b3 three 100' \
	"put b4 'single quoted'" 'put b5 "\x00\xff"' 'del b1' >"$T/batch"
run kc batch <"$T/batch"
if [ "$rc" -eq 0 ] && grep -q '^OK' "$T/out"; then pass "batch from stdin"; else fail "batch: exit $rc $(cat "$T/out") $(errtxt)"; fi
check_err "batch: deleted key is gone" 1 "not found" kc get b1
check "batch: quoted key and value with spaces" 0 "two words" kc get "b 2"
check "batch: put with ttl" 0 "three" kc get b3
check "batch: single quotes" 0 "single quoted" kc get b4
check "batch: \\x escapes" 0 "00ff" kc --hex get 6235
printf 'put c1 one\nput c2 two\nfrobnicate c3\n' >"$T/badbatch"
check_err "batch with a bad line -> exit 2, line number" 2 "line 3" kc batch <"$T/badbatch"
check_err "batch with a bad line applied nothing" 1 "not found" kc get c1
printf 'put 6331 6f6e65\ndel 6232\n' >"$T/hexbatch"
run kc --hex batch --sync <"$T/hexbatch"
[ "$rc" -eq 0 ] && pass "batch --hex --sync" || fail "batch --hex: exit $rc $(errtxt)"
check "batch --hex result" 0 "one" kc get c1
check_err "batch --hex: deleting an absent key is no error" 1 "not found" kc get b2

# ---- scan ------------------------------------------------------------------------------------
for i in 1 2 3 4 5; do kc put "p:$i" "val $i" >/dev/null 2>&1; done
kc put "q:1" other >/dev/null 2>&1
run kc scan p:
sort "$T/out" >"$T/scan.sorted"
printf 'p:%s\tval %s\n' 1 1 2 2 3 3 4 4 5 5 >"$T/scan.want"
[ "$rc" -eq 0 ] && cmp -s "$T/scan.sorted" "$T/scan.want" && pass "scan with prefix" ||
	fail "scan p: exit $rc, got: $(head -c 200 "$T/out" | tr '\n\t' '| ')"
run kc scan p: --keys-only
sort "$T/out" >"$T/scan.sorted"
printf 'p:%s\n' 1 2 3 4 5 >"$T/scan.want"
[ "$rc" -eq 0 ] && cmp -s "$T/scan.sorted" "$T/scan.want" && pass "scan --keys-only" ||
	fail "scan --keys-only: exit $rc, got: $(head -c 200 "$T/out" | tr '\n' '|')"
run kc scan p: --limit 2
[ "$rc" -eq 0 ] && [ "$(wc -l <"$T/out")" -eq 2 ] && pass "scan --limit 2" ||
	fail "scan --limit: exit $rc, $(wc -l <"$T/out") lines"
check "scan of an absent prefix prints nothing" 0 "" kc scan nothing-here:
run kc scan
grep -q '^q:1	other$' "$T/out" && grep -q '^b 2	two words$' "$T/out" && [ "$rc" -eq 0 ] &&
	pass "scan without prefix lists everything" || fail "scan all: exit $rc"
grep -q '^b5	\\x00\\xff$' "$T/out" && pass "scan escapes binary values" ||
	fail "scan escaping: $(grep '^b5' "$T/out" | head -c 100)"

# ---- stats -----------------------------------------------------------------------------------
run kc stats
[ "$rc" -eq 0 ] && grep -q '^keys ' "$T/out" && grep -q '^version ' "$T/out" && pass "stats" ||
	fail "stats: exit $rc $(errtxt)"
run kc stats --json
if [ "$rc" -eq 0 ] && python3 -m json.tool "$T/out" >/dev/null 2>&1 &&
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["keys"] > 0 and isinstance(d["segment"], list)' "$T/out"; then
	pass "stats --json is valid JSON"
else
	fail "stats --json: exit $rc, $(head -c 300 "$T/out")"
fi

# ---- merge (kvd may not implement it yet) ------------------------------------------------------
run kc merge --wait
if [ "$rc" -eq 0 ] && grep -q '^OK merge' "$T/out"; then
	pass "merge --wait"
elif [ "$rc" -eq 4 ] && grep -q UNIMPLEMENTED "$T/err"; then
	echo "SKIP: merge: kvd answers UNIMPLEMENTED"
else
	fail "merge --wait: exit $rc $(cat "$T/out") $(errtxt)"
fi

# ---- pipe mode ---------------------------------------------------------------------------------
awk 'BEGIN { for (i = 1; i <= 5000; i++) printf "put pk%d val%d\n", i, i;
             for (i = 1; i <= 5000; i++) printf "get pk%d\n", i }' >"$T/pipe.in"
awk 'BEGIN { for (i = 1; i <= 5000; i++) print "OK";
             for (i = 1; i <= 5000; i++) printf "val%d\n", i }' >"$T/pipe.want"
run kc <"$T/pipe.in"
lines=$(wc -l <"$T/out")
if [ "$rc" -eq 0 ] && [ "$lines" -eq 10000 ] && cmp -s "$T/out" "$T/pipe.want"; then
	pass "pipe mode: 10,000 commands, replies in order"
else
	fail "pipe mode: exit $rc, $lines lines, first difference: $(cmp "$T/out" "$T/pipe.want" 2>&1 | head -1) $(errtxt)"
fi
printf 'ping\nget pk1\nget nope\nput "sp ace" "a b"\nget "sp ace"\ndel nope\n' >"$T/pipe2.in"
printf 'PONG\nval1\n(not found)\nOK\na b\n(not found)\n' >"$T/pipe2.want"
run kc <"$T/pipe2.in"
[ "$rc" -eq 1 ] && cmp -s "$T/out" "$T/pipe2.want" && pass "pipe mode: not found only -> exit 1" ||
	fail "pipe mode not-found: exit $rc, got $(tr '\n' '|' <"$T/out")"
printf 'put a1 x\nbogus\nget a1\nput\nstats --json\nget a1\n' >"$T/pipe3.in"
run kc <"$T/pipe3.in"
l2=$(sed -n 2p "$T/out")
l3=$(sed -n 3p "$T/out")
last=$(tail -n 1 "$T/out")
if [ "$rc" -eq 4 ] && [ "$(sed -n 1p "$T/out")" = OK ] && expr "$l2" : 'ERR USAGE' >/dev/null &&
	[ "$l3" = x ] && expr "$(sed -n 4p "$T/out")" : 'ERR USAGE' >/dev/null &&
	sed -n 5p "$T/out" | python3 -m json.tool >/dev/null 2>&1 && [ "$last" = x ]; then
	pass "pipe mode: errors in place, barrier command in order, exit 4"
else
	fail "pipe mode errors: exit $rc, got $(head -c 300 "$T/out" | tr '\n' '|')"
fi
run sh -c "(echo 'put slow 1'; sleep 0.5; echo 'get slow'; sleep 0.3; echo 'get slow') | '$KVCTL' -s '$S'"
[ "$rc" -eq 0 ] && [ "$(tr '\n' ' ' <"$T/out")" = "OK 1 1 " ] && pass "pipe mode: slow input" ||
	fail "pipe mode slow input: exit $rc, $(tr '\n' '|' <"$T/out")"

# ---- TTL ---------------------------------------------------------------------------------------
check "put --ttl 1" 0 "OK" kc put ttlkey v --ttl 1
check "ttl key readable at once" 0 "v" kc get ttlkey
gone=0
n=0
while [ $n -lt 25 ]; do # <= 5 s
	sleep 0.2
	if ! kc get ttlkey >/dev/null 2>&1; then
		gone=1
		break
	fi
	n=$((n + 1))
done
[ $gone = 1 ] && pass "ttl key expires" || fail "ttl key still there after 5 s"
check "put --ttl 0 means no expiry" 0 "OK" kc put ttl0 v --ttl 0

# ---- bench (counts and exit codes only: no timing is ever asserted) -------------------------------
run "$KVCTL" -s "$S" bench -c 4 -P 4 -n 2000 -r 500 -t put,get,del,batch --batch-ops 3 --json
if [ "$rc" -eq 0 ] && [ "$(wc -l <"$T/out")" -eq 4 ] &&
	[ "$(grep -c '"requests":2000,' "$T/out")" -eq 4 ] &&
	[ "$(grep -c '"errors":0,' "$T/out")" -eq 4 ] &&
	grep -q '^{"op":"batch",.*"batch_ops":3,' "$T/out" &&
	python3 -c 'import json,sys
for l in open(sys.argv[1]): json.loads(l)' "$T/out" 2>/dev/null; then
	pass "bench --json: 4 tests, 2000 answered requests each, valid JSON"
else
	fail "bench --json: exit $rc, stdout '$(head -c 300 "$T/out")', stderr: $(errtxt)"
fi
run "$KVCTL" -s "$S" bench -c 3 --threads 2 -n 300 -r 50 --seq -t put
if [ "$rc" -eq 0 ] && grep -q '^== put: 300 requests' "$T/out" && grep -q 'p99' "$T/out" &&
	grep -q 'latency histogram' "$T/out"; then
	pass "bench: text report (percentiles, histogram), two threads"
else
	fail "bench text: exit $rc, stdout '$(head -c 300 "$T/out")', stderr: $(errtxt)"
fi
check "bench --seq -n N -r N writes every key once" 0 "bench-seq-check" sh -c \
	"'$KVCTL' -s '$S' bench -c 2 -n 20 -r 20 --seq -t put --keylen 8 --json >/dev/null &&
	 '$KVCTL' -s '$S' scan key: --keys-only | grep -c '^key:00[01][0-9]\$' | grep -qx 20 &&
	 echo bench-seq-check"
check_err "bench: unknown test -> 2" 2 "unknown test" "$KVCTL" -s "$S" bench -t frob
check_err "bench: key space too large for --keylen -> 2" 2 "cannot hold" "$KVCTL" -s "$S" bench --keylen 3 -r 100000
check_err "bench: no daemon -> 3" 3 "cannot connect" "$KVCTL" -s "$T/absent.sock" bench -n 10
if command -v python3 >/dev/null 2>&1; then # accepts, never answers
	python3 -c 'import socket,sys,time
s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8); time.sleep(20)' "$T/mute2.sock" &
	MUTE2=$!
	PIDS="$PIDS $MUTE2"
	n=0
	while [ ! -S "$T/mute2.sock" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
	check_err "bench: silent server -> exit 4 TIMEOUT" 4 "TIMEOUT" \
		"$KVCTL" -s "$T/mute2.sock" -t 300 bench -c 2 -n 5 -t put
	stop_pid "$MUTE2"
fi

# kvd dies in the middle of a run: the requests lost count as failures, exit 4.
S3=$T/s3.sock
mkdir -p "$T/data3"
"$KVD" --data-dir "$T/data3" --socket "$S3" >"$T/kvd3.log" 2>&1 &
KVD3=$!
PIDS="$PIDS $KVD3"
n=0
while [ $n -lt 100 ] && ! "$KVCTL" -s "$S3" -t 1000 ping >/dev/null 2>&1; do sleep 0.1; n=$((n + 1)); done
"$KVCTL" -s "$S3" bench -c 4 -n 100000000 -t put >"$T/bench3.out" 2>"$T/bench3.err" &
BENCH3=$!
PIDS="$PIDS $BENCH3"
sleep 0.5
kill -KILL "$KVD3" 2>/dev/null
n=0 # the bench sees its connections close at once; bounded anyway
while kill -0 "$BENCH3" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
stop_pid "$BENCH3"
wait "$BENCH3" 2>/dev/null
rc3=$?
if [ "$rc3" -eq 4 ] && grep -q "requests failed; first error: put: connection lost" "$T/bench3.err"; then
	pass "bench: kvd killed mid-run -> exit 4, failures counted"
else
	fail "bench: kvd killed mid-run: exit $rc3 (want 4), stderr '$(head -c 300 "$T/bench3.err")'"
fi
stop_pid "$KVD3"

# ---- too many connections -> exit 3 --------------------------------------------------------------
S2=$T/s2.sock
mkdir -p "$T/data2"
"$KVD" --data-dir "$T/data2" --socket "$S2" --max-connections 1 >"$T/kvd2.log" 2>&1 &
KVD2=$!
PIDS="$PIDS $KVD2"
n=0
while [ $n -lt 100 ] && ! "$KVCTL" -s "$S2" -t 1000 ping >/dev/null 2>&1; do sleep 0.1; n=$((n + 1)); done
mkfifo "$T/fifo"
held=0
try=0
while [ $held = 0 ] && [ $try -lt 3 ]; do # the holder takes the only connection slot
	try=$((try + 1))
	sleep 0.3 # let kvd see the readiness pings' connections close
	"$KVCTL" -s "$S2" <"$T/fifo" >"$T/holder.out" 2>&1 &
	HOLDER=$!
	PIDS="$PIDS $HOLDER"
	exec 9>"$T/fifo" # keeps the holder's stdin open, so its connection stays
	echo ping >&9
	n=0
	while [ ! -s "$T/holder.out" ] && [ $n -lt 30 ]; do sleep 0.1; n=$((n + 1)); done
	if grep -q '^PONG' "$T/holder.out" && kill -0 "$HOLDER" 2>/dev/null; then
		held=1
	else
		exec 9>&-
		stop_pid "$HOLDER"
	fi
done
if [ $held = 1 ]; then
	check_err "kvd refuses a connection (max-connections) -> exit 3" 3 "UNAVAILABLE" "$KVCTL" -s "$S2" ping
	exec 9>&-
	stop_pid "$HOLDER"
else
	fail "max-connections: could not hold the only connection: $(head -c 200 "$T/holder.out")"
fi
stop_pid "$KVD2"

# ---- the daemon is still healthy ------------------------------------------------------------------
check "kvd still answers at the end" 0 "val1" kc get pk1
if ! kill -0 "$KVD_PID" 2>/dev/null; then
	fail "kvd died during the test; the end of its log:"
	tail -n 15 "$T/kvd.log" | sed 's/^/    /'
fi

echo "test_kvctl: $npass passed, $nfail failed"
[ $nfail -eq 0 ]
