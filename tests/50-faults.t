#!/bin/bash
# SPDX-License-Identifier: MIT
# Faults of the network, the registry and the machine, and interruptions, as root and
# unprivileged: what d-pull does when they happen (start(), must_retry(), get() and supervise()
# in d-pull.c).
#  1  500, 502 and 503 on a blob, then its bytes: retried, pulled, only verified blobs cached
#  1b an error answer with a body longer than the layer (a 503 page, the registry's 401 when a
#     token expires): the status counts, not the body: retried, pulled; a 404 says 404
#  1c 429 with Retry-After: 1, once: waited for, retried, pulled; 429 without Retry-After, once:
#     retried as a 5xx; 429 with Retry-After: 3600 (Docker Hub's rate limit, with its
#     ratelimit-limit header, and without): one GET, one line naming HTTP 429, the rate limit,
#     the wait and docker login, no DIR, nothing cached
#  2  500 on a blob forever: 4 tries, then one line naming the status, no DIR, nothing cached
#  3  a connection cut in the middle of a layer, once: resumed where it broke (the second GET
#     asks for Range: bytes=300000-, the registry answers 206 through the proxy), pulled
#  3b the same cut, then a server that ignores Range (the whole blob, 200): one line, exit 1,
#     no DIR, nothing cached
#  3c the same cut, then the rest (206) with a byte inverted: the digest is over the whole
#     blob: digest mismatch, no DIR, nothing cached
#  4  a connection that stalls in a layer, once: given up after the low-speed limit (1 KB/s for
#     30 s), resumed where it stopped (Range), pulled
#  5  a blob redirected to another server: pulled, and the Authorization header (a Bearer token
#     of the token registry) went to the registry only
#  6  a redirect loop, a redirect to file:/// or ftp://: one line, no DIR, nothing read
#  7  an HTML error page with status 200 as a blob: digest mismatch, nothing cached
#  8  nobody listening: curl's "Couldn't connect to server" after ONE connection attempt
#  9  a full disk: DIR on a small tmpfs, then the cache on one: one line, no DIR, the cache sound
#     (the full cache's line is curl's: it names the blob's URL, not the cache)
# 10  8 pulls of one image into one cache at once, then 8 d-runs of one DIR at once
# 11  valgrind over a d-pull and a d-run
# 12  SIGINT, SIGTERM and SIGHUP to d-pull (the process the caller started) during a cold pull
#     of layers, at moments spread from its start to past its end: exit 0 with the whole tree,
#     or 128+N with no DIR; the cache sound; nothing of the pull left running (d-pull waited
#     for its child and the unpacking grandchild); the next pull with that cache gives the
#     tree. Then surely in the middle (the proxy stalls the second layer, the signal goes once
#     the stall began): exactly 128+N, no DIR, the first layer alone cached. SIGINT to the
#     process group, as a terminal's Ctrl-C sends it; SIGINT at the first moment there is a
#     DIR to remove (strace holds d-pull in the mkdirat that made it).
#     A signal the caller ignores (env --ignore-signal=HUP, as nohup) stays ignored, and a
#     child stopped and continued (Ctrl-Z, fg) goes on: both pulls complete.
#     (bash starts a script's background jobs with SIGINT ignored: the pulls here get it back
#     with env --default-signal=INT, as an interactive shell's jobs have it.)
# 13  SIGKILL to d-pull in the middle: nothing can catch it, so DIR stays, but its child dies
#     with it; the next pull works; a pull into the DIR left is refused (already exists), and
#     that DIR stays as it was: d-pull removes only what it made in that run
# tests/proxy.py sits in front of the registries and breaks their real bytes per rule; its logs
# say what reached it and what it answered. Nothing here measures time: a command that could
# hang runs under `timeout` ($D_TEST_HANG_GUARD seconds, default 120, at least 90 for the
# stall of 4), or against a stall of that length, and its test fails then. The delays of 12
# only spread the moments: what is asserted holds wherever the signal lands. Retries pause 2,
# 4 and 8 s: cases 1 and 2 take 14 s each.
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC2016
. "$(dirname "$0")/lib.sh"

