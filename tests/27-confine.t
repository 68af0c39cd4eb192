#!/bin/bash
# SPDX-License-Identifier: MIT
# The extractor (start_extractor() in d-pull.c: d-pull's grandchild, chrooted into DIR/rootfs)
# reads bytes not yet verified while a layer streams, through libarchive, zlib and zstd: code
# that got in through a bug there must not leave the chroot. As root and unprivileged, with the
# second layer of `layers` stalled in its middle (tests/proxy.py in front of the tls registry):
#  1  the extractor, found in /proc (the pull's process whose parent is not the d-pull started,
#     nor that d-pull) once it is blocked reading a pipe: it is chrooted into DIR/rootfs;
#     its CapPrm and CapEff hold nothing outside CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER and
#     CAP_FSETID (0x1b): no cap_sys_chroot, cap_sys_ptrace, cap_sys_admin, cap_mknod;
#     its fds are exactly 0 1 2, and 0 is the pipe the download goes through (d-pull's child
#     holds its other end); unprivileged, its network namespace is not d-pull's
#  2  real attacks: gdb attaches to the extractor and makes it call, in its own context, what
#     code that got in would: PTRACE_SEIZE of its parent (outside the chroot, with the
#     directory fds): EPERM; unshare(CLONE_NEWUSER) to get all capabilities back: EPERM;
#     fchdir(3) to fchdir(20), to a directory fd outside: EBADF each; the chroot escape
#     (mkdir e, chroot e, chdir .. 64 times, chroot .): chroot EPERM, and the open() of a file
#     outside DIR (in a directory the user can write) fails: that file never appears;
#     as root, mknod of a block device and mount of a proc: EPERM, nothing made;
#     unprivileged, a TCP connect() to a port this test listens on at 127.0.0.1: fails, and
#     no connection arrives. (The root extractor keeps the host's network: its connect()
#     goes through; it has nothing to send but the layer.)
# Then SIGTERM ends the pull. As root, the pull runs in a mount namespace of its own
# (unshare -m), so that a mount an unconfined extractor makes goes with it. Run against the
# build before the confinement (D_BIN_DIR), the checks of 1 and 2 fail: the escape works.
# Nothing here measures time: the waits are for a condition, $D_TEST_HANG_GUARD seconds
# (default 120) at most, against hanging; the stall lasts as long.
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC2016
. "$(dirname "$0")/lib.sh"

