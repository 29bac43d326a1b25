#!/bin/sh
# test_install.sh — `make install` into a temp DESTDIR installs every piece,
# a tiny program builds against the installed library with
# `pkg-config --cflags --libs kvclient` and talks to a real kvd, and
# `make uninstall` removes what was installed.
set -u
B=${B:-build}
T=$(mktemp -d /tmp/kvd-install.XXXXXX)
D=$T/root
P=/usr/local
KPID=
fail=0
cleanup() {
	[ -n "$KPID" ] && kill -TERM "$KPID" 2>/dev/null && wait "$KPID" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
ok() { echo "PASS: $1"; }
bad() { echo "FAIL: $1"; fail=1; }

SANARG= HELLO_SAN=
# under SAN=1 the installed library needs the sanitizer runtime first
[ "$B" = build/san ] && SANARG="SAN=1" && HELLO_SAN="-fsanitize=address,undefined"
make --no-print-directory -s install DESTDIR="$D" PREFIX=$P $SANARG >"$T/install.log" 2>&1 ||
	{ cat "$T/install.log"; bad "make install"; exit 1; }
for f in sbin/kvd bin/kvctl lib/libkvclient.so lib/libkvclient.so.1 lib/libkvclient.so.1.0.0 \
	lib/libkvclient.a include/kvclient.h lib/pkgconfig/kvclient.pc share/man/man1/kvctl.1 \
	share/man/man8/kvd.8 lib/systemd/system/kvd.service lib/systemd/system/kvd.socket \
	lib/sysusers.d/kvd.conf lib/tmpfiles.d/kvd.conf; do
	[ -e "$D$P/$f" ] && ok "installed $f" || bad "missing $P/$f"
done
[ -f "$D/etc/kvd/kvd.conf" ] && ok "installed /etc/kvd/kvd.conf" || bad "missing /etc/kvd/kvd.conf"
grep -q "ExecStart=$P/sbin/kvd --config /etc/kvd/kvd.conf" "$D$P/lib/systemd/system/kvd.service" &&
	ok "unit points at the installed kvd" || bad "unit ExecStart not substituted"
soname=$(objdump -p "$D$P/lib/libkvclient.so.1.0.0" 2>/dev/null | awk '/SONAME/ { print $2 }')
[ "$soname" = libkvclient.so.1 ] && ok "SONAME libkvclient.so.1" || bad "SONAME is '$soname'"

cat >"$T/hello.c" <<'C'
#include <kvclient.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv)
{
	kvc_client *c;
	char err[256];
	void *v;
	size_t vl;
	if (argc < 2 || kvc_connect(argv[1], 2000, &c, err, sizeof err) != KVC_OK) {
		fprintf(stderr, "connect: %s\n", argc < 2 ? "no socket" : err);
		return 1;
	}
	if (kvc_put(c, "hello", 5, "world", 5, 0, 0) != KVC_OK ||
	    kvc_get(c, "hello", 5, &v, &vl, NULL) != KVC_OK)
		return 1;
	printf("%.*s\n", (int)vl, (char *)v);
	kvc_free(v);
	kvc_close(c);
	return 0;
}
C
export PKG_CONFIG_PATH="$D$P/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$D"
flags=$(pkg-config --cflags --libs kvclient) && ok "pkg-config --cflags --libs kvclient: $flags" ||
	bad "pkg-config does not know kvclient"
# shellcheck disable=SC2086
if cc $HELLO_SAN -o "$T/hello" "$T/hello.c" $flags; then ok "a program builds against the installed library"
else bad "building against the installed library"; fi
"$D$P/sbin/kvd" --data-dir "$T/data" --socket "$T/s.sock" --log-level warn 2>"$T/kvd.log" &
KPID=$!
i=0
until "$D$P/bin/kvctl" -s "$T/s.sock" ping >/dev/null 2>&1 || [ $i -ge 100 ]; do sleep 0.1; i=$((i + 1)); done
out=$(LD_LIBRARY_PATH="$D$P/lib" "$T/hello" "$T/s.sock" 2>&1)
[ "$out" = world ] && ok "it talks to kvd through the shared library" || bad "hello printed '$out'"
ldd "$T/hello" 2>/dev/null | grep -q "libkvclient.so.1 => $D$P/lib" 2>/dev/null ||
	LD_LIBRARY_PATH="$D$P/lib" ldd "$T/hello" | grep -q "libkvclient.so.1 => $D$P/lib" &&
	ok "linked dynamically against libkvclient.so.1" || bad "not linked against the installed .so"

make --no-print-directory -s uninstall DESTDIR="$D" PREFIX=$P $SANARG >"$T/uninstall.log" 2>&1 || bad "make uninstall"
left=$(find "$D" -type f ! -path "*/etc/kvd/kvd.conf" | wc -l)
[ "$left" = 0 ] && ok "make uninstall removed every installed file (kept /etc/kvd/kvd.conf)" ||
	{ bad "uninstall left $left files"; find "$D" -type f; }
[ $fail = 0 ] && echo "test_install: all passed" || echo "test_install: FAILED"
exit $fail
