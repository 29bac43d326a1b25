# kvd — top-level Makefile (plain make, no generator).
#
#   make            build kvd, kvctl, libkvclient (.so + .a) into build/
#   make test       build and run every test          (SAN=1: ASan+UBSan, in build/san/)
#   make run        start kvd in the foreground on ./var/data, socket ./var/kvd.sock
#   make deps       install the Debian packages the build needs (apt-get)
#   make demo       a narrated walkthrough: recovery, compaction, statistics
#   make torture    crash torture (CYCLES=N kill -9 cycles + N simulated power cuts)
#   make bench-sync group commit under --sync always
#   make bench-merge    client latency with and without a merge running
#   make bench-redis    kvd vs Redis (AOF) in every durability mode (BENCH_QUICK=1)
#   make bench-hiccup   the CPU time this machine takes from threads that never sleep
#   make bench-engine   engine vs LevelDB benchmark
#   make install / uninstall   PREFIX=/usr/local DESTDIR=
#   make clean
#
# Overridable: CC CFLAGS LDFLAGS PREFIX DESTDIR SAN=1

CC      ?= cc
PREFIX  ?= /usr/local
DESTDIR ?=
CFLAGS  ?= -O2 -g
LDFLAGS ?=

# Debian packages the build and the tests need. `make deps` installs them;
# `make` and `make test` run it by themselves when one is missing.
DEPS_PKGS = protobuf-c-compiler libprotobuf-c-dev libevent-dev libcmocka-dev \
            pkg-config libedit-dev libinih-dev liburing-dev
PKGS      = libprotobuf-c libevent cmocka libedit inih liburing

ifeq ($(SAN),1)
B        := build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
B        := build
SANFLAGS :=
endif

KV_CFLAGS  = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
             -Wno-missing-field-initializers $(SANFLAGS)
KV_LDFLAGS = $(SANFLAGS)

# Evaluated once per (sub-)make, after deps-check has had its chance.
PC_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PB_LIBS   := $(shell pkg-config --libs libprotobuf-c 2>/dev/null)
EV_LIBS   := $(shell pkg-config --libs libevent 2>/dev/null)
CM_LIBS   := $(shell pkg-config --libs cmocka 2>/dev/null)
ED_LIBS   := $(shell pkg-config --libs libedit 2>/dev/null)
INI_LIBS  := $(shell pkg-config --libs inih 2>/dev/null)
UR_LIBS   := $(shell pkg-config --libs liburing 2>/dev/null)

GEN := $(B)/gen
INC := -I$(GEN) -Idaemon -Ilibkvclient -Iproto

# --- sources -----------------------------------------------------------------
# The engine: no sockets, no libevent, no protobuf (checked by `make test`).
ENGINE_SRC = daemon/kv_crc.c daemon/kv_sys.c daemon/kv_keydir.c daemon/kv_format.c \
             daemon/kv_seg.c daemon/kv_engine.c daemon/kv_merge.c
