# Postern: GNU make build. `make` builds ./postern; see README.md for targets.

PREFIX  ?= /usr/local
SYSCONFDIR ?= $(PREFIX)/etc
DESTDIR ?=
CC      ?= cc
PYTHON  ?= /usr/bin/python3

PKGS     := openssl libconfig
WARN     := -Wall -Wextra -Werror -Wformat=2 -Werror=format-security \
            -Wshadow -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes \
            -Wvla -Wno-unused-parameter
CSTD     := -std=c11 -D_GNU_SOURCE
CFLAGS   ?= -O2 -g
CPPFLAGS += -Iinclude
ALLCFLAGS = $(CSTD) $(WARN) $(CFLAGS) -fno-strict-aliasing \
            $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lev -lcrypt -lldap -llber -lpthread -lm

SAN      := -fsanitize=address,undefined -fno-sanitize-recover=all \
            -fno-omit-frame-pointer

SRCS     := $(wildcard proxy/*.c)
# Modules with no event loop or socket in them: unit tests link these.
PURE     := imap_parse imap_track pop3_parse smtp_parse smtp_filter sasl users config tls log router penalty ldap_filter proxyproto netmask bstate
OBJS      = $(SRCS:proxy/%.c=build/obj/%.o)
ASAN_OBJS = $(SRCS:proxy/%.c=build/asan/%.o)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=build/unit/%)
UNIT_ASAN := $(UNIT_SRCS:tests/unit/%.c=build/unit-asan/%)
HDRS     := $(wildcard include/*.h)

.PHONY: all asan unit integration fuzz check demo deps install clean format lint bench
all: postern

postern: $(OBJS)
	@echo "  LD      $@"
	@$(CC) $(ALLCFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

asan: build/postern-asan
build/postern-asan: $(ASAN_OBJS)
	@echo "  LD      $@"
	@$(CC) $(ALLCFLAGS) $(SAN) -o $@ $^ $(LDFLAGS) $(LDLIBS)

build/obj/%.o: proxy/%.c $(HDRS) | build/obj
	@echo "  CC      $<"
	@$(CC) $(ALLCFLAGS) $(CPPFLAGS) -c -o $@ $<
build/asan/%.o: proxy/%.c $(HDRS) | build/asan
	@echo "  CC asan $<"
	@$(CC) $(ALLCFLAGS) $(SAN) $(CPPFLAGS) -c -o $@ $<

build/unit/test_%: tests/unit/test_%.c $(PURE:%=build/obj/%.o) $(HDRS) | build/unit
	$(CC) $(ALLCFLAGS) $(CPPFLAGS) -o $@ $< $(filter %.o,$^) -lcmocka $(LDLIBS)
build/unit-asan/test_%: tests/unit/test_%.c $(PURE:%=build/asan/%.o) $(HDRS) | build/unit-asan
	$(CC) $(ALLCFLAGS) $(SAN) $(CPPFLAGS) -o $@ $< $(filter %.o,$^) -lcmocka $(LDLIBS)
# sesscache is tested on its own, with a stand-in for upstream_free().
build/unit/test_sesscache: build/obj/sesscache.o
build/unit-asan/test_sesscache: build/asan/sesscache.o

build/bench/micro: tests/bench/micro.c $(PURE:%=build/obj/%.o) $(HDRS) | build/bench
	$(CC) $(ALLCFLAGS) $(CPPFLAGS) -o $@ $< $(filter %.o,$^) $(LDLIBS)

build/obj build/asan build/unit build/unit-asan build/bench:
	mkdir -p $@

# Unit tests run twice: optimised, and under ASan+UBSan.
unit: $(UNIT_BINS) $(UNIT_ASAN)
	@set -e; for t in $^; do echo "== $$t"; ./$$t; done

# Integration tests drive the sanitizer build against real servers.
integration: postern build/postern-asan
	POSTERN_BIN=$(CURDIR)/build/postern-asan $(PYTHON) -m pytest -q -ra tests/integration

# Replays each parser's fuzz corpus, then fuzzes it for FUZZ_SECONDS each.
FUZZ_SECONDS ?= 20
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) sh tests/fuzz/run.sh

deps:
	@./.ci/deps.sh

check: deps
	$(MAKE) all asan
	$(MAKE) unit
	$(MAKE) fuzz
	$(MAKE) integration

demo: deps
	$(MAKE) all
	@./etc/demo.sh

bench: deps
	$(MAKE) all build/bench/micro
	./build/bench/micro
	$(PYTHON) tests/bench/run.py
	$(PYTHON) tests/bench/smtp_ldap.py
	$(PYTHON) tests/bench/failover.py

install: postern
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(SYSCONFDIR)/postern
	install -m 0755 postern $(DESTDIR)$(PREFIX)/sbin/postern
	install -m 0644 etc/postern.conf $(DESTDIR)$(SYSCONFDIR)/postern/postern.conf.sample

format:
	clang-format -i proxy/*.c include/*.h tests/unit/*.c

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --inline-suppr -Iinclude proxy

clean:
	rm -rf build postern
