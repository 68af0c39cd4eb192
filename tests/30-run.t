#!/bin/bash
# SPDX-License-Identifier: MIT
# d-run: the image's config (command, environment, user, working directory, hostname,
# volumes) in a bubblewrap sandbox that isolates, stays ephemeral and never touches the
# host through the image's symlinks; bad input; a CI-style build job. As root and unprivileged.
# Scripts for the sandbox's shell are single-quoted on purpose:
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC2016
. "$(dirname "$0")/lib.sh"

SUITE_TESTS=115
plan $((2 * SUITE_TESTS + 17))

DEFAULT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

make_ca >/dev/null || exit 1
start_registry tls || exit 1
for f in busybox full hostile-config; do
	push_fixture "$f" "$REG_TLS" >/dev/null || exit 1
done
HAVE_I386=
if have_fixture i386; then
	HAVE_I386=1
	push_fixture i386 "$REG_TLS" >/dev/null || diag "push i386 failed"
fi

# --- helpers -----------------------------------------------------------------
# WHO (as_root or as_user) and H (its home) are set by suite(); status and fds_seen are lib.sh's.

drun() { "$WHO" "$DRUN" "$@"; }

# mkdir_as NAME...: directories owned by WHO
mkdir_as() { "$WHO" mkdir -p "$@"; }

# mkbox NAME CONFIG-JSON: $H/NAME with a copy of box's rootfs and that config.json
mkbox() {
	"$WHO" rm -rf "$H/$1"
	"$WHO" mkdir "$H/$1" &&
		"$WHO" cp -a "$H/box/rootfs" "$H/$1/rootfs" &&
		printf '%s\n' "$2" | "$WHO" tee "$H/$1/config.json" >/dev/null
}

# tree_of DIR: a listing of everything under DIR, to compare before and after
tree_of() { (cd "$1" && find . -printf '%p %y %s %T@\n' | LC_ALL=C sort); }

# if_names: the network interfaces named in a /proc/net/dev on stdin
if_names() { sed -n 's/^ *\([^ :]*\):.*/\1/p' | LC_ALL=C sort | tr '\n' ' '; }

ns_ids() { # the namespaces of the process reading /proc/self/ns
	local n
	for n in mnt pid net ipc uts user cgroup; do readlink "/proc/self/ns/$n"; done
}

