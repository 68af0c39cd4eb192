#!/bin/bash
# SPDX-License-Identifier: MIT
# The man pages d-pull.1 and d-run.1 (issue 12): they lint clean; their SYNOPSIS is the usage
# line that -h prints; they list every long option of the program's option table, every
# environment variable its source reads, and d-run.1 every config.json key (of d-run.c and of
# the README's table); make install and make uninstall put them in place and take them away.
# The names come from the sources, so a new option, key or variable without its page fails here.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

PAGES=(d-pull d-run)
declare -A BIN=([d-pull]=$DPULL [d-run]=$DRUN)

# render PAGE: the page as plain text, without the overstrikes that mark bold and underline
render() {
	if command -v mandoc >/dev/null; then
		mandoc -Tascii "$SRC/$1.1"
	else
		groff -Tascii -P-c -mandoc "$SRC/$1.1"
	fi | sed 's/.\x08//g'
}

# section PAGE NAME: the text of section NAME (a heading at column 0), lines joined, one space
# between words: the rendering's line breaks and indentation do not count
section() {
	render "$1" | awk -v name="$2" '/^[A-Z]/ { on = ($0 == name); next } on' | tr -s ' \t\n' ' ' |
		sed 's/^ //; s/ $//'
}

# long_options FILE: the names in the `struct option` table of a C source, one a line
long_options() {
	sed -n '/struct option options\[\]/,/};/p' "$1" | grep -o '{ *"[a-z][a-z-]*"' | tr -d '{ "'
}

# environment FILE: the variables a C source reads: getenv("NAME"), and for d-run the caller's
# variables it passes on by name, add_env("NAME", 1)
environment() {
	grep -oE '(getenv|add_env)\("[A-Za-z_][A-Za-z0-9_]*"(\)|, 1\))' "$1" | cut -d'"' -f2 | sort -u
}

# config_keys: the config.json keys d-run.c reads from the config, and the first column of the
# README's table of keys
config_keys() {
	{
		grep -oE '\(config, "[A-Za-z]+"' "$SRC/d-run.c" | cut -d'"' -f2
		sed -n '/^### config.json keys/,/^#/p' "$SRC/README.md" | grep '^| `' | cut -d'|' -f2 |
			grep -o "\`[A-Za-z]*\`" | tr -d "\`"
	} | sort -u
}

declare -A OPTS ENVS
for p in "${PAGES[@]}"; do
	OPTS[$p]=$(long_options "$SRC/$p.c")
	ENVS[$p]=$(environment "$SRC/$p.c")
done
KEYS=$(config_keys)
# common.c is in both programs; the proxy variables are libcurl's
COMMON_ENVS=$(environment "$SRC/common.c")
CURL_ENVS=$'https_proxy\nno_proxy'
words() { wc -w <<<"$1"; }
plan $((2 * 4 + $(words "${OPTS[d-pull]} ${OPTS[d-run]}") + $(words "${ENVS[d-pull]} ${ENVS[d-run]}") +
	2 * $(words "$COMMON_ENVS") + $(words "$CURL_ENVS") + 1 + $(words "$KEYS") + 4))

# --- lint --------------------------------------------------------------------------
# Both pages in one run, so that mandoc finds the d-pull(1) and d-run(1) they refer to. Whether
# the other pages they refer to (bwrap(1), curl(1)...) are installed depends on the machine,
# and Debian has no mandoc.db: mandoc's messages on those lookups are left out.
if command -v mandoc >/dev/null; then
	LINTER="mandoc -Tlint"
	mandoc -Tlint "$SRC/d-pull.1" "$SRC/d-run.1" >"$T/lint" 2>&1
	awk '/mandoc\.db/ { next }
	     /referenced manual not found: Xr / && !/Xr d-(pull|run) / { next } { print }' "$T/lint" \
		>"$T/lint.mine"
else
	LINTER="groff -ww -z -mandoc (no mandoc here)"
	for p in "${PAGES[@]}"; do
		groff -ww -z -mandoc "$SRC/$p.1" 2>&1 | sed "s|^|$SRC/$p.1: |"
	done >"$T/lint.mine"
fi
for p in "${PAGES[@]}"; do
	is "$p.1: $LINTER says nothing" "$(grep -F "$p.1:" "$T/lint.mine")" ""
done

# --- SYNOPSIS = usage ------------------------------------------------------------------
for p in "${PAGES[@]}"; do
	usage=$("${BIN[$p]}" -h)
	like "$p -h prints a usage line" "$usage" "^usage: $p "
	is "$p.1: SYNOPSIS is the usage line of $p -h" "$(section "$p" SYNOPSIS)" "${usage#usage: }"
done

# --- options ---------------------------------------------------------------------------
# each one an entry of the options list: "-x, --name ..." or "--name ..." at the line's start
for p in "${PAGES[@]}"; do
	render "$p" >"$T/$p.txt"
	ok "$p.c: the option table has options" test -n "${OPTS[$p]}"
	for o in ${OPTS[$p]}; do
		ok "$p.1 lists --$o" grep -qE "^ +(-[a-zA-Z], )?--$o( |\$)" "$T/$p.txt"
	done
done

# --- environment -----------------------------------------------------------------------
for p in "${PAGES[@]}"; do
	text=" $(section "$p" ENVIRONMENT) "
	for v in ${ENVS[$p]} $COMMON_ENVS; do
		like "$p.1: ENVIRONMENT names \$$v (read in the source)" "$text" "[ ,]${v}[ ,]"
	done
done
text=" $(section d-pull ENVIRONMENT) "
for v in $CURL_ENVS; do
	like "d-pull.1: ENVIRONMENT names \$$v (libcurl's)" "$text" "[ ,]${v}[ ,]"
done

# --- config.json keys ---------------------------------------------------------------------
ok "config.json keys found in d-run.c and README.md" test "$(words "$KEYS")" -ge 9
for k in $KEYS; do
	ok "d-run.1 has an entry for the config.json key $k" \
		grep -qE "^\.It Cm (.* )?$k( ,|\$| )" "$SRC/d-run.1"
done

# --- make install / uninstall ---------------------------------------------------------------
# As the Makefile does it, into a DESTDIR. The caller's make variables (make check PREFIX=...)
# do not reach this make; -o: the binaries are taken as built, never rebuilt under other tests.
inst() { # TARGET
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$SRC" -o d-pull -o d-run "$1" \
		DESTDIR="$T/inst" PREFIX=/usr/local BINDIR=/usr/local/bin
}
MAN1=$T/inst/usr/local/share/man/man1
ok "make install DESTDIR=... succeeds" inst install
is "make install puts both pages in \$PREFIX/share/man/man1, mode 644" \
	"$(cd "$MAN1" 2>/dev/null && stat -c '%n %a' d-pull.1 d-run.1 | tr '\n' ' ')" "d-pull.1 644 d-run.1 644 "
ok "make uninstall DESTDIR=... succeeds" inst uninstall
is "make uninstall leaves no file behind" "$(find "$T/inst" ! -type d)" ""