# Both users, where this machine lets them make the user namespaces and the sandbox
sandbox_users WHO
NW=${#WHO[@]}
GUARD=${D_TEST_HANG_GUARD:-120}
# per user: as root 5 checks from /proc and 7 attacks, unprivileged 6 and 6
NGDB_ROOT=7 NGDB_USER=6
plan $((3 + NW * 12))

# --- helpers of this test ---------------------------------------------------------------

# ppid_of PID: its parent's pid (the field after the state in /proc/PID/stat, whose command
# name may hold spaces and parentheses)
ppid_of() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	stat=${stat#* }
	echo "${stat%% *}"
}

# find_extractor DIR: until the extractor of the pull into DIR (its process whose parent is
# neither PULL nor PULL's parent) is blocked reading a pipe, which it does only once it
# unpacks; sets X to its pid and KID to d-pull's child. $GUARD s at most, while PULL runs.
find_extractor() {
	local i p pp
	X='' KID=''
	for ((i = 0; i < GUARD * 10; i++)); do
		for p in $(pids_with "$1"); do
			pp=$(ppid_of "$p") || continue
			if [ "$pp" = "$PULL" ]; then
				KID=$p
			elif [ "$p" != "$PULL" ]; then
				X=$p
			fi
		done
		[ -n "$X" ] && [[ $(cat "/proc/$X/wchan" 2>/dev/null) == *pipe_read* ]] && return 0
		kill -0 "$PULL" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# cap_field PID NAME: that capability set of PID, as a number
cap_field() { echo $((16#$(awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"))); }

# fds_of PID: its fd numbers, sorted, on one line ("0 1 2 ")
fds_of() { find "/proc/$1/fd" -mindepth 1 -printf '%f\n' 2>/dev/null | sort -n | tr '\n' ' '; }

# holds PID LINK: PID has an fd that is LINK (as readlink shows it: "pipe:[1234]")
holds() {
	local f
	for f in /proc/"$1"/fd/*; do
		[ "$(readlink "$f" 2>/dev/null)" = "$2" ] && return 0
	done
	return 1
}

# gdb_call NAME EXPR: the gdb commands that call EXPR (a C expression of int or long value,
# every function cast to its type: no debug information needed) in the process attached,
# errno cleared first, and print "ATTACK NAME RESULT ERRNO"
ERRNO='*((int *(*)(void))__errno_location)()'
gdb_call() {
	printf '%s\n' "set $ERRNO = 0" "set \$r = (int)($2)" "set \$e = $ERRNO" \
		"printf \"ATTACK $1 %d %d\\n\", \$r, \$e"
}

# attack_script WHO VICTIM PORT: the gdb commands of the attacks (see the header), in an order
# where each one starts inside the chroot with the fds the extractor had, whatever an earlier
# one did: the fchdir()s come first, the escape last
attack_script() {
	local fd
	gdb_call seize "((long (*)(long, long, void *, void *))ptrace)(0x4206, $(ppid_of "$X"), 0, 0)"
	gdb_call userns "((int (*)(int))unshare)(0x10000000)"
	# before any attack opens an fd of its own
	for ((fd = 3; fd <= 20; fd++)); do
		gdb_call "fchdir$fd" "((int (*)(int))fchdir)($fd)"
		echo 'call (int)((int (*)(const char *))chdir)("/")' # back in the chroot, if it left
	done
	if [ "$1" = as_root ]; then
		# a block device 8:0 (the first SCSI disk), and a proc at /p
		gdb_call mknod "((int (*)(const char *, unsigned int, unsigned long))mknod)(\"blk\", 060600, 0x800)"
		gdb_call mkdir_p "((int (*)(const char *, unsigned int))mkdir)(\"p\", 0755)"
		gdb_call mount "((int (*)(const char *, const char *, const char *, unsigned long, const void *))mount)(\"proc\", \"/p\", \"proc\", 0, 0)"
	else
		# struct sockaddr_in of 127.0.0.1:PORT, zeroed by calloc
		gdb_call socket "((int (*)(int, int, int))socket)(2, 1, 0)"
		echo 'set $s = $r'
		echo 'set $a = (unsigned char *)((void *(*)(unsigned long, unsigned long))calloc)(1, 16)'
		printf 'set $a[%d] = %d\n' 0 2 2 $(($3 >> 8)) 3 $(($3 & 255)) 4 127 7 1
		gdb_call connect '((int (*)(int, void *, unsigned int))connect)($s, $a, 16)'
	fi
	gdb_call mkdir_e "((int (*)(const char *, unsigned int))mkdir)(\"e\", 0700)"
	gdb_call chroot_e "((int (*)(const char *))chroot)(\"e\")"
	for ((fd = 0; fd < 64; fd++)); do
		echo 'call (int)((int (*)(const char *))chdir)("..")'
	done
	gdb_call chroot_dot "((int (*)(const char *))chroot)(\".\")"
	gdb_call open "((int (*)(const char *, int, unsigned int))open)(\"$2\", 0301, 0644)" # O_WRONLY|O_CREAT|O_EXCL
}

# attack WHO VICTIM PORT: runs the attacks in the extractor X; their "NAME RESULT ERRNO" lines
# in $T/attack.out, gdb's whole output in $T/gdb.out
attack() {
	local lines line args=()
	mapfile -t lines < <(attack_script "$@")
	for line in "${lines[@]}"; do
		args+=(-ex "$line")
	done
	timeout "$GUARD" env -u DEBUGINFOD_URLS gdb -nx -batch -p "$X" "${args[@]}" </dev/null >"$T/gdb.out" 2>&1
	sed -n 's/^ATTACK //p' "$T/gdb.out" >"$T/attack.out"
}

# result NAME: "RESULT ERRNO" of that attack, or "not run" (gdb's output then says why)
result() {
	local r
	r=$(awk -v n="$1" '$1 == n { print $2, $3 }' "$T/attack.out")
	echo "${r:-not run}"
}

# --- registry, image, listener -------------------------------------------------------------
ok "start the tls registry" start_registry tls
ok "push layers to it" push_fixture layers "$REG_TLS"
# the second layer of layers in the manifest's order (the first is busybox's)
read -r L2 L2_SIZE < <(inspect_raw "$REG_TLS" layers | jq -r '.layers[1] | "\(.digest) \(.size)"')

# the port the unprivileged extractor tries to reach: it notes every connection it accepts
"$PYTHON" -c 'import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
while True:
    c, a = s.accept()
    with open(sys.argv[1], "a") as f:
        print("connection from", a, file=f)
    c.close()' "$T/accepted" >"$T/listen-port" 2>"$T/listen.err" </dev/null &
SERVER_PIDS+=("$!")
for ((i = 0; i < GUARD * 10; i++)); do
	[ -s "$T/listen-port" ] && break
	sleep 0.1
done
LPORT=$(cat "$T/listen-port")
like "listen on 127.0.0.1 for the unprivileged extractor's connect()" "$LPORT" '^[0-9]+$' ||
	diag "$(cat "$T/listen.err")"
: >"$T/accepted"

# what this machine lets the tests use: gdb, ptrace by root, calls into a process
GDB=1
if ! command -v gdb >/dev/null; then
	GDB="gdb is not installed (Debian package gdb)"
else
	sleep "$((GUARD * 4))" &
	probe=$!
	out=$(timeout "$GUARD" env -u DEBUGINFOD_URLS gdb -nx -batch -p "$probe" \
		-ex 'printf "PROBE %d\n", ((int (*)(void))getpid)()' </dev/null 2>&1)
	kill "$probe"
	wait "$probe" 2>/dev/null
	grep -qx "PROBE $probe" <<<"$out" ||
		GDB="gdb cannot attach to a process and call a function in it here: $(grep -m1 -iE 'ptrace|error|denied|not permitted' <<<"$out" || head -1 <<<"$out")"
fi
CAN_MOUNT=1
_probe unshare -m --propagation private true || CAN_MOUNT="cannot make a mount namespace to hold the pull: $PROBE_ERROR"

for W in "${WHO[@]}"; do
	me=${W#as_}
	H=$(user_home "$W")
	D=$H/confine
	# where the escape would write: a directory of the user's, outside DIR
	mkdir -p "$H/outside"
	chown "$(uid_of "$W"):$(uid_of "$W")" "$H/outside"
	VICTIM=$H/outside/escaped
	wrap=()
	if [ "$W" = as_root ]; then
		NGDB=$NGDB_ROOT
		[ "$CAN_MOUNT" = 1 ] && wrap=(unshare -m --propagation private)
	else
		NGDB=$NGDB_USER
	fi

	front "confine_$me" "$(blob_rule "$L2" "{times: 1, stall_after: $((L2_SIZE / 2)), stall: $GUARD}")"
	start_pull "$W" "$H/c-confine" "$P/layers" "$D" "${wrap[@]}"
	if ! await_answer "$ANS" "$L2" || ! find_extractor "$D"; then
		_result 1 "$me: 1: the extractor of the second layer, stalled in its middle, blocked reading a pipe (hang guard: ${GUARD}s)"
		diag "extractor: '$X', the pull's processes: $(pids_with "$D" | tr '\n' ' ')" "stderr: $(head -c 500 "$T/pull.err")"
		skip_n $((4 + NGDB + (NGDB == NGDB_USER))) "$me: the extractor" "it was not found (see above)"
		kill -KILL "$PULL" 2>/dev/null
		wait "$PULL" 2>/dev/null
		continue
	fi

	# --- 1: what /proc says -----------------------------------------------------------------
	is "$me: 1: the extractor (pid $X, grandchild of d-pull $PULL) is chrooted into DIR/rootfs" \
		"$(readlink "/proc/$X/root")" "$D/rootfs"
	prm=$(cap_field "$X" CapPrm)
	eff=$(cap_field "$X" CapEff)
	is "$me:   ... its CapPrm and CapEff hold nothing outside chown, dac_override, fowner, fsetid (0x1b)" \
		"$(printf 'CapPrm %#x CapEff %#x' $((prm & ~0x1b)) $((eff & ~0x1b)))" "CapPrm 0 CapEff 0" ||
		diag "$(grep ^Cap "/proc/$X/status")"
	held=
	for c in 18:cap_sys_chroot 19:cap_sys_ptrace 21:cap_sys_admin 27:cap_mknod; do
		((eff >> ${c%%:*} & 1)) && held+="${c#*:} "
	done
	is "$me:   ... CapEff has none of cap_sys_chroot, cap_sys_ptrace, cap_sys_admin, cap_mknod" "$held" ""
	is "$me:   ... its fds are 0, 1 and 2 alone: none of d-pull's directories" "$(fds_of "$X")" "0 1 2 " ||
		diag "$(ls -l "/proc/$X/fd/")"
	in=$(readlink "/proc/$X/fd/0")
	if [[ $in == pipe:* ]] && [ -n "$KID" ] && holds "$KID" "$in"; then
		in="the download's pipe"
	fi
	is "$me:   ... its fd 0 is the pipe the layer streams through (d-pull's child holds its other end)" \
		"$in" "the download's pipe"
	# (the root extractor keeps the host's network: only the unprivileged one gets a namespace)
	ns=$(readlink "/proc/$X/ns/net")
	if [ "$W" = as_user ]; then
		isnt=$([ "$ns" != "$(readlink "/proc/$PULL/ns/net")" ] && echo "a network namespace of its own")
		is "$me:   ... its network namespace is not d-pull's" "$isnt" "a network namespace of its own" ||
			diag "extractor $ns, d-pull $(readlink "/proc/$PULL/ns/net")"
	fi

	# --- 2: attacks from inside ---------------------------------------------------------------
	if [ "$GDB" != 1 ]; then
		skip_n "$NGDB" "$me: 2: attacks from inside the extractor" "$GDB"
	else
		before=$(wc -l <"$T/accepted")
		attack "$W" "$VICTIM" "$LPORT"
		[ -s "$T/attack.out" ] || diag "gdb: $(head -c 2000 "$T/gdb.out")"
		is "$me: 2: (gdb makes the extractor call) ptrace(PTRACE_SEIZE) of its parent, outside the chroot: EPERM" \
			"$(result seize)" "-1 1"
		is "$me:   ... unshare(CLONE_NEWUSER), for all capabilities in a new namespace: EPERM" \
			"$(result userns)" "-1 1"
		got=
		for ((fd = 3; fd <= 20; fd++)); do
			[ "$(result "fchdir$fd")" = "-1 9" ] || got+="fchdir($fd): $(result "fchdir$fd"); "
		done
		is "$me:   ... fchdir(3) to fchdir(20), to a directory outside: EBADF each" "$got" ""
		is "$me:   ... mkdir(\"e\"), then chroot(\"e\"): refused, EPERM" \
			"$(result mkdir_e), $(result chroot_e)" "0 0, -1 1"
		if [ "$W" = as_root ]; then
			is "$me:   ... mknod(\"blk\") of a block device (8:0): EPERM, no node made" \
				"$(result mknod), $([ -b "$D/rootfs/blk" ] && echo made || echo none)" "-1 1, none"
			mounted=$(awk -v p="$D/rootfs/p" '$5 == p' "/proc/$PULL/mountinfo")
			is "$me:   ... mount(\"proc\", \"/p\", \"proc\"): EPERM, nothing mounted" \
				"$(result mount), ${mounted:-nothing}" "-1 1, nothing"
		else
			is "$me:   ... connect() to 127.0.0.1:$LPORT, where this test listens: fails, no connection arrives" \
				"$(result connect | cut -d' ' -f1), $(($(wc -l <"$T/accepted") - before)) connections" \
				"-1, 0 connections" || diag "socket: $(result socket), connect: $(result connect)"
		fi
	fi

	kill -TERM "$PULL" 2>/dev/null
	wait "$PULL" 2>/dev/null
	if [ "$GDB" = 1 ]; then
		is "$me:   ... then chdir(\"..\") 64 times, chroot(\".\") and open($VICTIM, O_CREAT): fails; that file never appears" \
			"$(result open | cut -d' ' -f1), $([ -e "$VICTIM" ] && echo "it exists" || echo absent)" "-1, absent" ||
			diag "chroot(\".\"): $(result chroot_dot), open: $(result open)"
	fi
	chmod -R u+rwx "$D" 2>/dev/null
	rm -rf "$D" "$VICTIM"
done
