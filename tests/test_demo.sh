#!/bin/sh
# test_demo.sh — `make demo` runs to the end and shows what it narrates:
# keys written and read, a torn tail cut at recovery with no acknowledged
# put missing, a merge that reclaims space, statistics, a clean stop.
set -u
B=${B:-build}
out=$(KVD=${KVD:-$B/kvd} KVCTL=${KVCTL:-$B/kvctl} sh client/demo.sh 2>&1)
rc=$?
fail=0
check() {
	if printf '%s\n' "$out" | grep -Eq "$2"; then echo "PASS: $1"; else echo "FAIL: $1"; fail=1; fi
}
[ $rc = 0 ] && echo "PASS: demo exits 0" || { echo "FAIL: demo exited $rc"; fail=1; }
check "reads back what it wrote" '^alice$'
check "the batch deleted user:2 (exit 1)" 'exit status 1'
check "recovery cut the torn tail" 'torn tail: cut [0-9]+ bytes'
check "no acknowledged put missing" 'acknowledged puts missing after recovery: 0$'
check "appends after recovery land cleanly" '^appends land on a clean boundary$'
check "the merge finished" 'done.*reclaimed|reclaimed.*[1-9]'
check "statistics shown" 'keydir_bytes_per_key'
check "kvd stopped cleanly" 'kvd log: stopped'
check "temporary data removed" 'demo finished'
if [ $fail != 0 ]; then printf '%s\n' "$out" | tail -n 40; fi
exit $fail
