#!/bin/bash
# SPDX-License-Identifier: MIT
# Issue 8: hostile images, registries and users, as root and unprivileged.
#  1+2  no volume destination or WorkingDir that resolves into /proc or /dev, however spelled
#       (a link in the image, or one a run left in a volume the WorkingDir lies in); volumes
#       never nest, in either order; d-pull drops such keys from an image's config
#  3    credentials go only to the registry named and its own realm, never after a redirect
#  4    the layer cache must be the caller's, not writable by others; planted entries are refused
#  5    bounded work: many opaque markers, a 4 GiB zero file, one layer listed 400 times
#  6    a token with CR/LF, an index entry without digest, a bad layer size: clear errors
# Images come from tests/hostile2.py; tests/proxy.py sits in front of the registries.
# A test that guards against a hang or quadratic work runs its command under `timeout`
# ($D_TEST_HANG_GUARD seconds, default 120) and says so in its name.
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC2016
. "$(dirname "$0")/lib.sh"

# Both users, where this machine lets them make the user namespaces and the sandbox
sandbox_users WHO
NW=${#WHO[@]}
NU=0 # 1 when the unprivileged user's tests run
[ "${WHO[NW - 1]}" = as_user ] && NU=1
GUARD=${D_TEST_HANG_GUARD:-120}
OPQ_N=20000 # markers (and files) for the quadratic shapes: ~2 min per 10000 before the fix
DUP_N=400
# set-up, d-run, d-pull's config, credentials, cache, opaque, zeros, 400 layers, CR/LF, manifests
plan $((4 + NW * 31 + NW * 3 + (1 + NW * 2) + (NW * 8 + NU * 2) + NW * 4 + NW + NW * 2 + (NW + 1) + (1 + NW * 2) + (1 + NW * 2 + NW * 5)))

# --- helpers (run, expect_failure, start_proxy... are lib.sh's) ----------------------------

# other_uid WHO: the uid of the other user
other_uid() { if [ "$1" = as_root ]; then echo 65534; else echo 0; fi; }

# --- registries, proxies' upstreams, images -------------------------------------------
ok "start the tls and token registries" eval 'start_registry tls && start_registry token'
ok "push busybox to the tls registry, private/busybox to the token registry" \
	eval 'push_fixture busybox "$REG_TLS" && push_fixture busybox "$REG_TOKEN" private/busybox'
HOSTW=$T/hostw # the host directory the /proc escapes aim at: writable by both users
mkdir -p "$HOSTW"
chmod 0777 "$HOSTW"
BADCFG=$(jq -nc --arg h "$HOSTW" '{WorkingDir: "/proc/self/fd/3", Volumes: {
	("/proc/self/cwd/oldroot" + $h + "/PWNED-pull"): {}, "//proc/x": {}, "/./dev/fd": {},
	"/dev/shm/x": {}, "/proc": {}, "/proc/thread-self/cwd/x": {}, "/ok": {}, "/tmp/ok": {}}}')
PWNCFG=$(jq -nc --arg h "$HOSTW" '{WorkingDir: "/proc/self/fd/3",
	Volumes: {("/proc/self/cwd/oldroot" + $h + "/PWNED-pull"): {}}}')
build_images() {
	"$PYTHON" "$SRC/tests/hostile2.py" "$REG_TLS" "$FIXTURES" "config:badcfg:$BADCFG" "config:pwncfg:$PWNCFG" \
		"opq-repeat:$OPQ_N" opq-deep:1500 opq-siblings:5000 "opq-root:$OPQ_N" zeros tiny "dup:$DUP_N" \
		"dupbad:$DUP_N" >"$T/images"
}
ok "hostile2.py builds and pushes the images" build_images
BUSYBOX_LAYER=$(inspect_raw "$REG_TLS" busybox | jq -r '.layers[0].digest')
SECOND_LAYER=$(sed -n 's/^dupbad [^ ]* //p' "$T/images")
like "the images are in the registry" "$BUSYBOX_LAYER $SECOND_LAYER" '^sha256:[0-9a-f]{64} sha256:[0-9a-f]{64}$'

# --- 1+2: d-run: /proc and /dev are never a mount destination nor the working directory -----

