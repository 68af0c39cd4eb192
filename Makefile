# SPDX-License-Identifier: MIT
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
CFLAGS ?= -O2 -g
WARNINGS = -Wall -Wextra -Wshadow -Wformat=2 -Wmissing-prototypes
PKGS = libcurl libarchive libcjson libcrypto libseccomp
SOURCES = d-pull.c d-run.c common.c common.h
CODE_BUDGET = 1000
# Debian packages: build, run time, tests.
DEBS = gcc make pkg-config libcurl4-openssl-dev libarchive-dev libcjson-dev libssl-dev \
	libseccomp-dev dpkg-dev \
	bubblewrap ca-certificates \
	docker-registry skopeo umoci buildah debootstrap busybox-static python3 python3-jwt python3-cryptography \
	openssl zstd perl util-linux curl jq shellcheck clang-format cloc mandoc gdb

all: d-pull d-run

d-pull d-run: %: %.c common.c common.h
	$(CC) -std=gnu11 $(WARNINGS) $$(pkg-config --cflags $(PKGS)) $(CPPFLAGS) $(CFLAGS) \
		-o $@ $< common.c -Wl,--as-needed $(LDFLAGS) $$(pkg-config --libs $(PKGS))

asan/d-pull asan/d-run: asan/%: %.c common.c common.h
	@mkdir -p asan
	$(CC) -std=gnu11 $(WARNINGS) -Werror -O1 -g -fsanitize=address,undefined,float-cast-overflow \
		-fno-sanitize-recover=all \
		$$(pkg-config --cflags $(PKGS)) -o $@ $< common.c $$(pkg-config --libs $(PKGS))

deps:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
		grep -q 'ok installed' || echo $$p; done); \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "missing packages; run: sudo apt-get install" $$missing; exit 1; fi; \
	echo "installing:" $$missing; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing

# Code lines as cloc counts them (blank lines and comments are free), of formatted sources.
budget:
	@cloc --quiet --csv $(SOURCES) | awk -F, '$$2 == "SUM" { \
		printf "%d code, %d comment, %d blank lines in $(SOURCES)\n", $$5, $$4, $$3; \
		if ($$5 >= $(CODE_BUDGET)) { print "over the $(CODE_BUDGET)-line budget"; exit 1 } }'

format:
	clang-format -i $(SOURCES)

format-check:
	clang-format --dry-run --Werror $(SOURCES)

check: deps format-check budget
	$(MAKE) CFLAGS="$(CFLAGS) -Werror" all asan/d-pull asan/d-run
	prove tests/
	ASAN_OPTIONS=detect_leaks=0 D_BIN_DIR=$(CURDIR)/asan prove tests/

demo: deps all
	tests/demo.sh

# Speed and memory against tar, skopeo+umoci and charliecloud; prints a Markdown table. Its
# packages stay out of make check: charliecloud's builders depend on docker.io.
BENCH_ROUNDS ?= 3
BENCH_DEBS = hyperfine charliecloud
bench: deps all
	$(MAKE) deps DEBS="$(BENCH_DEBS)"
	bash tests/bench.sh $(BENCH_ROUNDS)
.PHONY: bench

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 d-pull d-run $(DESTDIR)$(BINDIR)
	install -m 644 d-pull.1 d-run.1 $(DESTDIR)$(PREFIX)/share/man/man1

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/d-pull $(DESTDIR)$(BINDIR)/d-run
	rm -f $(DESTDIR)$(PREFIX)/share/man/man1/d-pull.1 $(DESTDIR)$(PREFIX)/share/man/man1/d-run.1

clean:
	rm -rf d-pull d-run asan

.PHONY: all deps budget format format-check check demo install uninstall clean