suite() {
	WHO=$1
	H=$(user_home "$WHO")
	local me=${WHO#as_} out line before after pid i host_if n uid bg nap eph
	uid=0
	[ "$WHO" = as_user ] && uid=65534

	# --- pull once ------------------------------------------------------------------
	ok "$me: pull busybox" "$WHO" "$DPULL" -q "$REG_TLS/busybox" "$H/box"
	ok "$me: pull full" "$WHO" "$DPULL" -q "$REG_TLS/full" "$H/full"
	mkbox noentry '{"Cmd": null}'
	mkbox user '{"User": "user", "WorkingDir": "/home/user/work", "Hostname": "fixturehost"}'

	# --- command ----------------------------------------------------------------------
	is "$me: Entrypoint + Cmd run as configured" "$(drun "$H/full")" "entry cmd"
	is "$me: CMD replaces Cmd, Entrypoint stays in front" "$(drun "$H/full" x y)" "entry x y"
	is "$me: options after DIR belong to the command (-n to echo)" "$(drun "$H/box" echo -n x; echo y)" "xy"
	is "$me: ls -la after DIR goes to ls" "$(drun "$H/box" ls -la /etc/os-release | cut -c1)" "-"
	is "$me: neither Entrypoint nor Cmd: exit 1" "$(status drun "$H/noentry")" 1
	like "$me: ... with a one-line message naming the problem" "$(cat "$T/err")" '^d-run: .*(Entrypoint|Cmd|command)[^
]*$'
	# d-run leaves the command's look-up to bwrap, which exits 1 naming it
	is "$me: command not in the image: exit 1" "$(status drun "$H/box" no-such-cmd)" 1
	is "$me: ... with bwrap's one line naming it" "$(cat "$T/err")" \
		"bwrap: execvp no-such-cmd: No such file or directory"
	is "$me: absolute path not in the image: exit 1" "$(status drun "$H/box" /bin/no-such-cmd)" 1
	is "$me: absolute path to a non-executable file: exit 1" "$(status drun "$H/box" /etc/passwd)" 1
	"$WHO" cp "$H/box/rootfs/etc/os-release" "$H/user/rootfs/bin/notexec"
	is "$me: non-executable file found in PATH: exit 1" "$(status drun "$H/user" notexec)" 1
	is "$me: exit status is the command's" "$(status drun "$H/box" sh -c 'exit 7')" 7
	is "$me: exit status 0 is passed through" "$(status drun "$H/box" true)" 0
	is "$me: killed by SIGTERM: exit 143" "$(status drun "$H/box" sh -c 'kill -TERM $$')" 143
	is "$me: killed by SIGKILL: exit 137" "$(status drun "$H/box" sh -c 'kill -KILL $$')" 137
	is "$me: stdin passes through (echo hi | d-run box cat)" "$(echo hi | drun "$H/box" cat)" hi
	drun "$H/box" sh -c 'echo out; echo err >&2' >"$T/out" 2>"$T/err"
	is "$me: stdout and stderr stay apart" "$(cat "$T/out")|$(cat "$T/err")" "out|err"
	is "$me: a pipe inside and out" "$(printf 'b\na\n' | drun "$H/box" sort | drun "$H/box" tr a-z A-Z | tr '\n' ' ')" "A B "
	out=$(TERM=xterm-d-run "$WHO" script -qec "$DRUN $H/box sh -c 'tty >/dev/null && echo tty-ok; echo \$TERM'" /dev/null |
		tr -d '\r' | tr '\n' ' ')
	is "$me: with a TTY, tty works inside and TERM is the caller's" "$out" "tty-ok xterm-d-run "
	out=$(TERM=xterm-d-run drun "$H/box" env </dev/null)
	ok "$me: without a TTY, no TERM" test "${out/TERM=/}" = "$out"

	# --- environment ------------------------------------------------------------------
	out=$(FOO_HOST=1 drun "$H/box" env | grep -v '^PWD=' | LC_ALL=C sort | tr '\n' ' ')
	is "$me: environment is exactly PATH, HOME, the image's Env (no host vars)" "$out" \
		"FOO=bar HOME=/root PATH=$DEFAULT_PATH "
	is "$me: -e KEY=VALUE overrides the image's Env" "$(drun -e FOO=baz "$H/box" sh -c 'echo $FOO')" baz
	is "$me: -e KEY=VALUE adds a variable" "$(drun -e NEW='a b' "$H/box" sh -c 'echo "$NEW"')" "a b"
	is "$me: -e KEY passes the caller's value" "$(BAR_HOST=from-host drun -e BAR_HOST "$H/box" sh -c 'echo $BAR_HOST')" from-host
	is "$me: -e KEY passes the caller's value as it is, a leading = too" \
		"$(BAR_HOST='=a=b' drun -e BAR_HOST "$H/box" sh -c 'echo "$BAR_HOST"')" '=a=b'
	out=$(unset NOPE_HOST; drun -e NOPE_HOST "$H/box" env)
	like "$me: -e KEY without a caller's value: the command ran" "$out" 'PATH='
	ok "$me: -e KEY without a caller's value sets nothing" test -n "${out##*NOPE_HOST*}"
	is "$me: default PATH when the image has none" "$(drun "$H/user" sh -c 'echo $PATH')" "$DEFAULT_PATH"
	is "$me: HOME from the user's passwd entry" "$(drun "$H/user" sh -c 'echo $HOME')" /home/user
	is "$me: HOME is / for a uid without passwd entry" "$(drun -u 4242 "$H/box" sh -c 'echo $HOME')" /
	mkbox envhome '{"Env": ["HOME=/custom", "PATH=/bin"], "Cmd": ["sh"]}'
	is "$me: the image's HOME and PATH win over the defaults" "$(drun "$H/envhome" sh -c 'echo $HOME $PATH')" "/custom /bin"

	mkbox envkey '{"Env": ["SECRET_TOKEN", "FOO=bar"], "Cmd": ["sh"]}'
	out=$(SECRET_TOKEN=hunter2 drun "$H/envkey" env)
	is "$me: an image Env entry without = (SECRET_TOKEN) does not take the caller's value" \
		"$(grep -c SECRET_TOKEN <<<"$out") $(grep -cx FOO=bar <<<"$out")" "0 1"
	is "$me: ... while -e SECRET_TOKEN passes it" \
		"$(SECRET_TOKEN=hunter2 drun -e SECRET_TOKEN "$H/envkey" sh -c 'echo $SECRET_TOKEN')" hunter2

	# --- user -------------------------------------------------------------------------
	is "$me: empty User is root (0:0)" "$(drun "$H/box" id -u):$(drun "$H/box" id -g)" "0:0"
	is "$me: User from the config (name)" "$(drun "$H/user" id)" "uid=1000(user) gid=1000(user)"
	is "$me: -u name" "$(drun -u nobody "$H/box" id -u)" 65534
	is "$me: -u uid" "$(drun -u 1000 "$H/box" id)" "uid=1000(user) gid=1000(user)"
	is "$me: -u name:gid" "$(drun -u user:50 "$H/box" id)" "uid=1000(user) gid=50(staff)"
	is "$me: -u name:group-name: bwrap refuses the gid (only numbers)" "$(status drun -u user:staff "$H/box" id)" 1
	is "$me: -u uid:gid" "$(drun -u 1000:50 "$H/box" id)" "uid=1000(user) gid=50(staff)"
	is "$me: -u uid:gid not in the image's files" "$(drun -u 4242:4343 "$H/box" id)" "uid=4242 gid=4343"
	is "$me: -u overrides the config's User" "$(drun -u root "$H/user" id -u)" 0
	is "$me: -r is root" "$(drun -r "$H/user" id -u):$(drun --fakeroot "$H/user" id -g)" "0:0"
	is "$me: unknown user name: exit 1" "$(status drun -u no-such-user "$H/box" true)" 1
	like "$me: ... one line naming the user" "$(cat "$T/err")" '^(d-run|bwrap): [^
]*no-such-user[^
]*$'
	is "$me: a user only the host has (daemon) is unknown: exit 1" "$(status drun -u daemon "$H/box" true)" 1
	is "$me: unknown group name: exit 1" "$(status drun -u user:no-such-group "$H/box" true)" 1
	is "$me: a non-root user can write in /tmp" "$(status drun -u user "$H/box" touch /tmp/x)" 0

	# a FIFO as /etc/passwd: reading it must not wait for a writer that never comes
	mkdir_as "$H/mark"
	chmod 0777 "$H/mark"
	mkbox fifo '{"Cmd": ["sh"]}'
	"$WHO" rm -f "$H/fifo/rootfs/etc/passwd"
	"$WHO" mkfifo "$H/fifo/rootfs/etc/passwd"
	prefix=()
	[ "$WHO" = as_user ] && prefix=(setpriv --reuid=65534 --regid=65534 --clear-groups)
	is "$me: /etc/passwd is a FIFO: -u user does not hang, exit 1, one line on stderr, nothing run" \
		"$(status timeout 60 "${prefix[@]}" "$DRUN" -u user -v "$H/mark:/m" "$H/fifo" touch /m/x) $(wc -l <"$T/err") $(ls -A "$H/mark")" \
		"1 1 "
	rm -f "$H/mark/x"

	# --- working directory, hostname ------------------------------------------------------
	"$WHO" rm -rf "$H/user/rootfs/home/user/work"
	is "$me: WorkingDir is used" "$(drun "$H/user" pwd)" /home/user/work
	ok "$me: a missing WorkingDir is created in DIR/rootfs" test -d "$H/user/rootfs/home/user/work"
	is "$me: no WorkingDir: /" "$(drun "$H/box" pwd)" /
	is "$me: Hostname from the config" "$(drun "$H/user" hostname)" fixturehost

	# --- volumes --------------------------------------------------------------------------
	mkbox data '{"Volumes": {"/data": {}}, "Cmd": ["sh"]}'
	drun "$H/data" sh -c 'echo kept >/data/file'
	is "$me: config volume /data persists to the next run" "$(drun "$H/data" cat /data/file)" kept
	is "$me: ... and is DIR/volumes/data on the host" "$(cat "$H/data/volumes/data/file" 2>&1)" kept
	drun -v /vol "$H/box" sh -c 'echo v >/vol/f'
	is "$me: -v /path persists in DIR/volumes/path" "$(drun -v /vol "$H/box" cat /vol/f):$(cat "$H/box/volumes/vol/f" 2>&1)" "v:v"
	mkdir_as "$H/hv"
	echo host-data >"$H/hv/in"
	drun -v "$H/hv:/mnt/hv" "$H/box" sh -c 'cat /mnt/hv/in >/mnt/hv/out'
	is "$me: -v host:/path binds read-write" "$(cat "$H/hv/out" 2>&1)" host-data
	rm -f "$H/hv/out"
	drun -v "$H/hv:/mnt/hv:rw" "$H/box" sh -c 'cat /mnt/hv/in >/mnt/hv/out'
	is "$me: -v host:/path:rw binds read-write" "$(cat "$H/hv/out" 2>&1)" host-data
	rm -f "$H/hv/out"
	out=$(drun -v "$H/hv:/mnt/hv:ro" "$H/box" sh -c 'cat /mnt/hv/in; touch /mnt/hv/out 2>&1; echo $?')
	like "$me: -v host:/path:ro binds read-only" "$out" $'^host-data\n.*Read-only file system\n1$'
	ok "$me: ... nothing written on the host" test ! -e "$H/hv/out"
	is "$me: -v host-file:/path binds one file" "$(drun -v "$H/hv/in:/etc/in.txt:ro" "$H/box" cat /etc/in.txt)" host-data
	is "$me: -v /dev/... is a device bind" \
		"$(drun -v /dev/zero:/mnt/zero -v /dev/null:/mnt/null "$H/box" sh -c 'echo x >/mnt/null && head -c 3 /mnt/zero | od -An -tx1')" \
		" 00 00 00"
	is "$me: -v a:b:c:d: exit 1" "$(status drun -v "$H/hv:/x:ro:y" "$H/box" true)" 1
	like "$me: ... one line naming the volume" "$(cat "$T/err")" '^d-run: [^
]*:/x:ro:y[^
]*$'
	is "$me: -v mode xx: exit 1" "$(status drun -v "$H/hv:/x:xx" "$H/box" true)" 1
	is "$me: -v relative container path: exit 1" "$(status drun -v "$H/hv:x" "$H/box" true)" 1
	is "$me: -v relative persistent path: exit 1" "$(status drun -v x "$H/box" true)" 1
	is "$me: -v missing host path: exit 1" "$(status drun -v "$H/no-such:/x" "$H/box" true)" 1
	like "$me: ... one line naming the host path" "$(cat "$T/err")" "^d-run: [^
]*$H/no-such[^
]*\$"

	# volumes at /.. (the root) or /../config.json (DIR/config.json, whose "net" and "rw" a run
	# could then set), in the config or as -v; a volume inside another. The run would write there.
	volume_refused() { # DESC CONFIG-JSON D-RUN-OPTIONS...
		local desc=$1 sum
		mkbox volbad "$2"
		sum=$(sha256sum <"$H/volbad/config.json")
		is "$me: volume $desc: exit 1, one line on stderr, nothing run, DIR/config.json unchanged" \
			"$(status drun "${@:3}" -v "$H/mark:/m" "$H/volbad" sh -c 'echo "{\"net\": true}" >/config.json; touch /m/x') $(wc -l <"$T/err") $(wc -c <"$T/out") $(ls -A "$H/mark") $(sha256sum <"$H/volbad/config.json")" \
			"1 1 0  $sum"
		rm -f "$H/mark/x"
	}
	volume_refused '"/../config.json" in the config' '{"Volumes": {"/../config.json": {}}, "Cmd": ["sh"]}'
	volume_refused '"/.." in the config' '{"Volumes": {"/..": {}}, "Cmd": ["sh"]}'
	volume_refused '-v /../config.json' '{"Cmd": ["sh"]}' -v /../config.json
	volume_refused '-v /..' '{"Cmd": ["sh"]}' -v /..
	volume_refused '-v /v -v /v/x (nested)' '{"Cmd": ["sh"]}' -v /v -v /v/x

	# --- mount destinations never leave the rootfs ------------------------------------------
	# bwrap 0.8 follows them: a link to /oldroot/HOST-PATH reaches the host (GHSA-pxhw-h44j-8pfx),
	# a plain absolute link must not lead d-run itself out of the rootfs either
	for prefix in "" /oldroot; do
		tag="${prefix:-plain} link"
		"$WHO" rm -rf "$H/host"
		mkdir_as "$H/host/dir" "$H/host/parent" "$H/host/tmp" "$H/host/etc" "$H/host/wd" "$H/host/cfg"
		mkbox links '{"Cmd": ["sh"], "Volumes": {"/cfg-link/vol": {}}, "WorkingDir": "/wd-link/a/b"}'
		"$WHO" ln -s "$prefix$H/host/dir" "$H/links/rootfs/mnt-link"
		"$WHO" ln -s "$prefix$H/host/parent" "$H/links/rootfs/parent-link"
		"$WHO" ln -s "$prefix$H/host/wd" "$H/links/rootfs/wd-link"
		"$WHO" ln -s "$prefix$H/host/cfg" "$H/links/rootfs/cfg-link"
		"$WHO" rm -f "$H/links/rootfs/etc/resolv.conf"
		"$WHO" ln -s "$prefix$H/host/etc/resolv.conf" "$H/links/rootfs/etc/resolv.conf"
		drun -v "$H/hv:/mnt-link" "$H/links" true >/dev/null 2>&1
		is "$me: $tag as bind destination: host dir untouched" "$(ls -A "$H/host/dir")" ""
		drun -v "$H/hv:/parent-link/sub" "$H/links" true >/dev/null 2>&1
		drun -v "$H/hv:/parent-link/sub2/deeper" "$H/links" true >/dev/null 2>&1
		drun -v "$H/hv/in:/parent-link/file" "$H/links" true >/dev/null 2>&1
		drun -v /parent-link/pvol "$H/links" true >/dev/null 2>&1
		is "$me: $tag as parent of dir, file and persistent volume destinations: nothing created on the host" \
			"$(ls -A "$H/host/parent")" ""
		drun -n "$H/links" true >/dev/null 2>&1
		is "$me: $tag as the config's volume parent, WorkingDir parent, /etc/resolv.conf: host untouched" \
			"$(cd "$H/host" && find . -mindepth 1 | LC_ALL=C sort | tr '\n' ' ')" \
			"./cfg ./dir ./etc ./parent ./tmp ./wd "
		mkbox tmplink '{"Cmd": ["sh"]}'
		"$WHO" rm -rf "$H/tmplink/rootfs/tmp"
		"$WHO" ln -s "$prefix$H/host/tmp/t" "$H/tmplink/rootfs/tmp"
		drun "$H/tmplink" true >/dev/null 2>&1
		is "$me: $tag as /tmp: nothing created on the host" "$(ls -A "$H/host/tmp")" ""
	done
	mkdir_as "$H/host-secret"
	echo secret >"$H/host-secret/secret-marker"
	mkbox fdwd '{"WorkingDir": "/proc/self/fd/7", "Cmd": ["sh"]}'
	out=$(exec 7<"$H/host-secret" && drun "$H/fdwd" sh -c 'ls; cat secret-marker' 2>&1)
	ok "$me: WorkingDir /proc/self/fd/7 does not reach the caller's fd 7" test "${out/secret/}" = "$out"
	is "$me: a command starting with -- is a command, not a bwrap option" \
		"$(status drun "$H/box" --bind / /host sh -c 'ls /host/tmp')" 1
	mkbox dashdash '{"Entrypoint": ["--bind", "/", "/host"], "Cmd": ["sh", "-c", "ls /host/tmp"]}'
	is "$me: an Entrypoint starting with -- is a command, not a bwrap option" "$(status drun "$H/dashdash")" 1

	# --- isolation --------------------------------------------------------------------------
	host_if=$(if_names </proc/net/dev)
	is "$me: all namespaces unshared" \
		"$(drun "$H/box" sh -c 'for n in mnt pid net ipc uts user cgroup; do readlink /proc/self/ns/$n; done' | grep -Fxf <(ns_ids))" ""
	n=$(drun "$H/box" ls /proc | grep -c '^[0-9]')
	ok "$me: fresh /proc shows only the sandbox's few pids ($n)" test "$n" -le 4
	out=$(drun "$H/box" cat /proc/1/cmdline | tr '\0' ' ')
	ok "$me: pid 1 is not the host's init ($out)" test "$out" != "$(tr '\0' ' ' </proc/1/cmdline)"
	is "$me: /dev is minimal: no block devices" "$(drun "$H/box" find /dev -type b)" ""
	like "$me: /dev has null, zero, urandom, tty" "$(drun "$H/box" ls /dev | tr '\n' ' ')" \
		'(^| )null .*tty .*urandom zero '
	is "$me: /tmp is an empty tmpfs" "$(drun "$H/box" sh -c 'ls -A /tmp; grep -c " /tmp tmpfs " /proc/mounts')" 1
	out=$(drun "$H/box" sh -c 'touch /newfile 2>&1; echo $?')
	like "$me: rootfs is read-only by default" "$out" $'Read-only file system\n1$'
	ok "$me: ... nothing written to DIR/rootfs" test ! -e "$H/box/rootfs/newfile"
	mkbox rw '{"Cmd": ["sh"]}'
	drun -w "$H/rw" touch /rw-opt
	ok "$me: -w makes the rootfs writable, writes persist" test -e "$H/rw/rootfs/rw-opt"
	drun --rw "$H/rw" touch /rw-long
	ok "$me: --rw the same" test -e "$H/rw/rootfs/rw-long"
	printf '%s\n' '{"Cmd": ["sh"], "rw": true, "net": true}' | "$WHO" tee "$H/rw/config.json" >/dev/null
	drun "$H/rw" touch /rw-config
	ok "$me: \"rw\": true in config.json makes the rootfs writable" test -e "$H/rw/rootfs/rw-config"
	is "$me: no network by default: only lo" "$(drun "$H/box" cat /proc/net/dev | if_names)" "lo "
	is "$me: -n shares the host's interfaces" "$(drun -n "$H/box" cat /proc/net/dev | if_names)" "$host_if"
	is "$me: --net the same" "$(drun --net "$H/box" cat /proc/net/dev | if_names)" "$host_if"
	is "$me: \"net\": true in config.json shares the host's interfaces" "$(drun "$H/rw" cat /proc/net/dev | if_names)" "$host_if"
	is "$me: with net, /etc/resolv.conf is the host's" "$(drun -n "$H/box" cat /etc/resolv.conf)" "$(cat /etc/resolv.conf)"
	is "$me: with net, /etc/hosts is the host's" "$(drun -n "$H/box" cat /etc/hosts)" "$(cat /etc/hosts)"
	"$WHO" "$DPULL" -q "$REG_TLS/hostile-config" "$H/hostile" 2>/dev/null
	is "$me: an image whose config asks for net gets no network" "$(drun "$H/hostile" cat /proc/net/dev | if_names)" "lo "
	like "$me: an image whose config asks for rw gets a read-only rootfs" \
		"$(drun "$H/hostile" sh -c 'touch /newfile 2>&1; echo $?')" $'Read-only file system\n1$'
	is "$me: no fd of the caller leaks into the sandbox" "$(fds_seen drun "$H/box" ls /proc/self/fd)" "0 1 2 3 "

	# --die-with-parent: kill the caller of d-run, the command must go. The sleep (for years) is
	# named by its argument, made of our pid: no other process, of another test run either,
	# has it. Each wait below is bounded (a minute) against hanging, nothing else.
	nap=$((100000000 + 2 * $$ + (uid > 0)))
	rm -f "$H/parent.pid"
	"$WHO" sh -c 'echo $$ >"$1"; "$2" "$3" sleep "$4" & wait' sh "$H/parent.pid" "$DRUN" "$H/box" "$nap" 2>/dev/null &
	bg=$!
	out="the command never started "
	for ((i = 0; i < 1200; i++)); do
		[ -n "$(pids_of sleep "$nap")" ] && out="" && break
		sleep 0.05
	done
	kill -KILL "$(cat "$H/parent.pid")"
	for ((i = 0; i < 1200; i++)); do
		[ -n "$(pids_of sleep "$nap")" ] || break
		sleep 0.05
	done
	pid=$(pids_of sleep "$nap")
	is "$me: the command dies with d-run's parent (--die-with-parent)" "$out$pid" ""
	xargs -r kill <<<"$pid" # only the sleep we started, by its pid
	{ wait "$bg"; } 2>/dev/null

	# --- ephemeral and shared -------------------------------------------------------------
	before=$(tree_of "$H/box/rootfs")
	# Two runs at once: through a volume both bind (on /home/user, which the image has: a new
	# mount point would change the rootfs), each says it has written its /tmp file, waits for
	# the other's, lists /tmp, says so and waits for the other's listing: both list /tmp while
	# both run. A wait gives up after a minute, against hanging.
	"$WHO" rm -rf "$H/sync"
	mkdir_as "$H/sync"
	eph='w() { i=0; until [ -e "/home/user/$1" ] || [ $((i += 1)) -gt 6000 ]; do sleep 0.01; done; }
touch "/tmp/$1" "/home/user/$1"; w "$2"; ls /tmp; touch "/home/user/$1.listed"; w "$2.listed"'
	drun -v "$H/sync:/home/user" "$H/box" sh -c "$eph" sh a b >"$T/eph-a" &
	bg=$!
	drun -v "$H/sync:/home/user" "$H/box" sh -c "$eph" sh b a >"$T/eph-b"
	wait "$bg"
	is "$me: two runs at once on one DIR have their own /tmp" "$(cat "$T/eph-a") $(cat "$T/eph-b")" "a b"
	drun "$H/box" sh -c 'echo x >/tmp/left'
	is "$me: /tmp does not survive the run" "$(drun "$H/box" ls -A /tmp)" ""
	drun "$H/box" sh -c 'echo x >/etc/x; echo x >/root/x; mkdir /y' 2>/dev/null
	after=$(tree_of "$H/box/rootfs")
	is "$me: runs without rw leave DIR/rootfs unchanged" "$after" "$before"

	# --- 32-bit ---------------------------------------------------------------------------
	is "$me: amd64 image: uname -m is x86_64" "$(drun "$H/box" uname -m)" x86_64
	line="$me: linux/386 image under setarch i686 (uname -m = i686)"
	if [ -z "$HAVE_I386" ]; then
		skip "$line" "no i386 fixture"
	elif ! can_run_i386; then
		skip "$line" "kernel cannot run 32-bit binaries (Exec format error)"
	else
		"$WHO" "$DPULL" -q --platform linux/386 "$REG_TLS/i386" "$H/i386" 2>"$T/err" ||
			diag "pull of the i386 image failed: $(cat "$T/err")"
		is "$line" "$("$WHO" setarch i686 "$DRUN" "$H/i386" uname -m)" i686
	fi

	# --- CI-style build job ---------------------------------------------------------------------
	mkdir_as "$H/ci" "$H/ci/home"
	printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'builder:x:4242:4242:CI builder:/home/builder:/bin/sh' >"$H/ci/passwd"
	printf '%s\n' 'root:x:0:' 'builder:x:4242:' >"$H/ci/group"
	echo "build input" >"$H/ci/home/input.txt"
	printf '%s\n' '[ "$(id -u):$(id -g) $(id -un) $HOME" = "4242:4242 builder /home/builder" ] || exit 10' \
		'[ "$(cat ~/input.txt)" = "build input" ] || exit 11' \
		'touch ~/out 2>/dev/null && exit 12' 'cd ~ && pwd >/tmp/pwd && [ "$(cat /tmp/pwd)" = /home/builder ] || exit 13' \
		'exit 3' >"$H/ci/build.sh"
	chmod -R a+rX "$H/ci"
	CI_ARGS=(-v "$H/ci/passwd:/etc/passwd:ro" -v "$H/ci/group:/etc/group:ro" -v "$H/ci/home:/home/builder:ro"
		-v "$H/ci/build.sh:/build.sh:ro")
	is "$me: CI job as builder (uid 4242 from the bound passwd): the script's exit 3" \
		"$(status drun "${CI_ARGS[@]}" -u builder "$H/box" sh /build.sh)" 3 || diag "$(cat "$T/err")"
	is "$me: CI job as -u 4242:4242: the script's exit 3" \
		"$(status drun "${CI_ARGS[@]}" -e HOME=/home/builder -u 4242:4242 "$H/box" sh /build.sh)" 3
}