drun() { "$W" "$DRUN" "$@"; }
# mkbox NAME FROM CONFIG-JSON: $H/NAME with a copy of $H/FROM/rootfs and that config.json
mkbox() {
	"$W" rm -rf "$H/$1"
	"$W" mkdir "$H/$1" && "$W" cp -a "$H/$2/rootfs" "$H/$1/rootfs" &&
		printf '%s\n' "$3" | "$W" tee "$H/$1/config.json" >/dev/null
}
# refused DESC WHAT REGEX FROM CONFIG-JSON [D-RUN-OPTIONS...]: d-run of a box made from FROM
# exits 1 with one line "d-run: ..." that contains WHAT and, besides it, matches REGEX; the
# command (which would touch /m/ran) does not run; nothing appears in $HOSTW. PREP, when set,
# is a command that WHO runs once the box is made (and PREP is emptied).
PREP=()
refused() {
	local desc=$1 what=$2 re=$3 rc line problems=()
	mkbox bad "$4" "$5"
	[ ${#PREP[@]} -eq 0 ] || "$W" "${PREP[@]}"
	PREP=()
	rc=$(status drun -v "$H/mark:/m" "${@:6}" "$H/bad" sh -c 'touch /m/ran; ls /')
	line=$(head -n 1 "$T/err")
	[ "$rc" = 1 ] || problems+=("exit status $rc, want 1")
	[ "$(wc -l <"$T/err")" = 1 ] || problems+=("$(wc -l <"$T/err") lines on stderr, want 1")
	[[ $line == "d-run: "* ]] || problems+=("stderr does not start with d-run:")
	[[ $line == *"$what"* ]] || problems+=("stderr does not name $what")
	[[ ${line/"$what"/} =~ $re ]] || problems+=("stderr does not say $re")
	[ ! -s "$T/out" ] && [ -z "$(ls -A "$H/mark")" ] || problems+=("the command ran")
	[ -z "$(ls -A "$HOSTW")" ] || problems+=("created on the host: $(ls -A "$HOSTW")")
	[ ${#problems[@]} -eq 0 ] || problems+=("stderr: $(head -c 1000 "$T/err")")
	is "$me: $desc: refused (exit 1, one line naming it$([ "$re" = "$UNDER" ] && echo ", under /proc or /dev"))" \
		"$(printf '%s\n' "${problems[@]}")" ""
	rm -rf "${HOSTW:?}"/* "$H/mark/ran"
}
UNDER='/proc|/dev'
PWN=/proc/self/cwd/oldroot$HOSTW

for W in "${WHO[@]}"; do
	H=$(user_home "$W")
	me=${W#as_}
	"$W" "$DPULL" -q "$REG_TLS/busybox" "$H/box" 2>"$T/err" || diag "$me: pull busybox failed: $(err)"
	"$W" mkdir -p "$H/mark" "$H/hv"
	# an image with links into /proc and /dev, and /proc/self/cwd/oldroot as plain
	# directories in its rootfs, as a layer can ship them
	mkbox links box '{"Cmd": ["sh"]}'
	"$W" ln -s /proc/self/cwd "$H/links/rootfs/p"
	"$W" ln -s ../dev "$H/links/rootfs/d"
	"$W" mkdir -p "$H/links/rootfs/proc/self/cwd/oldroot"
	mkbox bare box '{"Cmd": ["sh"]}' # the same links, without the directories
	"$W" ln -s /proc/self/cwd "$H/bare/rootfs/p"
	"$W" ln -s ../dev "$H/bare/rootfs/d"

	refused "config volume $PWN/PWNED-cfg (bwrap would create it on the host)" "$PWN/PWNED-cfg" "$UNDER" \
		box "{\"Cmd\": [\"sh\"], \"Volumes\": {\"$PWN/PWNED-cfg\": {}}}"
	refused "-v $PWN/PWNED-v" "$PWN/PWNED-v" "$UNDER" box '{"Cmd": ["sh"]}' -v "$PWN/PWNED-v"
	refused "-v HOST:/proc/thread-self/cwd/oldroot$HOSTW/PWNED-bind" \
		"/proc/thread-self/cwd/oldroot$HOSTW/PWNED-bind" "$UNDER" box '{"Cmd": ["sh"]}' \
		-v "$H/hv:/proc/thread-self/cwd/oldroot$HOSTW/PWNED-bind"
	refused "-v //proc/x" //proc/x "$UNDER" box '{"Cmd": ["sh"]}' -v //proc/x
	refused "-v /./dev/fd" /./dev/fd "$UNDER" box '{"Cmd": ["sh"]}' -v /./dev/fd
	refused "-v HOST:/dev/fd/3" /dev/fd/3 "$UNDER" box '{"Cmd": ["sh"]}' -v "$H/hv:/dev/fd/3"
	refused "-v /proc" /proc "$UNDER" box '{"Cmd": ["sh"]}' -v /proc
	refused "-v /dev" /dev "$UNDER" box '{"Cmd": ["sh"]}' -v /dev
	refused "config volume /dev/shm/x" /dev/shm/x "$UNDER" box '{"Cmd": ["sh"], "Volumes": {"/dev/shm/x": {}}}'
	refused "-v /p/oldroot$HOSTW/PWNED-link, /p -> /proc/self/cwd in the image" \
		"/p/oldroot$HOSTW/PWNED-link" "$UNDER" links '{"Cmd": ["sh"]}' -v "/p/oldroot$HOSTW/PWNED-link"
	refused "-v HOST:/d/shm/x, /d -> ../dev in the image" /d/shm/x "$UNDER" links '{"Cmd": ["sh"]}' \
		-v "$H/hv:/d/shm/x"
	# a dangling link cannot be followed to see where it leads: it is refused as missing
	refused "-v /p/oldroot$HOSTW/PWNED-bare, /p -> /proc/self/cwd in an image without /proc/self" \
		"/p/oldroot$HOSTW/PWNED-bare" "No such file" bare '{"Cmd": ["sh"]}' \
		-v "/p/oldroot$HOSTW/PWNED-bare"
	refused "WorkingDir /proc/self/fd/3 (bwrap's fd on the host's /proc)" /proc/self/fd/3 "$UNDER" \
		box '{"Cmd": ["sh"], "WorkingDir": "/proc/self/fd/3"}'
	# as root there the command could write a host sysctl: only read, and look for our own pid
	mkbox fd3 box '{"Cmd": ["sh"], "WorkingDir": "/proc/self/fd/3"}'
	out=$(drun "$H/fd3" ls 2>/dev/null)
	is "$me: WorkingDir /proc/self/fd/3: the command never sees the host's /proc (the test's pid $$)" \
		"$(grep -cx "$$" <<<"$out")" 0
	refused "WorkingDir /etc/../proc/self/fd/3" /etc/../proc/self/fd/3 "$UNDER" \
		box '{"Cmd": ["sh"], "WorkingDir": "/etc/../proc/self/fd/3"}'
	refused "WorkingDir /proc/thread-self/fd/3" /proc/thread-self/fd/3 "$UNDER" \
		box '{"Cmd": ["sh"], "WorkingDir": "/proc/thread-self/fd/3"}'
	refused "WorkingDir //proc/1" //proc/1 "$UNDER" box '{"Cmd": ["sh"], "WorkingDir": "//proc/1"}'
	refused "WorkingDir /./dev/fd" /./dev/fd "$UNDER" box '{"Cmd": ["sh"], "WorkingDir": "/./dev/fd"}'
	refused "WorkingDir /proc" /proc "$UNDER" box '{"Cmd": ["sh"], "WorkingDir": "/proc"}'
	refused "WorkingDir /dev" /dev "$UNDER" box '{"Cmd": ["sh"], "WorkingDir": "/dev"}'
	refused "WorkingDir $PWN" "$PWN" "$UNDER" box "{\"Cmd\": [\"sh\"], \"WorkingDir\": \"$PWN\"}"
	refused "WorkingDir /p/oldroot, /p -> /proc/self/cwd in the image" /p/oldroot "$UNDER" \
		links '{"Cmd": ["sh"], "WorkingDir": "/p/oldroot"}'
	refused "WorkingDir /d/fd, /d -> ../dev in the image" /d/fd "$UNDER" \
		links '{"Cmd": ["sh"], "WorkingDir": "/d/fd"}'
	# a volume is written by the runs: the working directory is looked up as the sandbox will
	# see it, through the volume, where a run may have left a link
	"$W" rm -rf "$H/proj"
	"$W" mkdir -p "$H/proj"
	"$W" ln -s /proc/self/fd/3 "$H/proj/build"
	refused "WorkingDir /src/build, -v HOST:/src, where a run left build -> /proc/self/fd/3" /src/build "$UNDER" \
		box '{"Cmd": ["sh"], "WorkingDir": "/src/build"}' -v "$H/proj:/src"
	PREP=(sh -c 'mkdir -p "$1/volumes/data" && ln -s /proc/self/fd/3 "$1/volumes/data/link"' sh "$H/bad")
	refused "WorkingDir /data/link in the config volume /data, where a run left link -> /proc/self/fd/3" \
		/data/link "$UNDER" box '{"Cmd": ["sh"], "Volumes": {"/data": {}}, "WorkingDir": "/data/link"}'
	# the whole attack, by an image alone: a CI job binds its project, the image's WorkingDir is
	# in it; the first run leaves the link, the second would start in the host's /proc
	"$W" rm -rf "$H/proj"
	"$W" mkdir -p "$H/proj/build"
	mkbox ci box '{"WorkingDir": "/src/build", "Cmd": ["sh", "-c",
		"if [ -z \"$(pwd)\" ]; then echo HOST-PROC; ls; else cd / && rm -rf /src/build && ln -s /proc/self/fd/3 /src/build; fi"]}'
	drun -v "$H/proj:/src" "$H/ci" >/dev/null 2>&1
	rc=$(status drun -v "$H/proj:/src" "$H/ci")
	is "$me: an image whose first run turns its WorkingDir in a bound directory into a link to /proc/self/fd/3: the second run is refused, never in the host's /proc" \
		"$rc $(grep -c HOST-PROC "$T/out") $(grep -cx "$$" "$T/out")" "1 0 0"
	NESTED='/outer([^/]|$)'
	refused "-v /outer/inner -v /outer (a volume over another one)" /outer/inner "$NESTED" \
		box '{"Cmd": ["sh"]}' -v /outer/inner -v /outer
	refused "config volume /outer/inner, then -v /outer" /outer/inner "$NESTED" \
		box '{"Cmd": ["sh"], "Volumes": {"/outer/inner": {}}}' -v /outer
	refused "-v /outer -v /outer/inner (a volume inside another one)" /outer/inner "$NESTED" \
		box '{"Cmd": ["sh"]}' -v /outer -v /outer/inner

	# /tmp is a fresh tmpfs: volumes there stay allowed
	rm -f "$H/hv/out"
	drun -v "$H/hv:/tmp/build" "$H/box" sh -c 'echo built >/tmp/build/out' 2>"$T/err"
	is "$me: -v HOST:/tmp/build still works" "$(cat "$H/hv/out" 2>&1)" built
	drun -v /tmp/pvol "$H/box" sh -c 'echo kept >/tmp/pvol/f' 2>"$T/err"
	is "$me: -v /tmp/pvol still works and persists" \
		"$(drun -v /tmp/pvol "$H/box" cat /tmp/pvol/f 2>&1):$(cat "$H/box/volumes/tmp/pvol/f" 2>&1)" "kept:kept"
done

# --- 1+2: such keys pulled from an image are refused by d-run, never followed -----------------
# d-pull drops only what would grant host access by itself (net, rw, host paths); /proc and /dev
# as volumes or WorkingDir are d-run's to refuse, wherever config.json got them.
for W in "${WHO[@]}"; do
	H=$(user_home "$W")
	me=${W#as_}
	run "$W" "$DPULL" -q "$REG_TLS/sec/badcfg" badcfg
	is "$me: d-pull of an image with Volumes and WorkingDir under /proc and /dev: exit 0, the config kept" \
		"$? $(jq -c '[(.Volumes // {} | length), .WorkingDir]' "$H/badcfg/config.json" 2>&1)" \
		'0 [8,"/proc/self/fd/3"]'
	rm -rf "${HOSTW:?}"/*
	rc=$(status drun "$H/badcfg" ls)
	like "$me:   ... d-run of it: refused with one line naming /proc or /dev, exit 1" \
		"$rc $(wc -l <"$T/err") $(cat "$T/err")" '^1 1 d-run: .*(/proc|/dev)'
	# the exploit alone: with the other keys, d-run of old stopped at a nested volume
	run "$W" "$DPULL" -q "$REG_TLS/sec/pwncfg" pwncfg
	rm -rf "${HOSTW:?}"/*
	out=$(drun "$H/pwncfg" ls 2>/dev/null)
	is "$me:   ... d-run of an image pulled with such a volume and WorkingDir: nothing created on the host, no host /proc" \
		"$(ls -A "$HOSTW") $(grep -cx "$$" <<<"$out")" " 0"
	rm -rf "${HOSTW:?}"/*
done

# --- 3: credentials only to the registry named and its own realm ------------------------------
# The front proxy forwards to the token registry, but redirects every blob to the evil server,
# which answers each request with a Bearer challenge naming its own realm.
jq -n '[{action: "respond", status: 401, headers: {"WWW-Authenticate":
	"Bearer realm=\"https://{self}/token\",service=\"evil\",scope=\"repository:private/busybox:pull\""}}]' >"$T/evil.json"
ok "start the evil server and the front proxy of the token registry" eval '
	start_proxy evil --rules "$T/evil.json" &&
	jq -n --arg to "https://127.0.0.1:$PORT_EVIL{path}" \
		"[{method: \"GET\", match: \"/blobs/\", action: \"redirect\", location: \$to}]" >"$T/front.json" &&
	start_proxy front --upstream "https://$REG_TOKEN" --rules "$T/front.json"'
FRONT=127.0.0.1:${PORT_FRONT:-1}
auth_json "$T/auth-front/config.json" "$FRONT" alice:secret
for W in "${WHO[@]}"; do
	me=${W#as_}
	: >"$T/proxy-evil/log"
	is "$me: a blob redirected to a server that asks for its own Bearer token: the pull fails, one line" \
		"$(expect_failure "$W" cred "[Aa]uth|401|[Dd]enied|[Rr]edirect|[Cc]redential" \
			env DOCKER_CONFIG="$T/auth-front" XDG_CACHE_HOME="$(user_home "$W")/c-cred" \
			"$DPULL" -q "$FRONT/private/busybox" cred)" ""
	is "$me:   ... and the other server got requests, none with an Authorization header" \
		"$([ -s "$T/proxy-evil/log" ] && echo requests) $(header_names "$T/proxy-evil/log" | grep -c '^authorization$')" \
		"requests 0"
done

# --- 4: the cache: the caller's, not writable by others; planted entries ----------------------
tar -C "$SRC/tests" -czf "$T/planted.tgz" --transform 's|.*|PLANTED|' lib.sh
mkcache() { # WHO NAME [OWNER MODE]: prints XDG_CACHE_HOME, whose d-utils has that owner and mode
	local c
	c=$(user_home "$1")/xdg-$2
	mkdir -p "$c/d-utils"
	chown "$(uid_of "$1"):$(uid_of "$1")" "$c"
	chown "${3:-$(uid_of "$1")}:${3:-$(uid_of "$1")}" "$c/d-utils"
	chmod "${4:-0755}" "$c/d-utils"
	echo "$c"
}
# planted_refused DIR DESC: test "$me: DESC": W's pull into DIR with the cache $c (timeout $GUARD)
# fails naming the layer
planted_refused() {
	is "$me: $2" "$(expect_failure "$W" "$1" "${BUSYBOX_LAYER#sha256:}" env XDG_CACHE_HOME="$c" \
		timeout "$GUARD" "$DPULL" -q "$REG_TLS/busybox" "$1")" ""
}
for W in "${WHO[@]}"; do
	me=${W#as_}
	u=$(uid_of "$W")
	o=$(other_uid "$W")
	if [ "$W" = as_root ]; then
		c=$(mkcache "$W" owner "$o" 0755)
		desc="owned by uid $o"
	else # the user could not write into one of root's unless it is open to all
		c=$(mkcache "$W" owner "$o" 1777)
		desc="owned by root, mode 1777"
	fi
	is "$me: cache directory $desc: refused, one line naming it, no DIR" \
		"$(expect_failure "$W" c1 "$c/d-utils" env XDG_CACHE_HOME="$c" "$DPULL" -q "$REG_TLS/busybox" c1)" ""
	c=$(mkcache "$W" group "$u" 0775)
	is "$me: cache directory group-writable (0775): refused, one line naming it, no DIR" \
		"$(expect_failure "$W" c2 "$c/d-utils" env XDG_CACHE_HOME="$c" "$DPULL" -q "$REG_TLS/busybox" c2)" ""
	c=$(mkcache "$W" other "$u" 0757)
	is "$me: cache directory other-writable (0757): refused, one line naming it, no DIR" \
		"$(expect_failure "$W" c3 "$c/d-utils" env XDG_CACHE_HOME="$c" "$DPULL" -q "$REG_TLS/busybox" c3)" ""

	# planted under the layer's name, in a cache of the caller's
	c=$(mkcache "$W" dangling)
	ln -s "$c/nowhere" "$c/d-utils/$BUSYBOX_LAYER"
	chown -h "$u:$u" "$c/d-utils/$BUSYBOX_LAYER"
	planted_refused c4 "a dangling symlink as the cached layer: refused naming it, no DIR (hang guard: timeout ${GUARD}s)"
	c=$(mkcache "$W" symlink)
	cp "$T/planted.tgz" "$c/planted.tgz"
	ln -s "$c/planted.tgz" "$c/d-utils/$BUSYBOX_LAYER"
	chown -h "$u:$u" "$c/planted.tgz" "$c/d-utils/$BUSYBOX_LAYER"
	planted_refused c5 "a symlink to a file of the caller's as the cached layer: refused naming it, not unpacked"
	c=$(mkcache "$W" fifo)
	mkfifo "$c/d-utils/$BUSYBOX_LAYER"
	chown "$u:$u" "$c/d-utils/$BUSYBOX_LAYER"
	planted_refused c6 "a FIFO as the cached layer: refused naming it, no DIR (hang guard: timeout ${GUARD}s)"
	c=$(mkcache "$W" dir)
	mkdir "$c/d-utils/$BUSYBOX_LAYER"
	chown "$u:$u" "$c/d-utils/$BUSYBOX_LAYER"
	planted_refused c7 "a directory as the cached layer: refused naming it, no DIR"
	c=$(mkcache "$W" foreign)
	cp "$T/planted.tgz" "$c/d-utils/$BUSYBOX_LAYER"
	chown "$o:$o" "$c/d-utils/$BUSYBOX_LAYER"
	# 0666 for the user: else it could not even touch it
	chmod "$([ "$W" = as_root ] && echo 0644 || echo 0666)" "$c/d-utils/$BUSYBOX_LAYER"
	planted_refused c8 "a file of uid $o (mode $(stat -c %a "$c/d-utils/$BUSYBOX_LAYER")) with other content as the cached layer: refused naming it, not unpacked"
done
if [ "$NU" = 1 ]; then # root writes anywhere
	c=$(mkcache as_user readonly 65534 0555)
	is "user: a cache directory of the user's, mode 0555: one line naming it, no DIR" \
		"$(expect_failure as_user c9 "$c/d-utils" env XDG_CACHE_HOME="$c" "$DPULL" -q "$REG_TLS/busybox" c9)" ""
	is "user:   ... and the error is not 'Bad file descriptor'" "$(grep -c 'Bad file descriptor' "$T/err")" 0
fi

# --- 5: bounded work ------------------------------------------------------------------------
# opaque markers: each shape has a lower layer for them to hide; the tree must be exact
files_in() { find "$1" -mindepth 1 -maxdepth 1 -name 'f[0-9]*' | wc -l; }
opaque_tree() { # SHAPE ROOTFS: what is wrong with the tree, nothing when it is right
	local r=$2 n
	[ -d "$r" ] || {
		echo "no rootfs"
		return
	}
	n=$(find "$r" \( -name 'low*' -o -name '.wh.*' \) | wc -l)
	[ "$n" = 0 ] || echo "$n lower files or whiteouts left"
	case $1 in
	repeat) [ "$(files_in "$r/d")" = "$OPQ_N" ] || echo "d holds $(files_in "$r/d") files" ;;
	deep) [ "$(find "$r/c" -name new | wc -l)" = 1500 ] || echo "$(find "$r/c" -name new | wc -l) new files" ;;
	siblings) [ "$(find "$r" -path '*/s*/f*' | wc -l)" = 20000 ] || echo "$(find "$r" -path '*/s*/f*' | wc -l) files" ;;
	root)
		[ ! -e "$r/rootlow" ] || echo "rootlow left"
		[ "$(files_in "$r")" = "$OPQ_N" ] || echo "/ holds $(files_in "$r") files"
		;;
	esac
}
for W in "${WHO[@]}"; do
	me=${W#as_}
	H=$(user_home "$W")
	for shape in repeat deep siblings root; do
		run "$W" timeout "$GUARD" "$DPULL" -q "$REG_TLS/sec/opq-$shape" "opq-$shape"
		st=$?
		case $shape in
		repeat) what="the opaque marker of /d $OPQ_N times among $OPQ_N files" ;;
		deep) what="a chain of 1500 nested opaque directories" ;;
		siblings) what="5000 sibling opaque directories" ;;
		root) what="the root's opaque marker $OPQ_N times among $OPQ_N files" ;;
		esac
		is "$me: $what: exit 0, lower files hidden, the layer's kept (hang guard: timeout ${GUARD}s)" \
			"$st $(opaque_tree "$shape" "$H/opq-$shape/rootfs")" "0 " || diag "stderr: $(head -c 500 "$T/err")"
		chmod -R u+rwx "$H/opq-$shape" 2>/dev/null
		rm -rf "${H:?}/opq-$shape"
	done