# Both users, where this machine lets them make the user namespaces and the sandbox
sandbox_users WHO
NW=${#WHO[@]}
GUARD=${D_TEST_HANG_GUARD:-120}
STALL_GUARD=$((GUARD > 90 ? GUARD : 90))
MANY=8
SIGNALS=(INT TERM HUP)
DELAYS=(0.05 0.15 0.3 0.5)
# set-up; per user: reference, 1, 1b, 1c, 2, 3, 3b, 3c, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13
plan $((4 + NW * (1 + 3 + 4 + 6 + 3 + 4 + 2 + 2 + 4 + 3 + 6 + 2 + 2 + 5 + 4 + 2 + 4 * ${#SIGNALS[@]} + 4 + 2 + 5)))

# --- helpers (run, expect_failure, front, blob_rule, start_pull, pids_with... are lib.sh's) ---

# gets LOG DIGEST: how many GETs of that blob reached the proxy
gets() { jq -r 'select(.method == "GET") | .path' "$1" | grep -c "/blobs/$2\$"; }

# answers ANS DIGEST: the proxy's answers to the GETs of that blob, one a line: the Range asked
# for (- for none), the status, the bytes of the body sent, "cut" if it was, and the answer's
# Content-Range (- for none)
answers() {
	jq -r --arg m "/blobs/$2\$" 'select(.method == "GET" and (.path | test($m))) |
		"\(.range // "-") \(.status) \(.body)\(if .cut then " cut" else "" end) \(
		[.headers[] | select(.[0] | ascii_downcase == "content-range") | .[1]][0] // "-")"' "$1"
}

# tree_sum DIR: a digest of everything in DIR/rootfs (names, types, modes, sizes, link targets,
# contents) and DIR/config.json
tree_sum() {
	[ -d "$1/rootfs" ] || {
		echo "no $1/rootfs"
		return
	}
	(
		cd "$1/rootfs" || exit 1
		find . -printf '%p %y %m %s %l\n' | LC_ALL=C sort
		find . -type f -exec sha256sum {} + | LC_ALL=C sort
		cat ../config.json
	) 2>&1 | sha256sum
}

# cache_check DIR: what is wrong in a cache directory: a name that is not a digest, an entry
# that is not a regular file, a content that does not hash to its name. Nothing when all is right.
cache_check() {
	local f n
	for f in "$1"/* "$1"/.[!.]*; do
		[ -e "$f" ] || [ -L "$f" ] || continue
		n=${f##*/}
		if [[ ! $n =~ ^sha256:[0-9a-f]{64}$ ]]; then
			echo "$n: not a digest"
		elif [ -L "$f" ] || [ ! -f "$f" ]; then
			echo "$n: not a regular file"
		elif [ "sha256:$(sha256sum <"$f" | cut -d' ' -f1)" != "$n" ]; then
			echo "$n: its content hashes to something else"
		fi
	done
}

# forget DIR: remove a pulled DIR (rootfs trees may hold 0555 directories)
forget() {
	chmod -R u+rwx "$1" 2>/dev/null
	rm -rf "$1"
}

# stalled_pull NAME SIG [group]: a cold pull of layers into $H/NAME (cache $H/c-NAME) through a
# proxy that stalls the second layer in its middle ($GUARD s); once the stall began, SIG to
# d-pull, or with group to its process group as a terminal sends Ctrl-C (d-pull then leads a
# session of its own). Sets D and C (DIR and cache), ST (the exit status) and RAN (how many
# processes of the pull ran when the signal went)
stalled_pull() {
	local wrap=()
	[ "${3:-}" = group ] && wrap=(setsid)
	front "$1_$me" "$(blob_rule "$L2" "{times: 1, stall_after: $((L2_SIZE / 2)), stall: $GUARD}")"
	D=$H/$1 C=$H/c-$1 RAN=
	start_pull "$W" "$C" "$P/layers" "$D" "${wrap[@]}"
	if ! await_answer "$ANS" "$L2"; then
		kill -KILL "$PULL" 2>/dev/null
	elif [ ${#wrap[@]} = 1 ]; then
		RAN=$(pids_with "$D" | wc -l)
		kill -s "$2" -- "-$PULL"
	else
		RAN=$(pids_with "$D" | wc -l)
		kill -s "$2" "$PULL"
	fi
	wait "$PULL" 2>/dev/null # no "Killed" from bash
	ST=$?
}

# after_stalled: the two tests that end every interrupted stalled_pull (its cache is C): the
# cache holds the first layer alone, and the next pull with it gives the tree
after_stalled() {
	is "$me:   ... the cache holds the first layer alone, verified" \
		"$(cache_list "$C/d-utils")$(cache_check "$C/d-utils")" "$L1 "
	run "$W" env XDG_CACHE_HOME="$C" timeout "$GUARD" "$DPULL" -q "$REG_TLS/layers" "$D.next"
	is "$me:   ... the next pull with that cache: exit 0, the tree" \
		"$? $(layers_tree "$D.next/rootfs" 2>&1)" "0 $LAYERS_TREE" || diag "stderr: $(head -c 500 "$T/err")"
	forget "$D.next"
}

# on_tmpfs WHO SIZE CMD...: as run, with a tmpfs of SIZE (WHO's, 0755) at $T/tmpfs, mounted in
# a mount namespace of its own that goes when CMD has ended: no one else ever sees it. Prints
# CMD's status, then what is left in the tmpfs, one line.
on_tmpfs() {
	local who=$1 size=$2
	shift 2
	mkdir -p "$T/tmpfs"
	(
		export -f as_root as_user user_home
		export T
		unshare -m --propagation private bash -c '
			mount -t tmpfs -o "size=$1,mode=0755,uid=$2,gid=$2" d-utils-test "$T/tmpfs" || exit
			(cd "$(user_home "$3")" && "$3" "${@:4}") >"$T/out" 2>"$T/err" </dev/null
			echo "$? $(cd "$T/tmpfs" && find . -mindepth 1 | LC_ALL=C sort | tr "\n" " ")"' \
			on_tmpfs "$size" "$(uid_of "$who")" "$who" "$@"
	)
}

# connects FILE PORT: the connect() calls to 127.0.0.1:PORT in an strace log
connects() { grep -c "connect(.*htons($2)" "$1"; }

# --- registries, images, shared proxies ----------------------------------------------------
ok "start the tls and token registries" eval 'start_registry tls && start_registry token'
ok "push busybox and layers to the tls registry, private/busybox to both" eval '
	push_fixture busybox "$REG_TLS" && push_fixture layers "$REG_TLS" &&
	push_fixture busybox "$REG_TLS" private/busybox && push_fixture busybox "$REG_TOKEN" private/busybox &&
	push_fixture layers "$REG_TOKEN" private/layers'
LAYER=$(inspect_raw "$REG_TLS" busybox | jq -r '.layers[0].digest')
LAYERS=$(inspect_raw "$REG_TLS" layers | jq -r '.layers[].digest' | LC_ALL=C sort -u | tr '\n' ' ')
like "the images are in the registries" "$LAYER $LAYERS" '^sha256:[0-9a-f]{64}( sha256:[0-9a-f]{64}){5} $'
LAYER_SIZE=$(inspect_raw "$REG_TLS" busybox | jq -r '.layers[0].size')
# 12, 13: the first two layers of layers in the manifest's order (busybox's, then a small one)
read -r L1 L2 L2_SIZE < <(inspect_raw "$REG_TLS" layers | jq -r '.layers | "\(.[0].digest) \(.[1].digest) \(.[1].size)"')

# 5: the "CDN" serves the tls registry's private/busybox (the same blobs) to anyone; the front
# proxy of the token registry redirects every blob there, as Docker Hub does to its CDN
ok "start the CDN proxy and the front proxy of the token registry" eval '
	start_proxy cdn --upstream "https://$REG_TLS" &&
	start_proxy tokfront --upstream "https://$REG_TOKEN" --rule "$(jq -nc --arg to "https://127.0.0.1:$PORT_CDN{path}" \
		"{method: \"GET\", match: \"/blobs/\", action: \"redirect\", location: \$to}")"'
TOKFRONT=127.0.0.1:${PORT_TOKFRONT:-1}
auth_json "$T/auth/config.json" "$TOKFRONT" alice:secret

# what this machine lets the tests use
CAN_MOUNT=1
_probe unshare -m --propagation private true || CAN_MOUNT="cannot make a mount namespace: $PROBE_ERROR"
ASAN=
grep -q __asan_init "$DPULL" && ASAN="an ASan build ($DPULL): valgrind cannot run it"
VG_DRUN=1
if ! command -v valgrind >/dev/null; then
	VG_DRUN="valgrind is not installed"
elif ! _probe valgrind -q perl -e 'my ($p, $h) = ("/", pack("QQQ", 0, 0, 0));
	syscall(437, -100, $p, $h, 24) >= 0 or die "openat2: $!\n"'; then
	VG_DRUN="$(valgrind --version) does not know openat2 (syscall 437), which d-run needs: ${PROBE_ERROR#--*-- }"
fi

# 8: a port bound but not listening refuses connections, and no one else can take it meanwhile
"$PYTHON" -c 'import socket, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
time.sleep(3600)' >"$T/closed-port" 2>/dev/null &
SERVER_PIDS+=("$!")
for ((i = 0; i < 100; i++)); do
	[ -s "$T/closed-port" ] && break
	sleep 0.1
done
CLOSED=$(cat "$T/closed-port")

for W in "${WHO[@]}"; do
	me=${W#as_}
	H=$(user_home "$W")
	STRACE=1
	_probe "$W" strace -o /dev/null true || STRACE="strace cannot run here: $PROBE_ERROR"
	HOLD=$STRACE
	[ "$HOLD" != 1 ] || _probe "$W" strace -o /dev/null -e trace=mkdirat -e inject=mkdirat:delay_exit=1 true ||
		HOLD="strace cannot delay a system call here: $PROBE_ERROR"

	# what a pull of busybox gives without faults
	run "$W" env XDG_CACHE_HOME="$H/c-ref" timeout "$GUARD" "$DPULL" -q "$REG_TLS/busybox" ref
	is "$me: a reference pull of busybox straight from the registry: exit 0, nothing said" \
		"$? $(head -c 500 "$T/err")" "0 "
	REF=$(tree_sum "$H/ref")

	# --- 1: 500, 502, 503, then the blob ------------------------------------------------------
	front "retry_$me" "$(blob_rule "$LAYER" '{times: 1, action: "respond", status: 500}')" \
		"$(blob_rule "$LAYER" '{times: 1, action: "respond", status: 502}')" \
		"$(blob_rule "$LAYER" '{times: 1, action: "respond", status: 503}')"
	run "$W" env XDG_CACHE_HOME="$H/c-retry" timeout "$GUARD" "$DPULL" -q "$P/busybox" retry
	is "$me: 1: the layer answered 500, 502, 503, then served: pulled, the same tree (hang guard: timeout ${GUARD}s)" \
		"$? $(tree_sum "$H/retry")" "0 $REF" || diag "stderr: $(head -c 500 "$T/err")"
	is "$me:   ... the layer was asked for 4 times" "$(gets "$LOG" "$LAYER")" 4
	is "$me:   ... the cache holds the layer alone, verified" \
		"$(cache_list "$H/c-retry/d-utils")$(cache_check "$H/c-retry/d-utils")" "$LAYER "
	forget "$H/retry"

	# --- 1b: error pages longer than the layer ------------------------------------------------
	# A small layer of the layers image (a few hundred bytes); d-pull once counted an error
	# answer's body against the layer's size, and failed on a write error instead
	SMALL=$(inspect_raw "$REG_TLS" layers | jq -r '[.layers[] | select(.size < 1000)][0].digest')
	head -c 4000 /dev/zero | tr '\0' x >"$T/page"
	front "bigpage_$me" "$(blob_rule "$SMALL" "{times: 1, action: \"respond\", status: 503, body_file: \"$T/page\"}")"
	run "$W" env XDG_CACHE_HOME="$H/c-bigpage" timeout "$GUARD" "$DPULL" -q "$P/layers" bigpage
	is "$me: 1b: a 503 with a 4000-byte page on a layer smaller than that: retried, pulled (hang guard: timeout ${GUARD}s)" \
		"$? $(gets "$LOG" "$SMALL")" "0 2" || diag "stderr: $(head -c 500 "$T/err")"
	forget "$H/bigpage"
	front "bigmiss_$me" "$(blob_rule "$SMALL" "{action: \"respond\", status: 404, body_file: \"$T/page\"}")"
	is "$me:   ... a 404 with that page: one line naming HTTP 404, exit 1, no DIR" \
		"$(expect_failure "$W" bigmiss "HTTP 404" env XDG_CACHE_HOME="$H/c-bigmiss" \
			timeout "$GUARD" "$DPULL" -q "$P/layers" bigmiss)" ""
	is "$me:   ... asked for once, nothing of it cached" \
		"$(gets "$LOG" "$SMALL") $(cache_list "$H/c-bigmiss/d-utils" | grep -c "$SMALL")" "1 0"
	# the token expires: the registry's own challenge for that blob, with the long page
	CH=$(curl -s -D - -o /dev/null "https://$REG_TOKEN/v2/private/layers/blobs/$SMALL" |
		sed -n 's/^www-authenticate: //Ip' | tr -d '\r')
	start_proxy "expired_$me" --upstream "https://$REG_TOKEN" --rule "$(jq -nc --arg m "/blobs/$SMALL\$" \
		--arg ch "$CH" --rawfile b "$T/page" '{method: "GET", match: $m, times: 1, action: "respond",
		status: 401, headers: {"WWW-Authenticate": $ch}, body: $b}')"
	P=127.0.0.1:$(cat "$T/proxy-expired_$me/port" 2>/dev/null || echo 1)
	auth_json "$T/auth-$me/config.json" "$P" alice:secret
	run "$W" env DOCKER_CONFIG="$T/auth-$me" XDG_CACHE_HOME="$H/c-expired" timeout "$GUARD" \
		"$DPULL" -q "$P/private/layers" expired
	is "$me:   ... a 401 with the registry's challenge and that page (an expired token): a new token, pulled" \
		"$? $(gets "$T/proxy-expired_$me/log" "$SMALL")" "0 2" || diag "stderr: $(head -c 500 "$T/err")"
	forget "$H/expired"

	# --- 1c: 429 -----------------------------------------------------------------------------
	front "wait1_$me" "$(blob_rule "$LAYER" '{times: 1, action: "respond", status: 429, headers: {"Retry-After": "1"}}')"
	run "$W" env XDG_CACHE_HOME="$H/c-wait1" timeout "$GUARD" "$DPULL" -q "$P/busybox" wait1
	is "$me: 1c: the layer answered 429 with Retry-After: 1, once: waited for, pulled, the same tree (hang guard: timeout ${GUARD}s)" \
		"$? $(tree_sum "$H/wait1")" "0 $REF" || diag "stderr: $(head -c 500 "$T/err")"
	is "$me:   ... the layer was asked for twice" "$(gets "$LOG" "$LAYER")" 2
	forget "$H/wait1"
	front "noafter_$me" "$(blob_rule "$LAYER" '{times: 1, action: "respond", status: 429}')"
	run "$W" env XDG_CACHE_HOME="$H/c-noafter" timeout "$GUARD" "$DPULL" -q "$P/busybox" noafter
	is "$me:   ... 429 without Retry-After, once: retried as a 5xx, pulled, the layer asked for twice" \
		"$? $(gets "$LOG" "$LAYER")" "0 2" || diag "stderr: $(head -c 500 "$T/err")"
	forget "$H/noafter"
	# Docker Hub's answer when the anonymous pulls of 6 hours are used up
	front "hub_$me" "$(blob_rule "$LAYER" '{action: "respond", status: 429, headers: {"Retry-After": "3600",
		"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "0;w=21600", "Content-Type": "application/json"},
		body: "{\"errors\":[{\"code\":\"TOOMANYREQUESTS\",\"message\":\"You have reached your pull rate limit.\"}]}"}')"
	is "$me:   ... 429 with Retry-After: 3600 and Docker Hub's ratelimit headers: exit 1, no DIR, one line: HTTP 429 from URL: rate limit, the wait, docker login" \
		"$(expect_failure "$W" hub "^d-pull: $P/busybox: HTTP 429 from https://$P/v2/busybox/blobs/$LAYER: rate limit: wait 3600 s, or log in \(docker login\)\$" \
			env XDG_CACHE_HOME="$H/c-hub" timeout "$GUARD" "$DPULL" -q "$P/busybox" hub)" ""
	is "$me:   ... the layer asked for once, nothing cached" \
		"$(gets "$LOG" "$LAYER") $(cache_list "$H/c-hub/d-utils")" "1 "
	front "toomany_$me" "$(blob_rule "$LAYER" '{action: "respond", status: 429, headers: {"Retry-After": "3600"}}')"
	is "$me:   ... 429 with Retry-After: 3600 alone: exit 1, no DIR, one line naming HTTP 429, the wait and docker login; asked for once" \
		"$(expect_failure "$W" toomany "^d-pull: $P/busybox: HTTP 429 from https://$P/v2/busybox/blobs/$LAYER: .*3600 s.*log in \(docker login\)\$" \
			env XDG_CACHE_HOME="$H/c-toomany" timeout "$GUARD" "$DPULL" -q "$P/busybox" toomany)$(gets "$LOG" "$LAYER")" 1

	# --- 2: 500 forever ---------------------------------------------------------------------
	front "e500_$me" "$(blob_rule "$LAYER" '{action: "respond", status: 500, body: "oops"}')"
	is "$me: 2: the layer answers 500 forever: one line naming HTTP 500, exit 1, no DIR (hang guard: timeout ${GUARD}s)" \
		"$(expect_failure "$W" e500 "HTTP 500" env XDG_CACHE_HOME="$H/c-e500" \
			timeout "$GUARD" "$DPULL" -q "$P/busybox" e500)" ""
	is "$me:   ... after 4 tries" "$(gets "$LOG" "$LAYER")" 4
	is "$me:   ... and nothing in the cache" \
		"$(cache_list "$H/c-e500/d-utils")$(cache_check "$H/c-e500/d-utils")" ""

	# --- 3: a connection cut in a layer, once ------------------------------------------------
	front "cut_$me" "$(blob_rule "$LAYER" '{times: 1, cut_after: 300000}')"
	run "$W" env XDG_CACHE_HOME="$H/c-cut" timeout "$GUARD" "$DPULL" -q "$P/busybox" cut
	is "$me: 3: the connection drops after 300000 bytes of the layer, once: pulled, the same tree (hang guard: timeout ${GUARD}s)" \
		"$? $(tree_sum "$H/cut")" "0 $REF" || diag "stderr: $(head -c 500 "$T/err")"
	is "$me:   ... the layer was asked for twice" "$(gets "$LOG" "$LAYER")" 2
	is "$me:   ... the second GET asked for the rest from the byte where the cut was (Range: bytes=300000-), and the registry answered 206 through the proxy" \
		"$(answers "$ANS" "$LAYER" | tr '\n' '|')" \
		"- 200 300000 cut -|bytes=300000- 206 $((LAYER_SIZE - 300000)) bytes 300000-$((LAYER_SIZE - 1))/$LAYER_SIZE|"
	is "$me:   ... the cache holds the layer alone, verified" \
		"$(cache_list "$H/c-cut/d-utils")$(cache_check "$H/c-cut/d-utils")" "$LAYER "
	forget "$H/cut"

	# --- 3b: the same cut, then a server that ignores Range -----------------------------------
	front "norange_$me" "$(blob_rule "$LAYER" '{times: 1, cut_after: 300000}')" "$(blob_rule "$LAYER" '{strip: ["Range"]}')"
	is "$me: 3b: the same cut, then a server that ignores Range: one line, the range was not served, exit 1, no DIR (hang guard: timeout ${GUARD}s)" \
		"$(expect_failure "$W" norange "^d-pull: https://$P/v2/busybox/blobs/$LAYER: .*(range was not delivered|support byte ranges)" \
			env XDG_CACHE_HOME="$H/c-norange" timeout "$GUARD" "$DPULL" -q "$P/busybox" norange)" ""
	is "$me:   ... the second GET asked for the rest and got the whole layer (200); nothing cached" \
		"$(answers "$ANS" "$LAYER" | tr '\n' '|')$(cache_list "$H/c-norange/d-utils")" \
		"- 200 300000 cut -|bytes=300000- 200 $LAYER_SIZE -|"

	# --- 3c: the same cut, then the rest with a byte inverted ---------------------------------
	front "badrest_$me" "$(blob_rule "$LAYER" '{times: 1, cut_after: 300000}')" "$(blob_rule "$LAYER" '{corrupt_at: 1000}')"
	is "$me: 3c: the same cut, then the rest (206) with a byte inverted: one line saying digest mismatch, exit 1, no DIR (hang guard: timeout ${GUARD}s)" \
		"$(expect_failure "$W" badrest "^d-pull: $LAYER: digest mismatch" \
			env XDG_CACHE_HOME="$H/c-badrest" timeout "$GUARD" "$DPULL" -q "$P/busybox" badrest)" ""
	is "$me:   ... the second GET asked for the rest and got 206; nothing cached" \
		"$(answers "$ANS" "$LAYER" | tr '\n' '|')$(cache_list "$H/c-badrest/d-utils")" \
		"- 200 300000 cut -|bytes=300000- 206 $((LAYER_SIZE - 300000)) bytes 300000-$((LAYER_SIZE - 1))/$LAYER_SIZE|"

	# --- 4: a connection that stalls in a layer, once ----------------------------------------
	# the stall outlasts the guard: without the low-speed limit the pull would hang into it
	front "stall_$me" "$(blob_rule "$LAYER" "{times: 1, stall_after: 65536, stall: $((STALL_GUARD + 60))}")"
	run "$W" env XDG_CACHE_HOME="$H/c-stall" timeout "$STALL_GUARD" "$DPULL" -q "$P/busybox" stall
	is "$me: 4: the layer stalls after 65536 bytes, once: given up, retried, pulled, the same tree (hang guard: timeout ${STALL_GUARD}s)" \
		"$? $(tree_sum "$H/stall")" "0 $REF" || diag "stderr: $(head -c 500 "$T/err")"
	is "$me:   ... the layer was asked for twice" "$(gets "$LOG" "$LAYER")" 2
	is "$me:   ... the second GET asked for the rest (Range: bytes=65536-), answered 206" \
		"$(answers "$ANS" "$LAYER" | sed -n 2p)" "bytes=65536- 206 $((LAYER_SIZE - 65536)) bytes 65536-$((LAYER_SIZE - 1))/$LAYER_SIZE"
	is "$me:   ... the cache holds the layer alone, verified" \
		"$(cache_list "$H/c-stall/d-utils")$(cache_check "$H/c-stall/d-utils")" "$LAYER "
	forget "$H/stall"

	# --- 5: blobs redirected to another server ---------------------------------------------------
	: >"$T/proxy-cdn/log"
	: >"$T/proxy-tokfront/log"
	run "$W" env DOCKER_CONFIG="$T/auth" XDG_CACHE_HOME="$H/c-cdn" timeout "$GUARD" \
		"$DPULL" -q "$TOKFRONT/private/busybox" cdn
	is "$me: 5: a private image whose blobs are redirected to another server: pulled, the same tree (hang guard: timeout ${GUARD}s)" \
		"$? $(tree_sum "$H/cdn")" "0 $REF" || diag "stderr: $(head -c 500 "$T/err")"
	is "$me:   ... the other server served the layer, and got no Authorization header" \
		"$(gets "$T/proxy-cdn/log" "$LAYER") $(header_names "$T/proxy-cdn/log" | grep -c '^authorization$')" "1 0"
	is "$me:   ... while the registry's GET of the layer carried the Bearer token" \
		"$(jq -r --arg m "/blobs/$LAYER\$" 'select(.method == "GET" and (.path | test($m))) |
			.headers[] | select(.[0] | ascii_downcase == "authorization") | .[1] | split(" ")[0]' \
			"$T/proxy-tokfront/log")" Bearer
	forget "$H/cdn"

	# --- 6: redirects that go nowhere ----------------------------------------------------------
	front "loop_$me" "$(blob_rule "$LAYER" '{action: "redirect", location: "https://{self}{path}"}')"
	is "$me: 6: the layer redirected to itself: one line about redirects, exit 1, no DIR (hang guard: timeout ${GUARD}s)" \
		"$(expect_failure "$W" loop "[Rr]edirect" env XDG_CACHE_HOME="$H/c-loop" \
			timeout "$GUARD" "$DPULL" -q "$P/busybox" loop)" ""
	n=$(gets "$LOG" "$LAYER")
	is "$me:   ... a bounded number of requests (curl's 10 redirects), not retried" \
		"$([ "$n" -ge 2 ] && [ "$n" -le 11 ] && echo bounded || echo "$n requests")" bounded
	if [ "$STRACE" = 1 ]; then
		front "file_$me" "$(blob_rule "$LAYER" '{action: "redirect", location: "file:///etc/passwd"}')"
		is "$me:   ... the layer redirected to file:///etc/passwd: one line, exit 1, no DIR" \
			"$(expect_failure "$W" file "[Pp]rotocol" env XDG_CACHE_HOME="$H/c-file" \
				strace -f -e trace=open,openat -o "$H/strace-file" "$DPULL" -q "$P/busybox" file)" ""
		is "$me:   ... and /etc/passwd was not opened" "$(grep -c '"/etc/passwd"' "$H/strace-file")" 0
		front "ftp_$me" "$(blob_rule "$LAYER" '{action: "redirect", location: "ftp://127.0.0.1/x"}')"
		is "$me:   ... the layer redirected to ftp://127.0.0.1/x: one line, exit 1, no DIR" \
			"$(expect_failure "$W" ftp "[Pp]rotocol" env XDG_CACHE_HOME="$H/c-ftp" \
				strace -f -e trace=connect -o "$H/strace-ftp" "$DPULL" -q "$P/busybox" ftp)" ""
		is "$me:   ... and no connection to port 21 was tried" "$(connects "$H/strace-ftp" 21)" 0
	else
		skip_n 4 "$me: 6: redirects to file:/// and ftp://" "$STRACE"
	fi

	# --- 7: an HTML error page with status 200 ----------------------------------------------------
	printf '<html><head><title>503</title></head><body><h1>Service Unavailable</h1></body></html>\n' >"$T/error.html"
	front "html_$me" "$(blob_rule "$LAYER" "$(jq -nc --arg f "$T/error.html" \
		'{action: "respond", status: 200, headers: {"Content-Type": "text/html"}, body_file: $f}')")"
	is "$me: 7: an HTML page with status 200 for the layer: one line saying digest mismatch, exit 1, no DIR" \
		"$(expect_failure "$W" html "$LAYER: digest mismatch" env XDG_CACHE_HOME="$H/c-html" \
			timeout "$GUARD" "$DPULL" -q "$P/busybox" html)" ""
	is "$me:   ... and nothing in the cache" \
		"$(cache_list "$H/c-html/d-utils")$(cache_check "$H/c-html/d-utils")" ""

	# --- 8: nobody listening ---------------------------------------------------------------------
	if [ "$STRACE" = 1 ]; then
		is "$me: 8: nobody listening on the registry's port: one line, Couldn't connect to server, exit 1, no DIR (hang guard: timeout ${GUARD}s)" \
			"$(expect_failure "$W" closed "Couldn't connect to server" env XDG_CACHE_HOME="$H/c-closed" \
				timeout "$GUARD" strace -f -e trace=connect -o "$H/strace-closed" \
				"$DPULL" -q "127.0.0.1:${CLOSED:-1}/busybox" closed)" ""
		is "$me:   ... after one connection attempt" "$(connects "$H/strace-closed" "${CLOSED:-1}")" 1
	else
		skip_n 2 "$me: 8: nobody listening" "$STRACE"
	fi

	# --- 9: a full disk -----------------------------------------------------------------------------
	# busybox's layer is 1.1 MB, 2.1 MB unpacked: a 1 MiB tmpfs fills up in either
	if [ "$CAN_MOUNT" = 1 ]; then
		out=$(on_tmpfs "$W" 1m env XDG_CACHE_HOME="$H/c-fulldir" timeout "$GUARD" \
			"$DPULL" -q "$REG_TLS/busybox" "$T/tmpfs/box")
		like "$me: 9: DIR on a 1 MiB tmpfs: exit 1, one line naming the file it could not write (hang guard: timeout ${GUARD}s)" \
			"exit ${out%% *}, $(wc -l <"$T/err") lines: $(err)" "^exit 1, 1 lines: d-pull: $LAYER: bin/busybox: " ||
			diag "stderr: $(head -c 500 "$T/err")"
		is "$me:   ... the partial DIR removed: nothing left in the tmpfs" "${out#* }" ""
		is "$me:   ... the cache holds the layer alone, verified" \
			"$(cache_list "$H/c-fulldir/d-utils")$(cache_check "$H/c-fulldir/d-utils")" "$LAYER "
		out=$(on_tmpfs "$W" 1m env XDG_CACHE_HOME="$T/tmpfs/cache" timeout "$GUARD" \
			"$DPULL" -q "$REG_TLS/busybox" fullcache)
		# curl's words: the write to the cache is in its callback
		like "$me:   ... the cache on a 1 MiB tmpfs: exit 1, one line about writing, no DIR (hang guard: timeout ${GUARD}s)" \
			"exit ${out%% *}, $(wc -l <"$T/err") lines, DIR $([ -e "$H/fullcache" ] && echo left || echo gone): $(err)" \
			"^exit 1, 1 lines, DIR gone: d-pull: .*: Failed writing received data to disk"
		is "$me:   ... and nothing half-written in the cache" "${out#* }" "./cache ./cache/d-utils "
		forget "$H/fullcache"
	else
		skip_n 5 "$me: 9: a full disk" "$CAN_MOUNT"
	fi

	# --- 10: many at once ------------------------------------------------------------------------
	pids=()
	want=
	for ((i = 1; i <= MANY; i++)); do
		(cd "$H" && "$W" env XDG_CACHE_HOME="$H/c-many" timeout "$GUARD" "$DPULL" -q "$REG_TLS/layers" "many$i") \
			>"$T/many$i.err" 2>&1 </dev/null &
		pids+=("$!")
		want+="0 "
	done
	st=
	for pid in "${pids[@]}"; do
		wait "$pid"
		st+="$? "
	done
	sums=$(for ((i = 1; i <= MANY; i++)); do tree_sum "$H/many$i"; done | sort -u | wc -l)
	is "$me: 10: $MANY pulls of layers into $MANY DIRs, one cache, at once: all exit 0 (hang guard: timeout ${GUARD}s each)" \
		"$st" "$want" || diag "$(cat "$T"/many*.err | head -c 500)"
	is "$me:   ... $MANY identical trees, the layers' tree" "$sums $(layers_tree "$H/many1/rootfs")" "1 $LAYERS_TREE"
	is "$me:   ... the cache holds each layer once, verified, and nothing else" \
		"$(cache_list "$H/c-many/d-utils")$(cache_check "$H/c-many/d-utils")" "$LAYERS"
	pids=()
	for ((i = 1; i <= MANY; i++)); do
		(cd "$H" && "$W" timeout "$GUARD" "$DRUN" many1 sh -c 'echo "run $1" >/tmp/me && cat /tmp/me' sh "$i") \
			>"$T/run$i.out" 2>&1 </dev/null &
		pids+=("$!")
	done
	st=
	for ((i = 1; i <= MANY; i++)); do
		wait "${pids[i - 1]}"
		st+="$? $(cat "$T/run$i.out"), "
	done
	is "$me:   ... then $MANY d-runs of one DIR at once: all exit 0, each with its own output and /tmp (hang guard: timeout ${GUARD}s each)" \
		"$st" "$(for ((i = 1; i <= MANY; i++)); do printf '0 run %d, ' "$i"; done)"
	for ((i = 1; i <= MANY; i++)); do
		forget "$H/many$i"
	done

	# --- 11: valgrind -------------------------------------------------------------------------------
	if ! command -v valgrind >/dev/null; then
		skip_n 2 "$me: 11: valgrind" "valgrind is not installed"
	elif [ -n "$ASAN" ]; then
		skip_n 2 "$me: 11: valgrind" "$ASAN"
	else
		run "$W" env XDG_CACHE_HOME="$H/c-vg" timeout "$GUARD" \
			valgrind -q --error-exitcode=1 --leak-check=no "$DPULL" -q "$REG_TLS/busybox" vg
		is "$me: 11: valgrind over a d-pull (and its unpacking child): no error, exit 0, the same tree (hang guard: timeout ${GUARD}s)" \
			"$? $(tree_sum "$H/vg")" "0 $REF" || diag "stderr: $(head -c 1500 "$T/err")"
		if [ "$VG_DRUN" = 1 ]; then
			run "$W" timeout "$GUARD" valgrind -q --error-exitcode=1 --leak-check=no --trace-children=no \
				"$DRUN" vg sh -c 'echo ran'
			is "$me:   ... and over a d-run (not over bwrap): no error, exit 0, the command ran" \
				"$? $(cat "$T/out")" "0 ran" || diag "stderr: $(head -c 1500 "$T/err")"
		else
			skip "$me:   ... and over a d-run" "$VG_DRUN"
		fi
		forget "$H/vg"
	fi

	# --- 12: SIGINT, SIGTERM, SIGHUP ---------------------------------------------------------
	for sig in "${SIGNALS[@]}"; do
		n=$((128 + $(kill -l "$sig")))
		out="" interrupted=0
		for delay in "${DELAYS[@]}"; do
			d=$H/sig-$sig-$delay c=$H/c-sig-$sig-$delay
			start_pull "$W" "$c" "$REG_TLS/layers" "$d"
			sleep "$delay"
			kill -s "$sig" "$PULL" 2>/dev/null
			wait "$PULL" 2>/dev/null
			st=$?
			if [ "$st" = "$n" ] && [ ! -e "$d" ]; then
				interrupted=$((interrupted + 1))
			elif [ "$st" != 0 ] || [ "$(layers_tree "$d/rootfs" 2>&1)" != "$LAYERS_TREE" ]; then
				out+="after ${delay}s: exit $st, DIR $([ -e "$d" ] && echo left || echo gone): $(head -c 300 "$T/pull.err")"$'\n'
			fi
			left=$(pids_with "$d")
			[ -z "$left" ] || out+="after ${delay}s: still running: pids ${left//$'\n'/ }"$'\n'
			left=$(cache_check "$c/d-utils")
			[ -z "$left" ] || out+="after ${delay}s: the cache: $left"$'\n'
			run "$W" env XDG_CACHE_HOME="$c" timeout "$GUARD" "$DPULL" -q "$REG_TLS/layers" "$d.next"
			[ "$? $(layers_tree "$d.next/rootfs" 2>&1)" = "0 $LAYERS_TREE" ] ||
				out+="after ${delay}s: the next pull: $(head -c 300 "$T/err")"$'\n'
			forget "$d"
			forget "$d.next"
		done
		is "$me: 12: SIG$sig to d-pull ${DELAYS[*]} s into a cold pull of layers: exit 0 with the tree or $n with no DIR, the cache sound, nothing of it left running, the next pull with that cache gives the tree" \
			"$out" ""
		diag "$me: SIG$sig: $interrupted of ${#DELAYS[@]} pulls interrupted, the others had ended"
		stalled_pull "stall_$sig" "$sig"
		is "$me:   ... SIG$sig while the second layer stalls in its middle: exit $n, no DIR, nothing of it left running (hang guard: a ${GUARD}s stall)" \
			"$ST $([ -e "$D" ] && echo left || echo gone) $(pids_with "$D" | wc -l)" "$n gone 0" ||
			diag "stderr: $(head -c 500 "$T/pull.err")"
		diag "$me: SIG$sig came while ${RAN:-no} processes of the pull ran"
		after_stalled
	done
	stalled_pull ctrl_c INT group
	is "$me:   ... SIGINT to the process group (Ctrl-C) while the second layer stalls: exit 130, no DIR, nothing of it left running (hang guard: a ${GUARD}s stall)" \
		"$ST $([ -e "$D" ] && echo left || echo gone) $(pids_with "$D" | wc -l)" "130 gone 0" ||
		diag "stderr: $(head -c 500 "$T/pull.err")"
	after_stalled
	# The first moment there is a DIR to remove: strace holds d-pull in the mkdirat that made it
	# for 2 s, and SIGINT goes once DIR is there. (What is asserted holds wherever the signal
	# lands: on a machine too slow for 2 s, it only lands later.)
	if [ "$HOLD" = 1 ]; then
		d=$H/made
		(cd "$H" && exec_as "$W" strace -o /dev/null -e trace=mkdirat -e inject=mkdirat:delay_exit=2000000:when=1 \
			env --default-signal=INT XDG_CACHE_HOME="$H/c-made" "$DPULL" -q "$REG_TLS/layers" "$d") 2>"$T/pull.err" &
		PULL=$!
		for ((i = 0; i < GUARD * 10; i++)); do
			[ -d "$d" ] && break
			kill -0 "$PULL" 2>/dev/null || break
			sleep 0.05
		done
		for pid in $(pids_with "$d"); do
			[ "$(cat "/proc/$pid/comm" 2>/dev/null)" != d-pull ] || kill -INT "$pid"
		done
		wait "$PULL" 2>/dev/null
		is "$me:   ... SIGINT just after d-pull made DIR (strace holds it in that mkdirat): exit 130, no DIR, nothing of it left running" \
			"$? $([ -e "$d" ] && echo left || echo gone) $(pids_with "$d" | wc -l)" "130 gone 0" ||
			diag "stderr: $(head -c 500 "$T/pull.err")"
		forget "$d"
	else
		skip "$me:   ... SIGINT just after d-pull made DIR" "$HOLD"
	fi

	# ignored by the caller, and a stop and continue: the stall (3 s) holds the pull while they
	# come; both pulls must complete
	front "nohup_$me" "$(blob_rule "$L2" "{times: 1, stall_after: $((L2_SIZE / 2)), stall: 3}")"
	start_pull "$W" "$H/c-nohup" "$P/layers" "$H/nohup" env --ignore-signal=HUP
	await_answer "$ANS" "$L2" && kill -HUP "$PULL"
	wait "$PULL"
	is "$me:   ... SIGHUP to a d-pull whose caller ignores it (as nohup does): ignored, exit 0, the tree (hang guard: a 3 s stall)" \
		"$? $(layers_tree "$H/nohup/rootfs" 2>&1)" "0 $LAYERS_TREE" || diag "stderr: $(head -c 500 "$T/pull.err")"
	forget "$H/nohup"
	front "stop_$me" "$(blob_rule "$L2" "{times: 1, stall_after: $((L2_SIZE / 2)), stall: 3}")"
	start_pull "$W" "$H/c-stop" "$P/layers" "$H/stop"
	if await_answer "$ANS" "$L2"; then
		for pid in $(pids_with "$H/stop"); do
			kill -STOP "$pid"
		done
		for pid in $(pids_with "$H/stop"); do
			kill -CONT "$pid"
		done
	fi
	wait "$PULL"
	is "$me:   ... every process of a pull stopped, then continued (Ctrl-Z, fg): exit 0, the tree (hang guard: a 3 s stall)" \
		"$? $(layers_tree "$H/stop/rootfs" 2>&1)" "0 $LAYERS_TREE" || diag "stderr: $(head -c 500 "$T/pull.err")"
	forget "$H/stop"

	# --- 13: SIGKILL ------------------------------------------------------------------------------
	stalled_pull killed KILL
	is "$me: 13: SIGKILL to d-pull while the second layer stalls: killed (137), the partial DIR stays (hang guard: a ${GUARD}s stall)" \
		"$ST $([ -d "$D/rootfs" ] && echo left || echo gone)" "137 left"
	# its child gets SIGKILL as d-pull dies (PR_SET_PDEATHSIG): wait until it is gone
	for ((i = 0; i < GUARD * 10; i++)); do
		[ -z "$(pids_with "$D")" ] && break
		sleep 0.1
	done
	is "$me:   ... and nothing of the pull keeps running: its child dies with it (hang guard: ${GUARD}s)" \
		"$(pids_with "$D" | wc -l)" 0
	is "$me:   ... the cache holds the first layer alone, verified" \
		"$(cache_list "$C/d-utils")$(cache_check "$C/d-utils")" "$L1 "
	run "$W" env XDG_CACHE_HOME="$C" timeout "$GUARD" "$DPULL" -q "$REG_TLS/layers" "$D.next"
	is "$me:   ... the next pull into a new DIR with that cache: exit 0, the tree" \
		"$? $(layers_tree "$D.next/rootfs" 2>&1)" "0 $LAYERS_TREE" || diag "stderr: $(head -c 500 "$T/err")"
	before=$(tree_sum "$D")
	run "$W" env XDG_CACHE_HOME="$C" timeout "$GUARD" "$DPULL" -q "$REG_TLS/layers" "$D"
	is "$me:   ... a pull into the DIR left: exit 1, one line saying it already exists; that DIR as it was" \
		"$? $(wc -l <"$T/err") $(err) $([ "$(tree_sum "$D")" = "$before" ] && echo "as it was" || echo changed)" \
		"1 1 d-pull: $D: already exists as it was"
	forget "$D"
	forget "$D.next"
	forget "$H/ref"
done
