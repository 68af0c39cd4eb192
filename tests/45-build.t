#!/bin/bash
# SPDX-License-Identifier: MIT
# Building in the sandbox (README "Package managers: owners and identities are faked for
# root"): a run as uid 0 gets a seccomp filter that makes chown, the set*id calls, setgroups
# and capset return 0 and do nothing (not mknod: a device node still fails). So, in the Debian image, as root
# and unprivileged: `dpkg -i` of a package with a root:mail file works, and with the README's
# APT::Sandbox::User line `apt-get update && apt-get install` from a file: repository works,
# without the network; su-style programs run; FIFOs are still made for real. A run as any
# other user (-u, config User) gets no filter; /tmp is 1777; the filter's fd does not reach
# the command; an i386 image's 32-bit calls are filtered too.
# The packages (liblockfile-bin: /usr/bin/dotlockfile is root:mail 2755; hello) come from the
# Debian mirror once per clone (apt-get download, kept in $FIXTURES/debs); without the mirror
# the tests that need them are skipped.
# Scripts for the sandbox's shell are single-quoted on purpose:
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC2016
. "$(dirname "$0")/lib.sh"

USERS=(as_root as_user)
PER_USER=20
TESTS=$((4 + ${#USERS[@]} * PER_USER))
plan "$TESTS"

FIXTURE=debian-umoci
DEBS=$FIXTURES/debs
APT_LINE='APT::Sandbox::User "root";'
SOURCES='deb [trusted=yes] file:/debs ./'

# --- fixtures: debootstrap and the .debs need the Debian mirror once; both are kept ----
# As in 40-debian.t: without the mirror and without a built Debian fixture every test is
# skipped; with it, a fixture that cannot be built is a failure.
if [ ! -f "$FIXTURES/$FIXTURE/index.json" ] && [ ! -f "$FIXTURES/debian-bookworm-minbase.tar.zst" ]; then
	need_debian_mirror "$TESTS" "Debian build test"
fi
ok "build the $FIXTURE fixture (debootstrap once per clone)" build_fixtures "$FIXTURE"

# download_debs: $DEBS holds liblockfile-bin's and hello's .deb, downloaded once per clone
# under the fixtures' lock into a work directory that gets its name only when complete.
download_debs() {
	mkdir -p "$FIXTURES"
	(
		flock 9 || exit 1
		[ -d "$DEBS" ] && exit 0
		rm -rf "$DEBS.tmp" && mkdir "$DEBS.tmp" && cd "$DEBS.tmp" || exit 1
		# as fixtures.py's build_i386: the machine's lists may be missing or old, so update
		# and try again; apt's _apt user could not write here
		if ! apt-get download -q -o APT::Sandbox::User=root liblockfile-bin hello &&
			! { apt-get update -qq && apt-get download -q -o APT::Sandbox::User=root liblockfile-bin hello; }; then
			cd / && rm -rf "$DEBS.tmp"
			exit 1
		fi
		cd / && mv "$DEBS.tmp" "$DEBS"
	) 9>"$FIXTURES/.lock" </dev/null >"$T/debs.log" 2>&1
}
NO_DEBS=
if download_debs; then
	ok "liblockfile-bin and hello .debs (apt-get download once per clone)" \
		ls "$DEBS"/liblockfile-bin_*.deb "$DEBS"/hello_*.deb
	# the repository every user's apt reads, bound read-only at /debs
	mkdir "$T/debs"
	ok "a file: repository of them (dpkg-scanpackages)" \
		sh -c 'cp "$1"/*.deb "$2" && cd "$2" && dpkg-scanpackages . /dev/null | gzip >Packages.gz' \
		sh "$DEBS" "$T/debs"
else
	NO_DEBS="apt-get download liblockfile-bin hello failed (no Debian mirror?): $(grep -m1 '^E:' "$T/debs.log" || head -n1 "$T/debs.log")"
	skip "liblockfile-bin and hello .debs (apt-get download once per clone)" "$NO_DEBS"
	skip "a file: repository of them (dpkg-scanpackages)" "$NO_DEBS"
fi
ok "start a tls registry, push $FIXTURE" eval 'make_ca && start_registry tls && push_fixture "$FIXTURE" "$REG_TLS"'
# the i386 fixture, where this kernel runs its busybox
I386=
if ! have_fixture i386; then
	NO_I386="no i386 fixture (busybox-static:i386 not available from the Debian mirror)"
elif ! can_run_i386; then
	NO_I386="the kernel cannot run 32-bit binaries: $PROBE_ERROR"
elif push_fixture i386 "$REG_TLS" >/dev/null; then
	I386=1
else
	NO_I386="push of the i386 fixture failed"
fi

# --- helpers -----------------------------------------------------------------
# WHO (as_root or as_user), H (its home) and D (its pull of the Debian image) are set by suite().
# status and fds_seen are lib.sh's.

drun() { "$WHO" "$DRUN" "$@"; }

# sh_in DIR SCRIPT [D-RUN OPTIONS...]: SCRIPT's output (stdout and stderr, lines joined by
# spaces) from sh in DIR
sh_in() {
	local dir=$1 script=$2
	shift 2
	drun "$@" "$dir" sh -c "$script" 2>&1 | tr '\n' ' '
}

# with_user_config DIR CMD...: CMD while DIR/config.json says "User": "1000"
with_user_config() {
	local dir=$1 rc=0
	shift
	"$WHO" cp "$dir/config.json" "$dir/config.json.orig"
	jq '.User = "1000"' "$dir/config.json.orig" | "$WHO" tee "$dir/config.json" >/dev/null
	"$@" || rc=$?
	"$WHO" mv "$dir/config.json.orig" "$dir/config.json"
	return "$rc"
}

suite() {
	WHO=$1
	H=$(user_home "$WHO")
	D=$H/deb
	local me=${WHO#as_} uid=0 rc line deb
	[ "$WHO" = as_user ] && uid=65534
	local vol=(-v "$T/debs:/debs:ro")

	ok "$me: pull $FIXTURE" "$WHO" "$DPULL" -q "$REG_TLS/$FIXTURE" "$D"

	# --- dpkg: a package whose file is not root's ------------------------------------------
	if [ -n "$NO_DEBS" ]; then
		skip_n 7 "$me: dpkg -i and apt-get install" "$NO_DEBS"
	else
		# Without the filter dpkg stops at "error setting ownership of './usr/bin/dotlockfile':
		# Invalid argument" (gid 8 is not mapped).
		is "$me: d-run -w: dpkg -i liblockfile-bin (a root:mail file): exit 0" \
			"$(status drun -w "${vol[@]}" "$D" sh -c 'dpkg -i /debs/liblockfile-bin_*.deb')" 0 ||
			diag "$(tail -n 5 "$T/err")"
		is "$me: dotlockfile (setgid mail in the package) locks and unlocks /tmp/l" \
			"$(sh_in "$D" 'dotlockfile -l /tmp/l && test -f /tmp/l && dotlockfile -u /tmp/l && ! test -e /tmp/l && echo locked-unlocked')" \
			"locked-unlocked "
		# The package says root/mail 2755. dpkg's fchown to root:mail did nothing, so the file
		# stays its creator's, root:root; its fchmod after the chown keeps the setgid bit, as the
		# kernel keeps it for an owner in the file's group (gid 0, the caller's own).
		deb=$(echo "$T"/debs/liblockfile-bin_*.deb)
		is "$me: dotlockfile: root/mail 2755 in the package, root:root 2755 in the sandbox (owner faked, mode kept)" \
			"$(dpkg-deb -c "$deb" | awk '$6 == "./usr/bin/dotlockfile" { print $1, $2 }') | $(sh_in "$D" 'stat -c "%U:%G %a" /usr/bin/dotlockfile')" \
			"-rwxr-sr-x root/mail | root:root 2755 "
		# On the host it is the caller's, setgid to the caller's own group (root's when root
		# runs d-run: d-pull drops such bits, a package manager in a -w run puts them back).
		is "$me: on the host dotlockfile is the caller's ($uid:$uid), mode 2755" \
			"$(stat -c '%u:%g %a' "$D/rootfs/usr/bin/dotlockfile")" "$uid:$uid 2755"

		# --- apt: a file: repository, no network -------------------------------------------
		# apt drops to _apt and then checks that its ids changed: the filter made the calls
		# "succeed", nothing changed, so apt refuses, which is why README says to add the line.
		# Without the filter it fails earlier: "E: setgroups 65534 failed".
		rc=$(status drun -w "${vol[@]}" "$D" sh -c \
			'rm -f /etc/apt/sources.list.d/debian.sources && echo "$1" >/etc/apt/sources.list && apt-get update' sh "$SOURCES")
		like "$me: without $APT_LINE apt-get update fails: Could not switch group" \
			"$rc $(grep -m1 '^E:' "$T/err")" '^100 E: .*Could not switch group'
		# hello's files are all root's: this install needs the line, not the filter (it passes
		# without the filter; dpkg -i above is the test of dpkg under the filter)
		rc=$(status drun -w "$D" sh -c 'echo "$1" >/etc/apt/apt.conf.d/99d-run' sh "$APT_LINE")
		is "$me: with it in /etc/apt/apt.conf.d: apt-get update && apt-get install -y hello: exit 0" \
			"$rc $(status drun -w "${vol[@]}" "$D" sh -c 'apt-get update && apt-get install -y hello')" "0 0" ||
			diag "$(tail -n 5 "$T/err")"
		is "$me: hello, installed by apt, says Hello, world!" "$(drun "$D" hello 2>&1)" "Hello, world!"
	fi

	# --- a root run: owners and identities are faked, device nodes are not -------------------
	# Without the filter: chown and chgrp say Invalid argument (1000 and 50 are not mapped), so
	# does setpriv's setresuid; mknod of a device says Operation not permitted.
	is "$me: chown 1000:1000 f returns 0, f stays 0:0" \
		"$(sh_in "$D" 'cd /tmp && touch f && chown 1000:1000 f; echo $?; stat -c %u:%g f')" "0 0:0 "
	is "$me: chgrp 50 f returns 0, f stays group 0" \
		"$(sh_in "$D" 'cd /tmp && touch f && chgrp 50 f; echo $?; stat -c %g f')" "0 0 "
	is "$me: setpriv --reuid=1000 --regid=1000 --clear-groups id -u: exit 0, still uid 0" \
		"$(sh_in "$D" 'setpriv --reuid=1000 --regid=1000 --clear-groups id -u; echo $?')" "0 0 "
	is "$me: mknod /tmp/c c 1 3 fails (device nodes are not faked) and makes nothing" \
		"$(sh_in "$D" 'mknod /tmp/c c 1 3 2>/dev/null; echo $?; test -e /tmp/c || echo absent')" "1 absent "
	is "$me: mknod /tmp/p p makes a real FIFO" \
		"$(sh_in "$D" 'mknod /tmp/p p; echo $?; stat -c %F /tmp/p')" "0 fifo "

	# --- no filter for any other user ------------------------------------------------------
	# /proc/self/status says whether a seccomp filter is on (2) or none (0)
	is "$me: a seccomp filter for a root run, none for -u 1000 nor for User 1000 in config.json" \
		"$(sh_in "$D" 'grep ^Seccomp: /proc/self/status')$(sh_in "$D" 'grep ^Seccomp: /proc/self/status' -u 1000)$(with_user_config "$D" sh_in "$D" 'grep ^Seccomp: /proc/self/status')" \
		"Seccomp:	2 Seccomp:	0 Seccomp:	0 "
	# uid 0 is not mapped in their sandbox: the kernel's EINVAL, where the filter would say 0
	line="1 chown: changing ownership of '/tmp/f': Invalid argument"
	is "$me: -u 1000: chown 0 /tmp/f fails as the kernel says" \
		"$(status drun -u 1000 "$D" sh -c 'touch /tmp/f && chown 0 /tmp/f') $(cat "$T/err")" "$line"
	is "$me: User 1000 in config.json: chown 0 /tmp/f fails as the kernel says" \
		"$(with_user_config "$D" status drun "$D" sh -c 'touch /tmp/f && chown 0 /tmp/f') $(cat "$T/err")" "$line"

	# --- /tmp and fds ------------------------------------------------------------------------
	# bwrap's --tmpfs alone makes /tmp 0755, where uid 1000 could not write
	is "$me: /tmp is 1777 for root and for -u 1000" \
		"$(sh_in "$D" 'stat -c %a /tmp')$(sh_in "$D" 'stat -c %a /tmp' -u 1000)" "1777 1777 "
	# the filter reaches bwrap as an fd (a memfd); bwrap reads and closes it. 3 is ls's own
	# fd on /proc/self/fd
	is "$me: the command of a root run sees fds 0 1 2 only (no filter fd, not the caller's 7)" \
		"$(fds_seen drun "$D" sh -c 'ls /proc/self/fd')" "0 1 2 3 "

	# --- 32-bit ------------------------------------------------------------------------------
	line="$me: i386 busybox, a root run: chown 5:5 /tmp/x returns 0 (the 32-bit table is filtered)"
	if [ -z "$I386" ]; then
		skip "$line" "$NO_I386"
	else
		"$WHO" "$DPULL" -q --platform linux/386 "$REG_TLS/i386" "$H/i386" 2>"$T/err" ||
			diag "pull of the i386 image failed: $(cat "$T/err")"
		is "$line" "$(sh_in "$H/i386" 'touch /tmp/x && chown 5:5 /tmp/x; echo $?')" "0 "
	fi

	# everything the packages installed is the caller's on the host
	ok "$me: rm -rf DIR as the caller" "$WHO" rm -rf "$D"
}

# A user whose sandbox cannot be made here (or whose pulls cannot unpack) has its tests skipped.
for WHO in "${USERS[@]}"; do
	why=$(why_cannot_run "$WHO")
	if [ -z "$why" ]; then
		suite "$WHO"
	else
		skip_n "$PER_USER" "${WHO#as_}: the build tests" "$why"
	fi
done