done

# a 4 GiB file of zeros in a small zstd layer: holes, not 4 GiB of disk. DIR and the cache are
# on a small tmpfs of the test's, so that a failure cannot fill the real disk.
for W in "${WHO[@]}"; do
	me=${W#as_}
	u=$(uid_of "$W")
	m=$T/tmpfs-$me
	mkdir -p "$m"
	if mount -t tmpfs -o "size=256m,mode=0755,uid=$u,gid=$u" "d-utils-test-$me" "$m" 2>"$T/err"; then
		run "$W" env XDG_CACHE_HOME="$m/cache" timeout "$GUARD" "$DPULL" -q "$REG_TLS/sec/zeros" "$m/zeros"
		st=$?
		is "$me: a zstd layer with a 4 GiB file of zeros: exit 0, size 4 GiB, less than 64 MiB on disk (hang guard: timeout ${GUARD}s)" \
			"$st $(stat -c '%s %b %B' "$m/zeros/rootfs/zeros" 2>&1 | awk '{ print $1, ($2 * $3 < 64 * 2^20) ? "small" : "allocated" }')" \
			"0 4294967296 small" || diag "stderr: $(head -c 500 "$T/err")"
		umount -l "$m"
	else
		skip "$me: a zstd layer with a 4 GiB file of zeros" "cannot mount a tmpfs: $(err)"
	fi
done

# one layer listed 400 times, with 256 open files at most: done, or one line and no DIR
dup_outcome() { # DIR STATUS
	local d
	d=$(user_home "$W")/$1
	if [ "$2" = 0 ] && [ "$(cat "$d/rootfs/tiny" 2>&1)" = tiny ]; then
		echo ok
	elif [ "$2" = 1 ] && [ ! -e "$d" ] && [ "$(wc -l <"$T/err")" = 1 ]; then
		echo ok
	else
		echo "exit $2, DIR $([ -e "$d" ] && echo left || echo gone), $(wc -l <"$T/err") lines: $(head -c 300 "$T/err")"
	fi
}
for W in "${WHO[@]}"; do
	me=${W#as_}
	H=$(user_home "$W")
	run "$W" env XDG_CACHE_HOME="$H/c-dup" timeout "$GUARD" bash -c 'ulimit -n 64 && exec "$@"' lim "$DPULL" -q "$REG_TLS/sec/dup" dup1
	is "$me: one layer listed $DUP_N times, ulimit -n 64, cold cache: pulled, or one line and no DIR (hang guard)" \
		"$(dup_outcome dup1 $?)" ok
	run "$W" env XDG_CACHE_HOME="$H/c-dup2" "$DPULL" -q "$REG_TLS/sec/tiny" tiny
	run "$W" env XDG_CACHE_HOME="$H/c-dup2" timeout "$GUARD" bash -c 'ulimit -n 64 && exec "$@"' lim "$DPULL" -q "$REG_TLS/sec/dup" dup2
	is "$me: one layer listed $DUP_N times, ulimit -n 64, layer cached: pulled, or one line and no DIR (hang guard)" \
		"$(dup_outcome dup2 $?)" ok
done

# the error path: a corrupt layer after the 2000 good ones
printf 'not the layer\n' >"$(blob_path "$REG_STORAGE_TLS" "$SECOND_LAYER")"
for W in "${WHO[@]}"; do
	me=${W#as_}
	is "$me: a corrupt layer after $DUP_N listings of another, ulimit -n 64: one line naming it, no DIR" \
		"$(expect_failure "$W" dupbad "${SECOND_LAYER#sha256:}" env XDG_CACHE_HOME="$(user_home "$W")/c-dupbad" \
			timeout "$GUARD" bash -c 'ulimit -n 64 && exec "$@"' lim "$DPULL" -q "$REG_TLS/sec/dupbad" dupbad)" ""
done
W=${WHO[NW - 1]}
is "${W#as_}: the same without a file limit: one line naming it, no DIR" \
	"$(expect_failure "$W" dupbad "${SECOND_LAYER#sha256:}" env XDG_CACHE_HOME="$(user_home "$W")/c-dupbad2" \
		timeout "$GUARD" "$DPULL" -q "$REG_TLS/sec/dupbad" dupbad)" ""

# --- 6: input checks ---------------------------------------------------------------------------
# a token server whose token carries CR/LF and a header; the registry's proxy asks for it
jq -n '[{action: "respond", headers: {"Content-Type": "application/json"},
	body: ({token: "abc\r\nX-Evil: 1"} | tojson)}]' >"$T/crlf.json"
ok "start a token server with a CR/LF token and a proxy of the tls registry that asks for it" eval '
	start_proxy crlf --rules "$T/crlf.json" &&
	jq -n --arg realm "Bearer realm=\"https://127.0.0.1:$PORT_CRLF/token\",service=\"crlf\"" \
		"[{lacks_header: \"Authorization\", action: \"respond\", status: 401,
		headers: {\"WWW-Authenticate\": \$realm}}]" >"$T/asks.json" &&
	start_proxy asks --upstream "https://$REG_TLS" --rules "$T/asks.json"'
for W in "${WHO[@]}"; do
	me=${W#as_}
	: >"$T/proxy-asks/log"
	is "$me: a token with CR/LF in it: one line, exit 1, no DIR" \
		"$(expect_failure "$W" crlf "[Tt]oken" env XDG_CACHE_HOME="$(user_home "$W")/c-crlf" \
			"$DPULL" -q "127.0.0.1:${PORT_ASKS:-1}/busybox" crlf)" ""
	is "$me:   ... and no request reached the registry with an X-Evil header" \
		"$(header_names "$T/proxy-asks/log" | grep -c '^x-evil$')" 0
done

# manifests served by a proxy of the tls registry: repository NAME's tag latest is the file
# $T/m/NAME, its blobs are busybox's; manifests/(null) is busybox's manifest.
mkdir -p "$T/m"
inspect_raw "$REG_TLS" busybox >"$T/m/busybox"
MANIFEST_SIZE=$(wc -c <"$T/m/busybox")
jq -c '.layers[0].size |= tostring' "$T/m/busybox" >"$T/m/len-string"
jq -c 'del(.layers[0].size)' "$T/m/busybox" >"$T/m/len-missing"
jq -c '.layers[0].size = -1' "$T/m/busybox" >"$T/m/len-negative"
sed -E 's/("layers":[^]]*"size": *)[0-9]+/\11e300/' <(jq -c . "$T/m/busybox") >"$T/m/len-huge"
sed -E 's/("layers":[^]]*"size": *)[0-9]+/\12.5/' <(jq -c . "$T/m/busybox") >"$T/m/len-fraction"
jq -nc --argjson n "$MANIFEST_SIZE" '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
	manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", size: $n,
	platform: {os: "linux", architecture: "amd64"}}]}' >"$T/m/nodigest"