# A user whose sandbox cannot be made here (or whose pulls cannot unpack) has its suite skipped.
BAD_WHO=as_user
for WHO in as_root as_user; do
	why=$(why_cannot_run "$WHO")
	if [ -z "$why" ]; then
		suite "$WHO"
	else
		skip_n "$SUITE_TESTS" "${WHO#as_}: the d-run suite" "$why"
		[ "$WHO" = as_user ] && BAD_WHO=as_root
	fi
done

# --- bad input: one line, the right exit code, nothing started ----------------------------
# As the user, or as root where the user's suite could not run (then the box is pulled here).
WHO=$BAD_WHO
H=$(user_home "$WHO")
[ -d "$H/box" ] || "$WHO" "$DPULL" -q "$REG_TLS/busybox" "$H/box" || diag "pull busybox as $WHO failed"
mkdir_as "$H/marker"
MARK=(-v "$H/marker:/m")
bad() { # DESC CONFIG-JSON EXIT [D-RUN ARGS...]: config.json of $H/bad is CONFIG-JSON
	local desc=$1 config=$2 want=$3 rc
	shift 3
	"$WHO" rm -rf "$H/bad"
	"$WHO" mkdir -p "$H/bad/rootfs"
	"$WHO" cp -a "$H/box/rootfs/." "$H/bad/rootfs/"
	[ "$config" = - ] || printf '%s\n' "$config" | "$WHO" tee "$H/bad/config.json" >/dev/null
	rc=$(status drun "$@")
	is "bad input: $desc: exit $want, one line on stderr, nothing run" \
		"$rc $(wc -l <"$T/err") $(wc -c <"$T/out") $(ls -A "$H/marker")" "$want 1 0 "
	rm -f "$H/marker/x"
}
bad "no DIR" '{}' 2
is "bad input: unknown option: exit 2, nothing run" "$(status drun --bogus "${MARK[@]}" "$H/box" touch /m/x) $(ls -A "$H/marker")" "2 "
like "bad input: unknown option: the message names it" "$(head -n1 "$T/err")" "(^|/)d-run: .*bogus"
bad "missing DIR" '{}' 1 "${MARK[@]}" "$H/no-such-dir" touch /m/x
bad "no config.json" - 1 "${MARK[@]}" "$H/bad" touch /m/x
bad "malformed config.json" '{"Cmd": ["sh"' 1 "${MARK[@]}" "$H/bad" touch /m/x
bad "config.json not an object" '["sh"]' 1 "${MARK[@]}" "$H/bad" touch /m/x
bad '"Cmd": "x"' '{"Cmd": "x"}' 1 "${MARK[@]}" "$H/bad"
bad '"net": "yes"' '{"net": "yes"}' 1 "${MARK[@]}" "$H/bad" touch /m/x
bad '"rw": 1' '{"rw": 1}' 1 "${MARK[@]}" "$H/bad" touch /m/x
bad '"Env": [1]' '{"Env": [1]}' 1 "${MARK[@]}" "$H/bad" touch /m/x
bad '"User": 5' '{"User": 5}' 1 "${MARK[@]}" "$H/bad" touch /m/x
bad '"Volumes": ["/x"]' '{"Volumes": ["/x"]}' 1 "${MARK[@]}" "$H/bad" touch /m/x
bad '"WorkingDir": 1' '{"WorkingDir": 1}' 1 "${MARK[@]}" "$H/bad" touch /m/x
like "bad input: the message names the key" "$(cat "$T/err")" '^d-run: .*config\.json.*WorkingDir'
is "-h: usage on stdout, exit 0" "$(status drun -h) $(head -c 12 "$T/out")" "0 usage: d-run"
like "usage names every option" "$(cat "$T/out")" '-v VOLUME.*-e KEY.*-u USER.*-n\|--net.*-w\|--rw.*DIR \[CMD\.\.\.\]'
