#!/bin/sh
# test_systemd.sh — the systemd side of kvd, as far as it runs without
# systemd as PID 1:
#   1. `systemd-analyze verify` of kvd.service (generated from the template
#      with @SBINDIR@ = this build directory, so ExecStart exists, and
#      @SYSCONFDIR@ = /etc) and
#      kvd.socket prints nothing at all (it warns and still exits 0);
#   2. `systemd-analyze security --offline=yes --threshold=20` passes and
#      the overall exposure level is <= 2.0;
#   3. socket activation: systemd-socket-activate hands kvd the listening
#      socket; kvctl ping/put/get answer through it; kvd binds no socket of
#      its own and leaves systemd's socket file alone;
#   4. an inherited fd 3 that is not a listening socket is refused (exit 1).
# (READY=1/STATUS=/STOPPING=1/WATCHDOG=1 on a fake $NOTIFY_SOCKET are tested
# in tests/test_service.c, test_notify.)
#
# Environment (set by `make test`): KVD, KVCTL, B (build dir). Plain POSIX
# sh. Invariants: every process started here is stopped by pid in the EXIT
# trap; every wait is bounded; one PASS/FAIL/SKIP line per case; exit
# status non-zero if any case failed.
set -u

KVD=${KVD:-build/kvd}
KVCTL=${KVCTL:-build/kvctl}
B=${B:-build}

T=$(mktemp -d "${TMPDIR:-/tmp}/kvd-systemd-test.XXXXXX") || exit 1
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
skip() { echo "SKIP: $1"; }

# wait_for SECONDS CMD...: run CMD every 0.1 s until it succeeds (0) or the
# time is up (1).
wait_for() {
	w_n=$(($1 * 10))
	shift
	while [ "$w_n" -gt 0 ]; do
		"$@" && return 0
		sleep 0.1
		w_n=$((w_n - 1))
	done
	return 1
}

absB=$(cd "$B" && pwd) || exit 1
mkdir -p "$T/units"
sed -e "s|@SBINDIR@|$absB|g" -e "s|@SYSCONFDIR@|/etc|g" systemd/kvd.service >"$T/units/kvd.service"
cp systemd/kvd.socket "$T/units/kvd.socket"

# ---- 1. systemd-analyze verify: no output at all ---------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
	grep -q "^ExecStart=$absB/kvd --config /etc/kvd/kvd.conf" "$T/units/kvd.service" ||
		fail "template: @SBINDIR@/@SYSCONFDIR@ not replaced"
	grep -q "@[A-Z]*@" "$T/units/kvd.service" && fail "template: unreplaced @VAR@ left"
	out=$(timeout 60 systemd-analyze verify --man=no "$T/units/kvd.service" "$T/units/kvd.socket" 2>&1)
	rc=$?
	if [ "$rc" -eq 0 ] && [ -z "$out" ]; then
		pass "systemd-analyze verify kvd.service kvd.socket: clean"
	else
		fail "systemd-analyze verify: exit $rc: $out"
	fi

	# ---- 2. systemd-analyze security ------------------------------------------------------
	out=$(timeout 60 systemd-analyze security --offline=yes --threshold=20 "$T/units/kvd.service" 2>&1)
	rc=$?
	level=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for kvd.service: \([0-9.]*\).*/\1/p')
	if [ "$rc" -eq 0 ] && [ -n "$level" ] && awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }'; then
		pass "systemd-analyze security: exposure $level <= 2.0"
	else
		fail "systemd-analyze security: exit $rc, level '$level': $(printf '%s' "$out" | tail -3)"
	fi
else
	skip "systemd-analyze is not installed"
fi

# ---- 3. socket activation ----------------------------------------------------------------------
if ! command -v systemd-socket-activate >/dev/null 2>&1; then
	skip "systemd-socket-activate is not installed"
elif ! [ -x "$KVCTL" ]; then
	skip "socket activation: $KVCTL is missing"
else
	A=$T/act.sock
	systemd-socket-activate -l "$A" "$KVD" --data-dir "$T/data" --socket "$T/own.sock" \
		>"$T/act.log" 2>&1 &
	apid=$!
	PIDS="$PIDS $apid"
	if ! wait_for 10 test -S "$A"; then
		fail "socket activation: $A never appeared: $(head -c 300 "$T/act.log")"
	else
		# the first connection makes systemd-socket-activate exec kvd (same pid)
		out=$(timeout 20 "$KVCTL" -s "$A" ping 2>&1)
		case $out in
		PONG*) pass "socket activation: kvctl ping through the inherited socket" ;;
		*) fail "socket activation: ping: $out / $(head -c 400 "$T/act.log")" ;;
		esac
		timeout 20 "$KVCTL" -s "$A" put act-key act-value >/dev/null 2>&1
		out=$(timeout 20 "$KVCTL" -s "$A" get act-key 2>&1)
		[ "$out" = "act-value" ] && pass "socket activation: put/get" ||
			fail "socket activation: get: $out"
		grep -q "on the socket passed by systemd" "$T/act.log" &&
			pass "socket activation: kvd logs the inherited socket" ||
			fail "socket activation: log: $(head -c 400 "$T/act.log")"
		[ ! -e "$T/own.sock" ] && pass "socket activation: kvd bound no socket of its own" ||
			fail "socket activation: kvd created $T/own.sock"
	fi
	stop_pid "$apid"
	PIDS=""
	wait "$apid" 2>/dev/null
	[ -S "$A" ] && pass "socket activation: kvd left systemd's socket file alone" ||
		fail "socket activation: $A was removed"
	grep -q "stopped" "$T/act.log" && pass "socket activation: clean stop on SIGTERM" ||
		fail "socket activation: no clean stop: $(tail -c 300 "$T/act.log")"
fi

# ---- 4. an inherited fd that is not a listening socket -----------------------------------------
# shellcheck disable=SC2016
timeout 20 sh -c 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" --data-dir "$1" --socket "$2" 3<"$3"' \
	"$KVD" "$T/data2" "$T/x.sock" /dev/null >"$T/bad.log" 2>&1
rc=$?
if [ "$rc" -eq 1 ] && grep -q "inherited fd 3 is not a socket" "$T/bad.log" &&
	[ ! -e "$T/data2" ]; then
	pass "a passed fd 3 that is not a socket is refused before the data is touched"
else
	fail "bad inherited fd: exit $rc: $(head -c 300 "$T/bad.log")"
fi

echo "test_systemd.sh: $npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