rules='[{"match": "/manifests/[^/]*null", "action": "respond", "body_file": "'$T/m/busybox'",
	"headers": {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}},
	{"match": "^/v2/nodigest/manifests/latest", "action": "respond", "body_file": "'$T/m/nodigest'",
	"headers": {"Content-Type": "application/vnd.oci.image.index.v1+json"}}'
for v in string missing negative huge fraction; do
	rules+=', {"match": "^/v2/len-'$v'/manifests/latest", "action": "respond", "body_file": "'$T/m/len-$v'",
	"headers": {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}}'
done
rules+=', {"match": "^/v2/[^/]+/blobs/", "rewrite": ["^/v2/[^/]+/", "/v2/busybox/"]}]'
printf '%s\n' "$rules" >"$T/m/rules.json"
ok "start a proxy of the tls registry that serves hand-made manifests" \
	start_proxy crafted --upstream "https://$REG_TLS" --rules "$T/m/rules.json"
CRAFTED=127.0.0.1:${PORT_CRAFTED:-1}
for W in "${WHO[@]}"; do
	me=${W#as_}
	: >"$T/proxy-crafted/log"
	is "$me: an index entry without digest: one line naming the index and the missing digest, no DIR" \
		"$(expect_failure "$W" nodigest "([Ii]ndex|nodigest).*digest|digest.*([Ii]ndex|nodigest)" \
			env XDG_CACHE_HOME="$(user_home "$W")/c-nodigest" "$DPULL" -q "$CRAFTED/nodigest" nodigest)" ""
	is "$me:   ... and nothing asked for manifests/(null)" "$(grep -c null "$T/proxy-crafted/log")" 0
done
for W in "${WHO[@]}"; do
	me=${W#as_}
	for v in missing string negative huge fraction; do
		# no "size" in the names: the error must say it
		is "$me: layer size $v ($(jq -c '.layers[0].size' "$T/m/len-$v")): one line about the size, exit 1, no DIR" \
			"$(expect_failure "$W" "len-$v" "[Ss]ize" env XDG_CACHE_HOME="$(user_home "$W")/c-len-$v" \
				"$DPULL" -q "$CRAFTED/len-$v" "len-$v")" ""
	done
done