SERVER_SRC = $(filter-out $(ENGINE_SRC),$(wildcard daemon/*.c))
CLIENT_LIB_SRC = $(wildcard libkvclient/*.c)
KVCTL_SRC  = $(wildcard client/*.c)
TEST_SRC   = $(wildcard tests/test_*.c)

ENGINE_OBJ = $(ENGINE_SRC:%.c=$(B)/obj/%.o)
SERVER_OBJ = $(SERVER_SRC:%.c=$(B)/obj/%.o) $(B)/obj/gen/kv.pb-c.o
LIB_OBJ    = $(CLIENT_LIB_SRC:%.c=$(B)/pic/%.o) $(B)/pic/gen/kv.pb-c.o
KVCTL_OBJ  = $(KVCTL_SRC:%.c=$(B)/obj/%.o)
TESTS      = $(TEST_SRC:tests/%.c=$(B)/tests/%)

SOMAJOR = 1
SOVER   = 1.0.0
LIBSO   = $(B)/libkvclient.so.$(SOVER)
LIBA    = $(B)/libkvclient.a

.PHONY: all build-all test test-run deps deps-check run clean install uninstall \
        bench-engine bench-engine-run torture bench-sync bench-redis bench-merge bench-hiccup demo
.DEFAULT_GOAL := all

all: deps-check
	@$(MAKE) --no-print-directory build-all

build-all: $(B)/kvd $(B)/kvctl $(LIBSO) $(LIBA) $(B)/kvclient.pc

# --- dependencies --------------------------------------------------------------
deps:
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	echo "installing: $(DEPS_PKGS)"; \
	$$SUDO apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(DEPS_PKGS)

deps-check:
	@if ! command -v pkg-config >/dev/null 2>&1 || ! command -v protoc-c >/dev/null 2>&1 || \
	    ! pkg-config --exists $(PKGS); then \
		echo "some build dependencies are missing; running 'make deps'"; \
		$(MAKE) --no-print-directory deps; \
	fi

# --- generated protobuf code (never committed) ---------------------------------
$(GEN)/kv.pb-c.c $(GEN)/kv.pb-c.h: proto/kv.proto
	@mkdir -p $(GEN)
	protoc-c -Iproto --c_out=$(GEN) proto/kv.proto

# --- objects --------------------------------------------------------------------
$(B)/obj/gen/kv.pb-c.o: $(GEN)/kv.pb-c.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(KV_CFLAGS) $(PC_CFLAGS) $(INC) -MMD -MP -c $< -o $@

$(B)/pic/gen/kv.pb-c.o: $(GEN)/kv.pb-c.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(KV_CFLAGS) -fPIC -fvisibility=hidden $(PC_CFLAGS) $(INC) -MMD -MP -c $< -o $@

$(B)/obj/%.o: %.c | $(GEN)/kv.pb-c.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(KV_CFLAGS) $(PC_CFLAGS) $(INC) -MMD -MP -c $< -o $@

$(B)/pic/%.o: %.c | $(GEN)/kv.pb-c.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(KV_CFLAGS) -fPIC -fvisibility=hidden $(PC_CFLAGS) $(INC) -MMD -MP -c $< -o $@

-include $(shell find $(B) -name '*.d' 2>/dev/null)

# --- programs and libraries -------------------------------------------------------
$(B)/kvd: $(SERVER_OBJ) $(ENGINE_OBJ)
	$(CC) $(KV_LDFLAGS) $(LDFLAGS) -o $@ $^ $(EV_LIBS) $(PB_LIBS) $(INI_LIBS) $(UR_LIBS) -lm -lpthread

$(LIBA): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(LIBSO): $(LIB_OBJ)
	$(CC) $(KV_LDFLAGS) $(LDFLAGS) -shared -Wl,-soname,libkvclient.so.$(SOMAJOR) -o $@ $^ $(PB_LIBS)
	ln -sf libkvclient.so.$(SOVER) $(B)/libkvclient.so.$(SOMAJOR)
	ln -sf libkvclient.so.$(SOMAJOR) $(B)/libkvclient.so

# kvctl links libkvclient only (statically, so build/kvctl runs from the tree).
$(B)/kvctl: $(KVCTL_OBJ) $(LIBA)
	$(CC) $(KV_LDFLAGS) $(LDFLAGS) -o $@ $(KVCTL_OBJ) $(LIBA) $(PB_LIBS) $(ED_LIBS) -lm -lpthread

$(B)/kvclient.pc: libkvclient/kvclient.pc.in
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(SOVER)|g' $< > $@

# --- tests ------------------------------------------------------------------------
$(B)/tests/%: tests/%.c $(ENGINE_OBJ) $(LIBA) $(wildcard tests/kv_test_*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(KV_CFLAGS) $(PC_CFLAGS) $(INC) -Itests -o $@ $< $(ENGINE_OBJ) $(LIBA) \
		$(KV_LDFLAGS) $(LDFLAGS) $(CM_LIBS) $(PB_LIBS) -lm

# kv_poll is server-side but pure (no libevent): its unit test links it alone.
$(B)/tests/test_poll: tests/test_poll.c $(B)/obj/daemon/kv_poll.o
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(KV_CFLAGS) $(PC_CFLAGS) $(INC) -Itests -o $@ $< $(B)/obj/daemon/kv_poll.o \
		$(KV_LDFLAGS) $(LDFLAGS) $(CM_LIBS)

# kv_ring (io_uring batches) is server-side and needs no libevent either.
$(B)/tests/test_ring: tests/test_ring.c $(B)/obj/daemon/kv_ring.o
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(KV_CFLAGS) $(PC_CFLAGS) $(INC) -Itests -o $@ $< $(B)/obj/daemon/kv_ring.o \
		$(KV_LDFLAGS) $(LDFLAGS) $(CM_LIBS) $(UR_LIBS)

test: deps-check
	@$(MAKE) --no-print-directory build-all
	@$(MAKE) --no-print-directory test-run

test-run: $(TESTS) $(B)/torture $(B)/libfaultshim.so
	@sh tests/check_layering.sh
	@fail=0; for t in $(TESTS); do \
		echo "== $$t"; \
		KVD=$(B)/kvd KVCTL=$(B)/kvctl $$t || { echo "FAILED: $$t"; fail=1; }; \
	done; \
	for s in tests/test_*.sh; do \
		[ -f "$$s" ] || continue; echo "== $$s"; \
		KVD=$(B)/kvd KVCTL=$(B)/kvctl B=$(B) sh $$s || { echo "FAILED: $$s"; fail=1; }; \
	done; \
	if [ $$fail = 0 ]; then echo "ALL TESTS PASSED"; else echo "SOME TESTS FAILED"; exit 1; fi

# --- crash torture (a short form runs inside `make test`) ---------------------------
CYCLES ?= 1000
torture: all $(B)/torture
	KVD=$(B)/kvd $(B)/torture -n $(CYCLES)
	KVD=$(B)/kvd POWERCUT_SHIM=$(B)/libpowercut.so $(B)/torture -p -n $(CYCLES)

$(B)/libpowercut.so: tests/powercut.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Wall -Wextra -Werror -fPIC -shared -o $@ $< -ldl

$(B)/libfaultshim.so: tests/faultshim.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Wall -Wextra -Werror -fPIC -shared -o $@ $< -ldl

$(B)/torture: tests/torture.c $(LIBA) $(B)/libpowercut.so
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(KV_CFLAGS) $(INC) -o $@ $< $(LIBA) $(KV_LDFLAGS) $(LDFLAGS) $(PB_LIBS)

# --- run ------------------------------------------------------------------------------
run: all
	@mkdir -p var/data
	@echo "kvd: data in ./var/data, socket ./var/kvd.sock (Ctrl-C stops it)"
	@echo "try:  $(B)/kvctl -s ./var/kvd.sock ping"
	exec $(B)/kvd --data-dir ./var/data --socket ./var/kvd.sock

# --- the narrated walkthrough ----------------------------------------------------------
demo: all
	@KVD=$(B)/kvd KVCTL=$(B)/kvctl sh client/demo.sh

# --- benchmarks -------------------------------------------------------------------------
bench-engine: deps-check
	@if ! [ -f /usr/include/leveldb/c.h ]; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get install -y -qq libleveldb-dev; fi
	@$(MAKE) --no-print-directory bench-engine-run

bench-engine-run: $(B)/bench_engine
	$(B)/bench_engine $(BENCH_ARGS)

$(B)/bench_engine: tests/bench/bench_engine.c $(ENGINE_OBJ)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(KV_CFLAGS) $(INC) -o $@ $< $(ENGINE_OBJ) $(KV_LDFLAGS) $(LDFLAGS) -lleveldb -lm

# kvd vs Redis (AOF) side by side; BENCH_QUICK=1 for a short run.
bench-redis: all $(B)/bench_hiccup
	KVD=$(B)/kvd KVCTL=$(B)/kvctl HICCUP=$(B)/bench_hiccup sh tests/bench/bench_redis.sh

# the CPU time this machine takes away from spinning threads (bench_hiccup.c)
bench-hiccup: $(B)/bench_hiccup
	$(B)/bench_hiccup $(BENCH_ARGS)

$(B)/bench_hiccup: tests/bench/bench_hiccup.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(KV_CFLAGS) -o $@ $< $(LDFLAGS) -lpthread

bench-merge: all
	KVD=$(B)/kvd KVCTL=$(B)/kvctl sh tests/bench/bench_merge.sh

bench-sync: all $(B)/bench_sync
	KVD=$(B)/kvd KVCTL=$(B)/kvctl $(B)/bench_sync $(BENCH_ARGS)

$(B)/bench_sync: tests/bench/bench_sync.c $(LIBA)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(KV_CFLAGS) $(INC) -o $@ $< $(LIBA) $(KV_LDFLAGS) $(LDFLAGS) $(PB_LIBS) -lpthread

# --- install ------------------------------------------------------------------------------
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system

$(B)/kvd.service: systemd/kvd.service
	sed -e 's|@SBINDIR@|$(PREFIX)/sbin|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' $< > $@

install: all $(B)/kvd.service
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/lib \
		$(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include \
		$(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man8 \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(PREFIX)/lib/sysusers.d \
		$(DESTDIR)$(PREFIX)/lib/tmpfiles.d $(DESTDIR)$(SYSCONFDIR)/kvd
	install -m 755 $(B)/kvd $(DESTDIR)$(PREFIX)/sbin/kvd
	install -m 755 $(B)/kvctl $(DESTDIR)$(PREFIX)/bin/kvctl
	install -m 755 $(LIBSO) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libkvclient.so.$(SOVER) $(DESTDIR)$(PREFIX)/lib/libkvclient.so.$(SOMAJOR)
	ln -sf libkvclient.so.$(SOMAJOR) $(DESTDIR)$(PREFIX)/lib/libkvclient.so
	install -m 644 $(LIBA) $(DESTDIR)$(PREFIX)/lib/
	install -m 644 libkvclient/kvclient.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(B)/kvclient.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/
	install -m 644 client/kvctl.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 daemon/kvd.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	install -m 644 $(B)/kvd.service systemd/kvd.socket $(DESTDIR)$(UNITDIR)/
	install -m 644 systemd/kvd.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/kvd.conf
	install -m 644 systemd/kvd.tmpfiles $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/kvd.conf
	@# never overwrite a configuration the admin has edited
	if [ -f $(DESTDIR)$(SYSCONFDIR)/kvd/kvd.conf ]; then \
		install -m 644 daemon/kvd.conf $(DESTDIR)$(SYSCONFDIR)/kvd/kvd.conf.example; \
	else install -m 644 daemon/kvd.conf $(DESTDIR)$(SYSCONFDIR)/kvd/kvd.conf; fi
	@[ -n "$(DESTDIR)" ] || ldconfig 2>/dev/null || true

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/sbin/kvd $(DESTDIR)$(PREFIX)/bin/kvctl \
		$(DESTDIR)$(PREFIX)/lib/libkvclient.so* $(DESTDIR)$(PREFIX)/lib/libkvclient.a \
		$(DESTDIR)$(PREFIX)/include/kvclient.h $(DESTDIR)$(PREFIX)/lib/pkgconfig/kvclient.pc \
		$(DESTDIR)$(PREFIX)/share/man/man1/kvctl.1 $(DESTDIR)$(PREFIX)/share/man/man8/kvd.8 \
		$(DESTDIR)$(UNITDIR)/kvd.service $(DESTDIR)$(UNITDIR)/kvd.socket \
		$(DESTDIR)$(PREFIX)/lib/sysusers.d/kvd.conf $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/kvd.conf \
		$(DESTDIR)$(SYSCONFDIR)/kvd/kvd.conf.example
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/kvd/kvd.conf (your configuration) and the data directory"

clean:
	rm -rf build
