/*
 * kv_merge.h — the report stream from the merge worker to kvd, and the
 * crash points tests use. Internal to kv_merge.c (the public API,
 * including struct kv_merge_params, is in kv_engine.h).
 *
 * Every report is a 32-byte little-endian header followed by klen bytes:
 *   0  u8   type (enum kv_mrep)
 *   1  u8[3] 0
 *   4  u32  klen (key length, or message length for ERROR)
 *   8  u32  a     OUTPUT: segment id   MOVE/DROP: old segment   DONE: inputs
 *   12 u32  b     OUTPUT: file size    MOVE/DROP: old offset    DONE: outputs
 *   16 u32  c     OUTPUT: has hint     MOVE: new segment
 *   20 u32  d                          MOVE: new offset
 *   24 u32  e                          MOVE/DROP: record size
 *   28 u32  f                          MOVE: expiry
 * The worker sends OUTPUT, then the MOVEs into it, only after that output
 * segment is durable (fsynced, renamed, directory fsynced).
 */
#ifndef KV_MERGE_H
#define KV_MERGE_H

#include <stdint.h>

#include "kv_engine.h"

enum kv_mrep {
	KV_MREP_OUTPUT = 1, /* a new durable output segment */
	KV_MREP_MOVE = 2,   /* key moved from (a, b) to (c, d) */
	KV_MREP_DROP = 3,   /* key at (a, b) expired: drop it if still there */
	KV_MREP_DONE = 4,   /* the worker finished successfully */
	KV_MREP_ERROR = 5,  /* the worker failed; the payload says why */
};

#define KV_MREP_HDR 32u

/* Test seam: with KVD_MERGE_CRASH_AT=N in the environment, the worker
 * kills itself with SIGKILL at the Nth crash point it passes (points sit
 * before and after every write, fsync, rename and report). */
#define KV_MERGE_CRASH_ENV "KVD_MERGE_CRASH_AT"

#endif
