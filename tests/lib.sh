# shellcheck shell=bash disable=SC2034 # the variables are for the tests that source this
# SPDX-License-Identifier: MIT
# tests/lib.sh: sourced by every tests/*.t. TAP output, a temp dir, users, a test CA,
# real docker-registry servers on loopback and the fixture images to push to them.
#
# Variables set on sourcing:
#   SRC       repo root (absolute)
#   T         fresh temp dir (0755, under /tmp), removed at exit (KEEP_T=1 keeps it)
#   DPULL     ${D_BIN_DIR:-$SRC}/d-pull     DRUN  ${D_BIN_DIR:-$SRC}/d-run
#   FIXTURES  $SRC/tests/.fixtures (the built images, kept between runs)
#   SERVER_PIDS  pids of every server started (stopped by stop_servers / at exit)
# Set by the functions below:
#   SSL_CERT_FILE and CURL_CA_BUNDLE (exported, make_ca), REG_HTTP / REG_TLS / REG_TOKEN = 127.0.0.1:PORT,
#   TOKEN_REALM = https://127.0.0.1:PORT/token, TOKEN_SERVICE, TOKEN_LOG = $T/token.log
#   (one line per issued token: "anonymous|alice SCOPE..."), REG_STORAGE_<KIND>,
#   PORT_<NAME> (start_proxy).
# The caller's environment is not the tests': proxies, GOOS/GOARCH, DOCKER_CONFIG... are unset,
# umask is 022 and stdin /dev/null. Servers bind port 0 (_listen_port finds the port).
# Probes (can_userns, can_sandbox, can_run_i386; sandbox_users and why_cannot_run use them) tell
# whether this machine can run a test; one that cannot is skipped, with the reason the probe
# found (PROBE_ERROR).
#
# Fixtures (tests/fixtures.py builds them as root into $FIXTURES, once, under flock).
# Every one is linux/amd64 unless said otherwise; all OCI ones come from umoci, so
# their manifests have no mediaType field and end in a newline.
#   busybox   OCI manifest, one tar+gzip layer: /bin/busybox (Debian busybox-static)
#             and absolute symlinks -> /bin/busybox for every applet of
#             `busybox --list-full` (/bin/sh, /bin/ls, /usr/bin/id, /usr/bin/env ...),
#             /etc/passwd (root 0, user 1000 /home/user, nobody 65534), /etc/group
#             (root 0, staff 50, user 1000, nogroup 65534), /etc/os-release
#             (ID=d-utils-test, PRETTY_NAME="d-utils test image (busybox)"), dirs /root
#             (0700) /home/user (1000:1000) /tmp (1777) /proc /sys (0555) /dev /usr/bin
#             /usr/sbin /sbin /etc. Config: Env [PATH=/usr/local/sbin:/usr/local/bin:
#             /usr/sbin:/usr/bin:/sbin:/bin, FOO=bar], Cmd [sh], no User/WorkingDir.
#   full      busybox + User "user", Entrypoint ["/bin/echo","entry"], Cmd ["cmd"],
#             WorkingDir /home/user/work (absent from the rootfs), Volumes {"/data":{}},
#             Hostname "fixturehost"; Env as busybox (no HOME: d-run derives it).
#   hostile-config  busybox + "net": true and "rw": true (both in the config object
#             and at the top level), Volumes {"/etc/shadow-host:/x":{}, "/ok":{}}.
#   layers    5 tar+gzip layers:
#             1 busybox;
#             2 (umoci) /data/{keep,gone,same}, /data/dir/{a,b}, /opt/old/{x,y},
#               /srv/tree/top, /srv/tree/sub/deep/file; each file holds
#               "BASENAME from layer 2\n";
#             3 (umoci) data/.wh.gone, data/.wh.dir;
#             4 (umoci) srv/tree as a regular file "tree is now a file\n", FOLLOWED by
#               srv/tree/.wh.sub and srv/tree/.wh.top (umoci 0.4.7 writes whiteouts
#               for the old children under the path that is now a file: these must
#               be no-ops, not errors);
#             5 (by hand, in this order) data/, data/same "same from layer 5\n",
#               data/.wh.same, opt/, opt/old/, opt/old/new "new from layer 5\n",
#               opt/old/.wh..wh..opq.
#             Expected final tree: /data/keep ("keep from layer 2\n"), /data/same
#             ("same from layer 5\n"), /opt/old containing only new ("new from layer
#             5\n"), /srv/tree a regular file ("tree is now a file\n"); absent:
#             /data/gone, /data/dir, /opt/old/x, /opt/old/y, anything named .wh.*.
#   multi     OCI index: [0] linux/arm64/v8, [1] linux/amd64, [2] unknown/unknown
#             (in-toto attestation manifest, annotation vnd.docker.reference.type=
#             attestation-manifest). Each platform image is busybox (amd64 binary) plus
#             a layer with /etc/platform = "linux/arm64/v8\n" or "linux/amd64\n"; the
#             configs say architecture arm64 + variant v8, resp. amd64.
#   dockerlist  the two platform images of multi as Docker schema 2 manifests in a
#             Docker manifest list (arm64/v8 first), no attestation entry.
#   plain     busybox with an uncompressed layer (application/vnd.oci.image.layer.v1.tar).
#   zstd      busybox with a zstd layer (application/vnd.oci.image.layer.v1.tar+zstd).
#   docker    busybox as a Docker schema 2 manifest, config
#             application/vnd.docker.container.image.v1+json, layer
#             application/vnd.docker.image.rootfs.diff.tar.gzip.
#   i386      busybox built from Debian's busybox-static:i386, config architecture 386;
#             it needs the Debian mirror once (the .deb is cached in $FIXTURES):
#             check `have_fixture i386` and skip when it fails.
#             layers_tree ROOTFS prints that tree in the form of $LAYERS_TREE.
#             `umoci unpack` gives exactly this tree (00-testbed.t checks it).
# OCI fixtures are OCI image layouts ($FIXTURES/NAME, tag latest); docker and
# dockerlist are skopeo dir: layouts, as skopeo's oci: transport holds no Docker types.

