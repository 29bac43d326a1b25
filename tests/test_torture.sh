#!/bin/sh
# test_torture.sh — the short form of the crash torture inside `make test`:
# 200 kill -9 cycles over all sync modes (see tests/torture.c;
# `make torture CYCLES=N` runs any number).
set -e
B=${B:-build}
KVD=${KVD:-$B/kvd} "$B/torture" -n "${TORTURE_CYCLES:-200}" -c 4
# simulated power cuts: unsynced writes and directory entries discarded at
# random (tests/powercut.c shim); `always` must lose nothing acknowledged
KVD=${KVD:-$B/kvd} POWERCUT_SHIM="$B/libpowercut.so" "$B/torture" -p -n "${POWERCUT_CYCLES:-100}" -c 4
