#!/bin/sh
# check_layering.sh — the layering rules of the tree, checked on every `make test`:
#  1. the engine (daemon/kv_{crc,sys,keydir,format,seg,engine,merge}.[ch]) includes
#     neither libevent nor protobuf headers;
#  2. libkvclient never includes daemon code (no header that lives in daemon/);
#  3. kvctl (client/) includes no daemon code and no protobuf: it talks to kvd
#     only through kvclient.h;
#  4. the C headers of the wire contract (proto/*.h, e.g. kv_wire.h, shared by
#     kvd and libkvclient) include standard C library headers only.
fail=0
bad() { echo "layering: $1"; fail=1; }
for f in daemon/kv_crc daemon/kv_sys daemon/kv_keydir daemon/kv_format daemon/kv_seg daemon/kv_engine daemon/kv_engine_int daemon/kv_merge; do
	for x in "$f.c" "$f.h"; do
		[ -f "$x" ] || continue
		grep -nE '#include *[<"](event2?/|event\.h|protobuf-c|kv\.pb-c)' "$x" && bad "$x includes libevent/protobuf"
	done
done
for x in libkvclient/*.c libkvclient/*.h; do
	[ -f "$x" ] || continue
	grep -nE '#include *"(kv_engine|kv_server|kv_seg|kv_keydir|kvd)' "$x" && bad "$x includes daemon code"
	for h in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$x"); do
		[ -f "daemon/$h" ] && bad "$x includes daemon/$h"
	done
done
for x in client/*.c client/*.h; do
	[ -f "$x" ] || continue
	grep -nE '#include *[<"](kv_|kv\.pb-c|protobuf-c)' "$x" && bad "$x bypasses libkvclient"
done
LIBC_H='assert|complex|ctype|errno|fenv|float|inttypes|iso646|limits|locale|math|setjmp|signal|stdalign|stdarg|stdatomic|stdbool|stddef|stdint|stdio|stdlib|stdnoreturn|string|tgmath|threads|time|uchar|wchar|wctype'
for x in proto/*.h; do
	[ -f "$x" ] || continue
	grep -nE '^[[:space:]]*#[[:space:]]*include' "$x" | grep -vE "#[[:space:]]*include[[:space:]]*<($LIBC_H)\.h>" &&
		bad "$x includes more than the C library"
done
[ $fail = 0 ] && echo "layering: ok"
exit $fail