set -u

# The tests own their environment: nothing of the caller's may change what d-pull, d-run,
# curl or skopeo do. A proxy would take loopback requests elsewhere; GOOS/GOARCH change
# d-pull's default platform, DOCKER_CONFIG and REGISTRY_AUTH_FILE the credentials it finds
# (before ~/.docker), TOKEN_TTL the token server's tokens. A umask of 077 would hide the CA
# and the fixtures from the unprivileged user. A terminal on stdin gives d-run a TERM, and a
# closed stdin makes fd 0 the first file a test opens: stdin is /dev/null unless a test
# gives one.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY \
	GOOS GOARCH DOCKER_CONFIG REGISTRY_AUTH_FILE D_PULL_INSECURE TOKEN_TTL
umask 022
exec </dev/null

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DPULL=${D_BIN_DIR:-$SRC}/d-pull
DRUN=${D_BIN_DIR:-$SRC}/d-run
FIXTURES=$SRC/tests/.fixtures
PYTHON=/usr/bin/python3 # python3 on PATH may lack python3-jwt
SERVER_PIDS=()
T=$(mktemp -d /tmp/d-utils-test.XXXXXX) || exit 1
chmod 0755 "$T"
_TESTS=0
_FAILED=0

stop_servers() {
	local pid i
	for pid in "${SERVER_PIDS[@]}"; do
		kill "$pid" 2>/dev/null
	done
	for pid in "${SERVER_PIDS[@]}"; do
		for ((i = 0; i < 50; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null || true
	done
	SERVER_PIDS=()
}

_cleanup() {
	local rc=$?
	set +e # the cleanup must run to its end, whatever the test set
	stop_servers
	if [ -n "${KEEP_T:-}" ]; then
		echo "# kept $T" >&2
	elif [ -d "$T" ]; then
		# rootfs trees may hold 0555/0000 directories
		chmod -R u+rwx "$T" 2>/dev/null
		rm -rf "$T"
	fi
	[ "$_FAILED" -eq 0 ] || exit 1
	# a signal, or a test script that stopped early; else the status of its last line means nothing
	[ "$rc" -ge 128 ] && exit "$rc"
	exit 0
}
trap _cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- TAP ---------------------------------------------------------------------

plan() { echo "1..$1"; }

skip_all() {
	echo "1..0 # SKIP $*"
	exit 0
}

diag() { printf '%s\n' "$*" | sed 's/^/# /'; }

_result() { # STATUS(0=pass) DESC
	_TESTS=$((_TESTS + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $_TESTS - $2"
	else
		echo "not ok $_TESTS - $2"
		_FAILED=$((_FAILED + 1))
	fi
}

# ok DESC CMD...: passes when CMD exits 0; on failure shows its output. Returns CMD's status.
ok() {
	local desc=$1 out=$T/.ok-output rc
	shift
	if "$@" >"$out" 2>&1; then rc=0; else rc=$?; fi
	_result "$rc" "$desc"
	if [ "$rc" -ne 0 ]; then
		sed 's/^/# /' "$out"
		echo "# exit status $rc: $*"
	fi
	return "$rc"
}

# is DESC GOT EXPECTED
is() {
	if [ "$2" = "$3" ]; then
		_result 0 "$1"
	else
		_result 1 "$1"
		diag "     got: '$2'"
		diag "expected: '$3'"
		return 1
	fi
}

# like DESC GOT REGEX (bash =~)
like() {
	if [[ $2 =~ $3 ]]; then
		_result 0 "$1"
	else
		_result 1 "$1"
		diag "     got: '$2'"
		diag "expected to match: $3"
		return 1
	fi
}

# skip DESC REASON
skip() {
	_TESTS=$((_TESTS + 1))
	echo "ok $_TESTS - $1 # SKIP $2"
}

# skip_n N DESC REASON: N skipped tests, "DESC (1/N)" to "DESC (N/N)"
skip_n() {
	local i
	for ((i = 1; i <= $1; i++)); do
		skip "$2 ($i/$1)" "$3"
	done
}

# json_eval EXPR < JSON: prints the Python expression EXPR over the document `j`
json_eval() {
	"$PYTHON" -c 'import json, sys
j = json.load(sys.stdin)
r = eval(sys.argv[1])
print(r if isinstance(r, str) else json.dumps(r))' "$1"
}

# --- users -------------------------------------------------------------------
# Each user gets its own HOME (and so its own cache); XDG_* of the caller are dropped.

# user_home as_root|as_user: that user's HOME ($T/home-0, $T/home-65534), made on
# first use; the place where that user can write (e.g. a pull target).
user_home() {
	local uid=0
	[ "$1" = as_user ] && uid=65534
	if [ ! -d "$T/home-$uid" ]; then
		mkdir -p "$T/home-$uid"
		chown "$uid:$uid" "$T/home-$uid"
	fi
	echo "$T/home-$uid"
}

as_root() {
	HOME=$(user_home as_root) env -u XDG_CACHE_HOME -u XDG_CONFIG_HOME -u XDG_RUNTIME_DIR "$@"
}

as_user() {
	HOME=$(user_home as_user) setpriv --reuid=65534 --regid=65534 --clear-groups \
		env -u XDG_CACHE_HOME -u XDG_CONFIG_HOME -u XDG_RUNTIME_DIR "$@"
}

# exec_as as_root|as_user CMD...: execs CMD as that function runs it, so that the pid of the
# subshell calling it is CMD's own (to kill CMD, not a shell above it)
exec_as() {
	local who=$1
	shift
	HOME=$(user_home "$who")
	export HOME
	[ "$who" = as_user ] && set -- setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
	exec env -u XDG_CACHE_HOME -u XDG_CONFIG_HOME -u XDG_RUNTIME_DIR "$@"
}

# pids_of WORD...: the pids of the processes whose command line is exactly WORD... (procps'
# pgrep is not installed everywhere)
pids_of() {
	local f args
	for f in /proc/[0-9]*/cmdline; do
		mapfile -d '' -t args 2>/dev/null <"$f" || continue
		[ "${args[*]}" = "$*" ] && f=${f#/proc/} && echo "${f%/cmdline}"
	done
	return 0
}

# --- commands as a user, and what d-pull leaves -------------------------------------

# run WHO CMD...: CMD as WHO in WHO's home, stdin /dev/null, output in $T/out and $T/err; its status
run() {
	local who=$1
	shift
	(cd "$(user_home "$who")" && "$who" "$@") >"$T/out" 2>"$T/err" </dev/null
}

# err: prints the stderr of the last run or status ($T/err)
err() { cat "$T/err"; }

# status CMD...: runs CMD, stdin /dev/null, output in $T/out and $T/err; prints CMD's exit status
status() {
	local rc=0
	"$@" >"$T/out" 2>"$T/err" </dev/null || rc=$?
	echo "$rc"
}

# uid_of WHO: prints the uid of as_root (0) or as_user (65534)
uid_of() { if [ "$1" = as_root ]; then echo 0; else echo 65534; fi; }

# temp_files DIR: prints d-pull's temporary cache files under DIR, one a line
temp_files() { find "$1" -name 'sha256:*.??????' 2>/dev/null; }

# cache_list DIR: prints the names in a cache directory, sorted, on one line ("a b ")
cache_list() { find "$1" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | LC_ALL=C sort | tr '\n' ' '; }

# expect_failure WHO DIR REGEX CMD...: `run WHO CMD` must exit 1, one stderr line matching REGEX,
# no DIR (removed if left) nor temp file in WHO's home; prints what is wrong, else nothing
expect_failure() {
	local who=$1 dir=$2 re=$3 home st temps problems=()
	shift 3
	home=$(user_home "$who")
	run "$who" "$@"
	st=$?
	[ "$st" -eq 1 ] || problems+=("exit status $st, want 1")
	[ "$(wc -l <"$T/err")" -eq 1 ] || problems+=("$(wc -l <"$T/err") lines on stderr, want 1")
	[[ $(err) =~ $re ]] || problems+=("stderr does not match $re")
	temps=$(temp_files "$home") # DIR's own too, before DIR goes
	if [ -e "$home/$dir" ]; then # reported, then removed: the next test may use the name
		problems+=("$dir left behind")
		chmod -R u+rwx "$home/$dir"
		rm -rf "${home:?}/${dir:?}"
	fi
	[ -z "$temps" ] || problems+=("temporary files left: $temps")
	[ ${#problems[@]} -eq 0 ] || printf '%s\n' "${problems[@]}" "stderr: $(head -c 1500 "$T/err")"
	return 0
}

# fds_seen CMD...: prints CMD's output on one line, CMD run with only fds 0-2 and 7 open (use in $(...))
fds_seen() {
	local fd
	# whatever started us may have leaked fds: close all above 2 first
	for fd in /proc/"$BASHPID"/fd/*; do
		fd=${fd##*/}
		[ "$fd" -gt 2 ] && eval "exec $fd>&-"
	done
	exec 7</etc/hostname
	"$@" | tr '\n' ' '
}

# --- what this machine can do ------------------------------------------------------
# Probes for what a kernel, a policy or a container may forbid: a test that cannot run here is
# skipped with the reason. A failed probe leaves its first line of errors in PROBE_ERROR.

_probe() { # CMD...
	local out
	out=$(LC_ALL=C "$@" 2>&1) && return 0
	PROBE_ERROR=${out%%$'\n'*}
	[ -n "$PROBE_ERROR" ] || PROBE_ERROR="$* failed"
	return 1
}

# can_userns WHO: WHO can make a user namespace and chroot in it, as unprivileged d-pull does to
# unpack. Forbidden by user.max_user_namespaces=0, kernel.unprivileged_userns_clone=0 and
# Ubuntu's kernel.apparmor_restrict_unprivileged_userns=1 (the namespace is made, but useless).
can_userns() { _probe "$1" unshare --user --map-root-user chroot / true; }

# can_sandbox WHO: WHO can make the sandbox that d-run asks bubblewrap for (a user namespace
# and all the others, a fresh /proc); many containers forbid it too.
can_sandbox() {
	_probe "$1" bwrap --unshare-all --unshare-user --die-with-parent --ro-bind / / \
		--proc /proc --dev /dev --tmpfs /tmp true
}

# can_run_i386: the kernel executes 32-bit x86 binaries. Some cannot (built without IA32
# emulation, or booted with ia32_emulation=0): execve fails with "Exec format error", bwrap's
# execvp too, whatever the personality. Runs the i386 fixture's busybox on the host (call it
# once `have_fixture i386` holds). Fails on that error only: any other problem is left for the
# test itself to show.
can_run_i386() {
	local bb=$T/i386-probe/busybox m l
	if [ ! -e "$bb" ]; then
		mkdir -p "$T/i386-probe"
		if ! m=$(jq -r '.manifests[0].digest' "$FIXTURES/i386/index.json") ||
			! l=$(jq -r '.layers[0].digest' "$FIXTURES/i386/blobs/sha256/${m#sha256:}") ||
			! tar -xzOf "$FIXTURES/i386/blobs/sha256/${l#sha256:}" bin/busybox >"$bb" ||
			! chmod 0755 "$bb"; then
			diag "can_run_i386: no busybox in the i386 fixture"
			return 0
		fi
	fi
	_probe "$bb" true && return 0
	[[ $PROBE_ERROR != *"Exec format error"* ]]
}

# sandbox_users ARRAY: sets ARRAY to those of as_root, as_user who can make a user namespace and the
# sandbox here (a diag says why not of the others); skip_all when neither can
sandbox_users() {
	local -n _users=$1
	local w
	_users=()
	for w in as_root as_user; do
		if can_userns "$w" && can_sandbox "$w"; then
			_users+=("$w")
		else
			diag "$w: skipped: ${PROBE_ERROR:-}"
		fi
	done
	[ ${#_users[@]} -gt 0 ] || skip_all "no user namespace or no sandbox here: ${PROBE_ERROR:-}"
}

# why_cannot_run WHO: prints why WHO cannot run d-run (or as_user unpack a pull) here, else nothing
why_cannot_run() {
	if ! can_sandbox "$1"; then
		echo "$1 cannot make a bubblewrap sandbox here: $PROBE_ERROR"
	elif [ "$1" = as_user ] && ! can_userns as_user; then
		echo "as_user cannot unpack in a user namespace here: $PROBE_ERROR"
	fi
}

# --- CA and servers ------------------------------------------------------------

# make_ca: $T/ca/{ca.pem,server.pem,server.key} (SANs IP:127.0.0.1, DNS:localhost),
# $T/ca/certdir/ca.crt for skopeo; exports SSL_CERT_FILE and CURL_CA_BUNDLE.
make_ca() {
	local d=$T/ca
	mkdir -p "$d/certdir"
	(
		cd "$d" &&
			openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
				-keyout ca.key -out ca.pem -days 2 -subj "/CN=d-utils test CA" \
				-addext basicConstraints=critical,CA:TRUE \
				-addext keyUsage=critical,keyCertSign,cRLSign &&
			openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
				-keyout server.key -out server.csr -subj "/CN=127.0.0.1" &&
			printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
				"basicConstraints=CA:FALSE" "extendedKeyUsage=serverAuth" >server.ext &&
			openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
				-days 2 -extfile server.ext -out server.pem &&
			cp ca.pem certdir/ca.crt && chmod 0644 ca.pem
	) >"$d/openssl.log" 2>&1 || {
		diag "make_ca failed:" "$(cat "$d/openssl.log")"
		return 1
	}
	# curl honours CURL_CA_BUNDLE before SSL_CERT_FILE: point both at the test CA.
	export SSL_CERT_FILE=$d/ca.pem CURL_CA_BUNDLE=$d/ca.pem
}

# free_port: a port that was free a moment ago: another process may take it before the caller
# binds it. Our servers bind port 0 instead (see _listen_port).
free_port() {
	"$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# _wait_http URL PID CURL-ARGS...: until URL answers 200 or 401, while PID lives (a minute at
# most: a bound against hanging, not a guess at how long a start takes)
_wait_http() {
	local url=$1 pid=$2 code end=$((SECONDS + 60))
	shift 2
	while [ "$SECONDS" -lt "$end" ]; do
		kill -0 "$pid" 2>/dev/null || return 1
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url")
		case $code in 200 | 401) return 0 ;; esac
		sleep 0.1
	done
	return 1
}

# _listen_port PID: the TCP port PID listens on, once it does (a minute at most; fails when PID
# exits). Our servers bind port 0, so that the kernel picks the port as it binds: a port chosen
# before (free_port) may be taken by then, by a registry of another test run for instance.
_listen_port() {
	"$PYTHON" - "$1" <<'PY'
import os, sys, time
proc = "/proc/" + sys.argv[1]
end = time.monotonic() + 60
while time.monotonic() < end:
    try:
        with open(proc + "/stat") as f:
            if f.read().rpartition(")")[2].split()[0] in ("Z", "X"):
                sys.exit(1)
        sockets = set()
        for fd in os.listdir(proc + "/fd"):
            try:
                link = os.readlink(proc + "/fd/" + fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                sockets.add(link[8:-1])
        for table in ("tcp", "tcp6"):
            with open(proc + "/net/" + table) as f:
                for line in f.readlines()[1:]:
                    col = line.split()
                    if col[3] == "0A" and col[9] in sockets:  # 0A: LISTEN
                        print(int(col[1].rsplit(":", 1)[1], 16))
                        sys.exit(0)
    except FileNotFoundError:
        sys.exit(1)
    time.sleep(0.05)
sys.exit(1)
PY
}

# _serve_registry DIR SCHEME: docker-registry with DIR/config.yml (http.addr 127.0.0.1:0), its
# log in DIR/log; sets _PORT once it answers there
_serve_registry() {
	local d=$1 pid
	/usr/bin/docker-registry serve "$d/config.yml" </dev/null >"$d/log" 2>&1 &
	pid=$!
	SERVER_PIDS+=("$pid")
	if _PORT=$(_listen_port "$pid") &&
		_wait_http "$2://127.0.0.1:$_PORT/v2/" "$pid" --cacert "$T/ca/ca.pem"; then
		return 0
	fi
	diag "docker-registry $d/config.yml did not start:" "$(cat "$d/log")"
	return 1
}

_start_token_server() {
	local d=$T/token pid end
	mkdir -p "$d"
	rm -f "$d/port" # started again, it waits for the new server's port
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-keyout "$d/sign.key" -out "$d/sign.pem" -subj "/CN=d-utils token signer" \
		>"$d/openssl.log" 2>&1 || return 1
	TOKEN_SERVICE='d-utils-test-registry'
	TOKEN_LOG=$T/token.log
	: >"$TOKEN_LOG"
	"$PYTHON" "$SRC/tests/token-server.py" --tls-cert "$T/ca/server.pem" \
		--tls-key "$T/ca/server.key" --sign-key "$d/sign.key" \
		--service "$TOKEN_SERVICE" --issuer d-utils-test-issuer --log "$TOKEN_LOG" \
		--port-file "$d/port" </dev/null >"$d/log" 2>&1 &
	pid=$!
	SERVER_PIDS+=("$pid")
	# the port file appears once the server listens (a minute at most, against hanging)
	end=$((SECONDS + 60))
	while [ "$SECONDS" -lt "$end" ] && [ ! -s "$d/port" ] && kill -0 "$pid" 2>/dev/null; do
		sleep 0.1
	done
	if [ ! -s "$d/port" ]; then
		diag "token server did not start:" "$(cat "$d/log")"
		return 1
	fi
	TOKEN_REALM=https://127.0.0.1:$(cat "$d/port")/token
}

# _registry_config KIND DIR PORT (0: the kernel picks one)
_registry_config() {
	cat <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $2/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$3
  secret: d-utils-test-secret
EOF
	[ "$1" = http ] || cat <<EOF
  tls:
    certificate: $T/ca/server.pem
    key: $T/ca/server.key
EOF
	[ "$1" = token ] && cat <<EOF
auth:
  token:
    realm: $TOKEN_REALM
    service: $TOKEN_SERVICE
    issuer: d-utils-test-issuer
    rootcertbundle: $T/token/sign.pem
EOF
	return 0
}

# start_registry http|tls|token: sets REG_HTTP / REG_TLS / REG_TOKEN = 127.0.0.1:PORT. Started
# again (after stop_servers), a registry keeps its storage and gets a new port.
start_registry() {
	local kind=$1 d=$T/registry-$1 scheme=https
	case $kind in
	http) scheme=http ;;
	tls | token) [ -f "$T/ca/ca.pem" ] || make_ca || return 1 ;;
	*)
		diag "start_registry: unknown kind $kind"
		return 1
		;;
	esac
	if [ "$kind" = token ]; then
		_start_token_server || return 1
	fi
	mkdir -p "$d/storage"
	_registry_config "$kind" "$d" 0 >"$d/config.yml"
	_serve_registry "$d" "$scheme" || return 1
	printf -v "REG_${kind^^}" '%s' "127.0.0.1:$_PORT"
	printf -v "REG_STORAGE_${kind^^}" '%s' "$d/storage"
}

# start_proxy NAME PROXY-ARGS...: tests/proxy.py over TLS, its log of the requests
# $T/proxy-NAME/log, of its answers $T/proxy-NAME/answers; sets PORT_<NAME>
start_proxy() {
	local name=$1 d=$T/proxy-$1 i pid
	shift
	mkdir -p "$d"
	"$PYTHON" "$SRC/tests/proxy.py" --port-file "$d/port" --log "$d/log" --answers "$d/answers" \
		--tls-cert "$T/ca/server.pem" --tls-key "$T/ca/server.key" "$@" </dev/null >"$d/out" 2>&1 &
	pid=$!
	SERVER_PIDS+=("$pid")
	for ((i = 0; i < 100; i++)); do
		[ -s "$d/port" ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	[ -s "$d/port" ] || {
		diag "proxy $name did not start:" "$(cat "$d/out")"
		return 1
	}
	printf -v "PORT_${name^^}" '%s' "$(cat "$d/port")"
}

# front NAME RULE...: a proxy of the tls registry ($REG_TLS) with these rules (JSON), of this
# test and user alone (the rules' counters and the logs start afresh); sets P (its
# 127.0.0.1:PORT, port 1 where nothing listens if it did not start), LOG and ANS (its logs of
# requests and answers)
front() {
	local name=$1 rule args=()
	shift
	for rule; do
		args+=(--rule "$rule")
	done
	start_proxy "$name" --upstream "https://$REG_TLS" "${args[@]}"
	P=127.0.0.1:$(cat "$T/proxy-$name/port" 2>/dev/null || echo 1)
	LOG=$T/proxy-$name/log
	ANS=$T/proxy-$name/answers
}

# blob_rule DIGEST OBJECT: a proxy rule for the GETs of that blob; OBJECT (jq) says what it does
blob_rule() { jq -nc --arg m "/blobs/$1\$" "{method: \"GET\", match: \$m} + ($2)"; }

# start_pull WHO CACHE REF DIR [WRAPPER...]: d-pull -q REF DIR as WHO in WHO's home, in the
# background, stderr in $T/pull.err; sets PULL to its pid: d-pull's own, no shell in between
# (exec_as), and WRAPPER (setsid, unshare...) execs it too
start_pull() {
	local who=$1 cache=$2 ref=$3 dir=$4
	shift 4
	(cd "$(user_home "$who")" && exec_as "$who" "$@" env --default-signal=INT XDG_CACHE_HOME="$cache" \
		"$DPULL" -q "$ref" "$dir") 2>"$T/pull.err" &
	PULL=$!
}

# pids_with WORD: the processes that have WORD as a word of their command line. A pull's DIR
# (a path under $T: no other run has it) finds d-pull, its child and the unpacking grandchild,
# which share d-pull's argv.
pids_with() {
	local f a args
	for f in /proc/[0-9]*/cmdline; do
		mapfile -d '' -t args 2>/dev/null <"$f" || continue
		for a in "${args[@]}"; do
			if [ "$a" = "$1" ]; then
				f=${f#/proc/}
				echo "${f%/cmdline}"
				break
			fi
		done
	done
	return 0
}

# await_answer ANS DIGEST: until the proxy has answered a GET of that blob (its log ANS says so
# before the answer goes out), while PULL runs; ${D_TEST_HANG_GUARD:-120} s at most, against
# hanging
await_answer() {
	local i
	for ((i = 0; i < ${D_TEST_HANG_GUARD:-120} * 10; i++)); do
		grep -q "/blobs/$2\"" "$1" 2>/dev/null && return 0
		kill -0 "$PULL" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# header_names LOG: prints every request header name in a proxy log, lowercase, one a line
header_names() { jq -r '.headers[][0] | ascii_downcase' "$1"; }

# auth_json FILE REGISTRY USER:PASSWORD [KEY]: writes a docker/podman credentials file (a+rX)
auth_json() {
	mkdir -p "$(dirname "$1")"
	printf '{"auths":{"%s":{"auth":"%s"}}}\n' "${4:-$2}" "$(printf %s "$3" | base64 -w0)" >"$1"
	chmod -R a+rX "$(dirname "$1")"
}

# blob_path STORAGE DIGEST: prints where docker-registry keeps a blob
blob_path() {
	local h=${2#sha256:}
	echo "$1/docker/registry/v2/blobs/sha256/${h:0:2}/$h/data"
}

# --- fixtures ----------------------------------------------------------------

# build_fixtures [NAME...]: build the missing fixtures (all without NAME)
build_fixtures() {
	mkdir -p "$FIXTURES"
	if ! flock "$FIXTURES/.lock" "$PYTHON" "$SRC/tests/fixtures.py" "$FIXTURES" "$@" \
		</dev/null >"$T/fixtures.log" 2>&1; then
		diag "building fixtures $* failed:" "$(cat "$T/fixtures.log")"
		return 1
	fi
}

# have_fixture NAME: builds NAME, fails quietly when it cannot be built
have_fixture() {
	build_fixtures "$1" >/dev/null
}

# need_debian_mirror N DESC: when debootstrap's Debian mirror does not answer, N tests "DESC" skipped, exit 0
need_debian_mirror() {
	local mirror i
	mirror=$("$PYTHON" -B -c 'import sys; sys.path.insert(0, sys.argv[1]); import fixtures; print(fixtures.debian_mirror())' "$SRC/tests")
	curl -sf --max-time 30 -o /dev/null "$mirror/dists/bookworm/Release" && return 0
	for ((i = 0; i < $1; i++)); do
		skip "$2" "debootstrap cannot reach the Debian mirror $mirror"
	done
	exit 0
}

# layers_tree ROOTFS: /data, /opt and /srv of a rootfs of the layers fixture, to
# compare with LAYERS_TREE: "path/" for a directory, "path: content" for a
# file, "path -> target" for a symlink.
layers_tree() {
	(
		cd "$1" || exit 1
		find data opt srv | LC_ALL=C sort | while read -r p; do
			if [ -L "$p" ]; then
				echo "$p -> $(readlink "$p")"
			elif [ -f "$p" ]; then
				echo "$p: $(cat "$p")"
			else
				echo "$p/"
			fi
		done
	)
}
LAYERS_TREE='data/
data/keep: keep from layer 2
data/same: same from layer 5
opt/
opt/old/
opt/old/new: new from layer 5
srv/
srv/tree: tree is now a file'

# fixture_ref NAME: the skopeo source reference of a built fixture
fixture_ref() {
	if [ -f "$FIXTURES/$1/manifest.json" ]; then
		echo "dir:$FIXTURES/$1"
	else
		echo "oci:$FIXTURES/$1:latest"
	fi
}

# _skopeo_opts PREFIX REGISTRY: sets _OPTS to skopeo's TLS/credential options for
# one of our registries; PREFIX is --dest- for copy, -- for inspect.
_skopeo_opts() {
	if [ "$2" = "${REG_HTTP:-}" ]; then
		_OPTS=("${1}tls-verify=false")
	elif [ "$2" = "${REG_TOKEN:-}" ]; then
		_OPTS=("${1}cert-dir" "$T/ca/certdir" "${1}creds" alice:secret)
	else
		_OPTS=("${1}cert-dir" "$T/ca/certdir")
	fi
}

# push_fixture NAME REGISTRY [REPO[:TAG]]: default repo NAME, tag latest.
# --preserve-digests: the registry gets the exact manifests and blobs of the fixture.
push_fixture() {
	local name=$1 reg=$2 dest=${3:-$1}
	[[ $dest == *:* ]] || dest=$dest:latest
	build_fixtures "$name" || return 1
	_skopeo_opts --dest- "$reg"
	skopeo copy -q --all --preserve-digests "${_OPTS[@]}" \
		"$(fixture_ref "$name")" "docker://$reg/$dest" </dev/null
}

# inspect_raw REGISTRY REPO[:TAG|@DIGEST] [SKOPEO-INSPECT-OPTS...]: the manifest as stored
inspect_raw() {
	local reg=$1 ref=$2
	shift 2
	_skopeo_opts -- "$reg"
	skopeo inspect --raw "${_OPTS[@]}" "$@" "docker://$reg/$ref" </dev/null
}
