#!/bin/bash
# SPDX-License-Identifier: MIT
# tests/bench.sh [ROUNDS]: the speed and memory goals of issues 3, 4 and 13, measured here and
# printed as one Markdown table (date and machine above it) with ratios and PASS/FAIL.
#   - d-pull of a big image (tests/bench-image.py) from a loopback registry, cold and warm cache,
#     as root and unprivileged, and of the Debian fixture when it is built; against `tar -xzf` of
#     its layers, skopeo copy + umoci unpack, and charliecloud's `ch-image pull` (cold, fresh
#     storage) + `ch-convert` to a directory (a second copy from its storage); peak memory.
#   - how a cold pull grows with the layer count (300 MB in 1, 8, 32 layers) and the size (100
#     MB, 300 MB, 1 GB in 8 layers).
#   - a cold pull with the registry throttled to 50 MB/s (tc tbf on loopback in a network
#     namespace, root only) against the time the same bytes alone take through it (curl).
#   - `d-run DIR true` against the bare bwrap call it makes, with and without the seccomp filter
#     that d-run gives a run as root, and `ch-run DIR -- true`; what isolation each one gives.
# DIRs, caches and the registry's storage live on a tmpfs. Contenders alternate within each
# round (the first round is a discarded warm-up); times are medians. The slow peers and the 1 GB
# image get fewer rounds: skopeo + umoci one, charliecloud half of ROUNDS. Informational: exits
# 0 when a goal is missed, 1 only when the benchmark itself fails. BENCH_REGISTRY=tls (default)
# or http picks the registry (charliecloud and the throttled pull need tls).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

ROUNDS=${1:-3}
PEER_ROUNDS=$(((ROUNDS + 1) / 2))
KIND=${BENCH_REGISTRY:-tls}
IMAGE=$FIXTURES/bench
DEBIAN=debian-umoci
# the scaling series: LAYERSxMiB of tar; the same MiB in 1, 8 or 32 layers is the same files
SCALES=(1x300 8x300 32x300 8x100 8x1000)
THROTTLE_RATE=50 # MB/s (10^6 bytes)
# gzip -d with zlib, as libarchive inflates; GNU gzip(1), which tar -z runs, is slower
ZCAT='import zlib
d, r, w = zlib.decompressobj(31), open(0, "rb", buffering=0), open(1, "wb", buffering=0)
for b in iter(lambda: r.read(1 << 17), b""):
    o = memoryview(d.decompress(b))
    while o:
        o = o[w.write(o):]
w.write(d.flush())'

die() {
	echo "bench: $*" >&2
	_FAILED=1 # lib.sh's cleanup then exits 1
	exit 1
}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "usage: tests/bench.sh [ROUNDS]"
progress() { echo "# [$(date +%T)] $*"; }

# a snapshot of the binaries, so that a rebuild during the run cannot mix versions or break it
mkdir "$T/bin" || die "mkdir $T/bin"
cp "$DPULL" "$DRUN" "$T/bin/" || die "no $DPULL or $DRUN: run make"
DPULL=$T/bin/d-pull DRUN=$T/bin/d-run

# Everything on a tmpfs: ours when root, else a directory in /dev/shm.
if [ "$(id -u)" = 0 ]; then
	M=$T/tmpfs
	mkdir "$M" || die "mkdir $M"
	mount -t tmpfs -o size=12g,mode=0755 d-utils-bench "$M" || die "cannot mount a tmpfs on $M"
else
	M=$(mktemp -d /dev/shm/d-utils-bench.XXXXXX) || die "no room in /dev/shm"
fi

bench_cleanup() {
	local rc=$?
	set +e
	stop_servers # the registry's storage is on $M
	chmod -R u+rwx "$M" 2>/dev/null
	if mountpoint -q "$M"; then
		umount "$M" || umount -l "$M"
	else
		rm -rf "$M"
	fi
	(exit "$rc")
	_cleanup
}
trap bench_cleanup EXIT

# --- the machine ---------------------------------------------------------------

START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
BENCH_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
MEM_GIB=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
REV=$(git -C "$SRC" describe --always --dirty 2>/dev/null || echo "not a git clone")
version() { "$@" 2>/dev/null | head -n 1 | grep -o '[0-9][0-9.]*[0-9]' | head -n 1; }
VERSIONS="bubblewrap $(version bwrap --version), skopeo $(version skopeo --version)"
VERSIONS+=", umoci $(version umoci --version)"
# Debian's charliecloud: ch-image is "#!/usr/bin/env python3" and needs Debian's python3-lark,
# so /usr/bin comes first (lib.sh uses /usr/bin/python3 for the same reason). ch-image and
# ch-run refuse to start without $USER; ch-image's build cache is a git repository and needs a
# git identity: both are given here, in a HOME of the benchmark's own.
CH_ENV=(env HOME="$T/ch-home" USER="$(id -un)" PATH="/usr/bin:/bin:$PATH")
CH_WHY=""
if ! command -v ch-image >/dev/null || ! command -v ch-convert >/dev/null ||
	! command -v ch-run >/dev/null; then
	CH_WHY="charliecloud is not installed (Debian package charliecloud; make deps installs it)"
elif [ "$KIND" != tls ]; then
	CH_WHY="ch-image 0.31 pulls over HTTPS only; BENCH_REGISTRY=$KIND"
else
	mkdir -p "$T/ch-home"
	if ! "${CH_ENV[@]}" git config --global user.name "d-utils bench" ||
		! "${CH_ENV[@]}" git config --global user.email bench@localhost; then
		die "cannot give ch-image a git identity"
	fi
	VERSIONS+=", charliecloud $("${CH_ENV[@]}" ch-image --version 2>&1)"
fi
AS_USER=()
if [ "$(id -u)" = 0 ]; then
	if can_userns as_user; then
		AS_USER=(setpriv --reuid=65534 --regid=65534 --clear-groups)
		WHO="root"
	else
		WHO="root (no unprivileged runs: $PROBE_ERROR)"
	fi
else
	WHO="unprivileged (uid $(id -u))"
fi

# --- the images and the registry --------------------------------------------------

# build_image DIR [--layers N --size MB]: a benchmark image, built once (again when
# bench-image.py changes)
build_image() {
	local dir=$1
	shift
	[ -f "$dir/index.json" ] && [ ! "$SRC/tests/bench-image.py" -nt "$dir/index.json" ] && return 0
	progress "building the benchmark image $dir (once)"
	mkdir -p "$FIXTURES"
	flock "$FIXTURES/.lock" "$PYTHON" "$SRC/tests/bench-image.py" "$@" "$dir" </dev/null \
		>"$T/image.log" 2>&1 || die "building $dir failed: $(cat "$T/image.log")"
}
# stat_of DIR KEY: a number from the image's stats.json
stat_of() { jq -r ".$2" "$1/stats.json"; }
# layer_digests DIR: the layer digests of an OCI layout's image, in manifest order
layer_digests() {
	local m
	m=$(jq -r '.manifests[0].digest' "$1/index.json" | tr : /) &&
		jq -r '.layers[].digest' "$1/blobs/$m"
}

build_image "$IMAGE"
for s in "${SCALES[@]}"; do
	build_image "$FIXTURES/scale-$s" --layers "${s%x*}" --size "${s#*x}"
done
NLAYERS=$(stat_of "$IMAGE" layers) BYTES=$(stat_of "$IMAGE" bytes) GZBYTES=$(stat_of "$IMAGE" compressed)
ENTRIES=$(stat_of "$IMAGE" entries)

mkdir "$M/registry"
ln -s "$M/registry" "$T/registry-$KIND"
start_registry "$KIND" || die "the $KIND registry did not start"
if [ "$KIND" = http ]; then REG=$REG_HTTP; else REG=$REG_TLS; fi
# push LAYOUT REPO: an OCI layout to the registry, digests kept
push() {
	_skopeo_opts --dest- "$REG"
	skopeo copy -q --preserve-digests "${_OPTS[@]}" "oci:$1:latest" "docker://$REG/$2:latest" </dev/null ||
		die "pushing $1 failed"
}
progress "pushing the images to $REG"
push "$IMAGE" bench
for s in "${SCALES[@]}"; do
	push "$FIXTURES/scale-$s" "scale-$s"
done
_skopeo_opts --src- "$REG"
SKOPEO_SRC=("${_OPTS[@]}")
# The Debian fixture needs the Debian mirror to be built (make check does it once per clone):
# used when it is there.
if [ -f "$FIXTURES/$DEBIAN/index.json" ]; then
	push_fixture "$DEBIAN" "$REG" >/dev/null || die "pushing $DEBIAN failed"
	DEBIAN_WHY=""
else
	DEBIAN_WHY="the $DEBIAN fixture is not built (make check builds it once, from the Debian mirror)"
fi

# the layer blobs in d-pull's warm cache, in manifest order, for the tar reference
mapfile -t LAYER_FILES < <(layer_digests "$IMAGE" | sed "s|^|$M/warm-cache/d-utils/|")
[ "${#LAYER_FILES[@]}" = "$NLAYERS" ] || die "cannot read the manifest of $IMAGE"

# --- contenders: each writes $M/out or $M/user/out ----------------------------------

mkdir -p "$M/user"
[ ${#AS_USER[@]} = 0 ] || chown 65534:65534 "$M/user"

# dpull root|user IMAGE CACHE [REGISTRY]: d-pull of REGISTRY/IMAGE into $M/out (root) or
# $M/user/out, with the cache $M/CACHE-cache (root) or $M/user/CACHE-cache; peak RSS (KB) of its
# largest process into $M/rss
dpull() {
	local d=$M as=()
	if [ "$1" = user ]; then
		d=$M/user as=("${AS_USER[@]}")
	fi
	/usr/bin/time -f %M -o "$M/rss" "${as[@]}" env HOME="$d/home" XDG_CACHE_HOME="$d/$3-cache" \
		"$DPULL" -q "${4:-$REG}/$2" "$d/out"
}
run_cold() { dpull root bench cold; }
run_warm() { dpull root bench warm; }
run_ucold() { dpull user bench ucold; }
run_uwarm() { dpull user bench uwarm; }
run_dcold() { dpull root "$DEBIAN" dcold; }
run_dwarm() { dpull root "$DEBIAN" dwarm; }
run_ducold() { dpull user "$DEBIAN" ducold; }
run_duwarm() { dpull user "$DEBIAN" duwarm; }
run_tar() {
	local l
	mkdir "$M/out" || return 1
	for l in "${LAYER_FILES[@]}"; do
		tar -xzf "$l" -C "$M/out" || return 1
	done
}
run_ztar() {
	local - l
	set -o pipefail
	mkdir "$M/out" || return 1
	for l in "${LAYER_FILES[@]}"; do
		"$PYTHON" -c "$ZCAT" <"$l" | tar -x -C "$M/out" || return 1
	done
}
run_skopeo() {
	skopeo copy -q "${SKOPEO_SRC[@]}" "docker://$REG/bench:latest" "oci:$M/oci:latest" &&
		umoci unpack --rootless --image "$M/oci:latest" "$M/out"
}
# charliecloud trusts the test CA (REQUESTS_CA_BUNDLE, which its python-requests reads): TLS is
# verified, as for d-pull, not turned off with --tls-no-verify
run_chcold() { # a pull into fresh storage; its build cache (git) is on, as by default
	/usr/bin/time -f %M -o "$M/rss" "${CH_ENV[@]}" REQUESTS_CA_BUNDLE="$T/ca/ca.pem" \
		ch-image -s "$M/ch-storage" pull "$REG/bench:latest"
}
run_chcopy() { # a second runnable copy from the storage of the last chcold: the cheapest way
	/usr/bin/time -f %M -o "$M/rss" "${CH_ENV[@]}" CH_IMAGE_STORAGE="$M/ch-storage" \
		ch-convert -i ch-image -o dir "$REG/bench:latest" "$M/out"
}

# clean: no DIR, no oci layout
clean() {
	chmod -R u+rwx "$M/out" "$M/user/out" 2>/dev/null
	rm -rf "$M/out" "$M/user/out" "$M/oci" "$M/rss"
}
# measure NAME [RUN]: one run of run_NAME (or of RUN) from a clean start, a cold cache for a
# NAME that ends in "cold"; appends its wall time (us) to $T/time.NAME and its peak RSS (KB),
# if any, to $T/rss.NAME
measure() {
	local t0 t1
	clean
	case $1 in
	*cold) rm -rf "$M/$1-cache" "$M/user/$1-cache" "$M/ch-storage" ;;
	esac
	t0=$(date +%s%N)
	"${2:-run_$1}" </dev/null >"$T/run.log" 2>&1 || die "$1 failed: $(tail -n 5 "$T/run.log")"
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000)) >>"$T/time.$1"
	if [ -f "$M/rss" ]; then tail -n 1 "$M/rss" >>"$T/rss.$1"; fi
}

# tree_memory CMD...: runs CMD and samples the memory of it and its descendants every 5 ms;
# prints the peak of their summed PSS (shared pages split between the processes that share
# them, so a forked child's copy-on-write pages count once) and of their summed RSS, in KB.
tree_memory() {
	"$PYTHON" -c '
import os, subprocess, sys, time

def field(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

def tree(root):
    parent = {}
    for p in os.listdir("/proc"):
        try:
            with open(f"/proc/{p}/stat") as f:
                parent[int(p)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    found, todo = [], [root]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += [c for c, pp in parent.items() if pp == p]
    return found

child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
pss = rss = 0
while child.poll() is None:
    procs = tree(child.pid)
    pss = max(pss, sum(field(f"/proc/{p}/smaps_rollup", "Pss:") for p in procs))
    rss = max(rss, sum(field(f"/proc/{p}/status", "VmRSS:") for p in procs))
    time.sleep(0.005)
print(pss, rss)
sys.exit(child.returncode)' "$@"
}

median() { sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maximum() { sort -n "$@" | tail -n 1; }
minimum() { sort -n "$1" | head -n 1; }
count() { wc -l <"$1"; }
# verdict VALUE OP LIMIT: PASS or FAIL (OP is <= or <)
verdict() { awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { print ((op == "<" ? v < l : v <= l) ? "PASS" : "FAIL") }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
secs() { awk -v u="$1" 'BEGIN { printf "%.2f s", u / 1e6 }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }

# --- d-pull and its peers ------------------------------------------------------------

CONTENDERS=(cold warm tar ztar)
[ ${#AS_USER[@]} = 0 ] || CONTENDERS+=(ucold uwarm)
if [ -z "$DEBIAN_WHY" ]; then
	CONTENDERS+=(dcold dwarm)
	[ ${#AS_USER[@]} = 0 ] || CONTENDERS+=(ducold duwarm)
fi
PEERS=()
[ -n "$CH_WHY" ] || PEERS=(chcold chcopy) # chcopy copies from the storage of chcold
printf '# image: %d layers, %d MB (%d MB gzip), %d entries; %s registry %s; d-pull as %s\n' \
	"$NLAYERS" "$(mib "$BYTES")" "$(mib "$GZBYTES")" "$ENTRIES" "$KIND" "$REG" "$WHO"
echo "# $(nproc) CPUs, load average $START_LOAD (other work on the machine skews the numbers)"
# the warm-up round: the pulls (their warm runs fill the warm caches), not counted
line="warm-up round, not counted:"
for c in "${CONTENDERS[@]}"; do
	case $c in tar | ztar) continue ;; esac # they read the warm cache; they have nothing to warm
	measure "$c"
	line+=" $c $(secs "$(tail -n 1 "$T/time.$c")")"
	rm -f "$T/time.$c" "$T/rss.$c"
done
progress "$line"
for l in "${LAYER_FILES[@]}"; do
	[ -f "$l" ] || die "$l: not in the cache after a pull"
done
# each round: the contenders, rotated; then skopeo + umoci, the slowest, in round 1; then
# charliecloud in the first PEER_ROUNDS rounds
for ((r = 1; r <= ROUNDS; r++)); do
	line="round $r:"
	order=()
	for ((i = 0; i < ${#CONTENDERS[@]}; i++)); do
		order+=("${CONTENDERS[(i + r) % ${#CONTENDERS[@]}]}")
	done
	[ "$r" -gt 1 ] || order+=(skopeo)
	[ "$r" -gt "$PEER_ROUNDS" ] || order+=("${PEERS[@]}")
	for c in "${order[@]}"; do
		measure "$c"
		line+=" $c $(secs "$(tail -n 1 "$T/time.$c")")"
	done
	progress "$line"
done
rm -rf "$M/ch-storage"

# peak memory of the whole d-pull process tree, in runs of their own (sampling costs CPU)
for c in cold warm; do
	clean
	[ "$c" = cold ] && rm -rf "$M/cold-cache"
	read -r pss rsssum < <(tree_memory env HOME="$M/home" XDG_CACHE_HOME="$M/$c-cache" \
		"$DPULL" -q "$REG/bench" "$M/out" 2>"$T/run.log") || die "d-pull $c failed: $(cat "$T/run.log")"
	printf -v "PSS_${c^^}" '%s' "$pss"
	printf -v "RSSSUM_${c^^}" '%s' "$rsssum"
done
clean
rm -rf "$M/cold-cache"

# --- the scaling series: d-pull cold -----------------------------------------------

# rounds for an image of MB MiB: ROUNDS up to 300 MiB, fewer above (one for 1 GB at 3 rounds)
scale_rounds() {
	local n=$((ROUNDS * 300 / $1))
	[ "$n" -ge 1 ] || n=1
	[ "$n" -le "$ROUNDS" ] || n=$ROUNDS
	echo "$n"
}
run_scale() { dpull root "scale-$SCALE" scold; }
for ((r = 1; r <= ROUNDS; r++)); do
	line="scaling round $r:"
	for ((i = 0; i < ${#SCALES[@]}; i++)); do
		s=${SCALES[(i + r) % ${#SCALES[@]}]}
		[ "$r" -le "$(scale_rounds "${s#*x}")" ] || continue
		SCALE=$s
		measure scold run_scale
		mv "$T/time.scold" "$T/time.scale-$s.$r"
		cat "$T/time.scale-$s.$r" >>"$T/time.scale-$s"
		line+=" $s $(secs "$(cat "$T/time.scale-$s.$r")")"
	done
	progress "$line"
done
clean
rm -rf "$M/scold-cache"

# --- the throttled registry: 50 MB/s ---------------------------------------------------
# A second registry on the same storage, in a network namespace of its own whose loopback
# sends at most 50 MB/s (tc's token bucket filter); d-pull, and curl for the bytes alone, run
# in that namespace. The bytes alone: one curl that fetches the layer blobs one after the other
# on one connection, to /dev/null.

THROTTLE_WHY=""
if [ "$(id -u)" != 0 ]; then
	THROTTLE_WHY="needs root (tc in a network namespace)"
elif ! command -v tc >/dev/null || ! command -v ip >/dev/null || ! command -v nsenter >/dev/null; then
	THROTTLE_WHY="needs ip and tc (Debian's iproute2) and nsenter"
elif [ "$KIND" != tls ]; then
	THROTTLE_WHY="measured against the TLS registry only; BENCH_REGISTRY=$KIND"
fi
throttle_setup() {
	local holder i
	unshare --net sleep infinity </dev/null >/dev/null 2>&1 &
	holder=$!
	SERVER_PIDS+=("$holder")
	NETNS=(nsenter "--net=/proc/$holder/ns/net")
	for ((i = 0; i < 50; i++)); do
		[ "$(readlink "/proc/$holder/ns/net")" != "$(readlink /proc/self/ns/net)" ] && break
		sleep 0.1
	done
	"${NETNS[@]}" ip link set lo up || return 1
	# burst: a loopback packet can be 64 KiB (GSO); latency: the queue holds 200 ms of packets
	# before any is dropped, so TCP paces itself rather than retransmits
	"${NETNS[@]}" tc qdisc add dev lo root tbf rate "$((THROTTLE_RATE * 8))mbit" burst 256kb \
		latency 200ms >"$T/tc.log" 2>&1 || {
		THROTTLE_WHY="tc failed: $(head -n 1 "$T/tc.log")"
		return 1
	}
	_registry_config tls "$T/registry-tls" 5000 >"$T/throttled.yml"
	"${NETNS[@]}" /usr/bin/docker-registry serve "$T/throttled.yml" </dev/null >"$T/throttled.log" 2>&1 &
	SERVER_PIDS+=("$!")
	for ((i = 0; i < 600; i++)); do
		"${NETNS[@]}" curl -sf -o /dev/null --cacert "$T/ca/ca.pem" https://127.0.0.1:5000/v2/ && return 0
		sleep 0.1
	done
	THROTTLE_WHY="the registry in the network namespace did not start: $(head -n 3 "$T/throttled.log")"
	return 1
}
run_tcold() { # d-pull in the namespace, time(1) outside it
	/usr/bin/time -f %M -o "$M/rss" "${NETNS[@]}" env HOME="$M/home" XDG_CACHE_HOME="$M/tcold-cache" \
		"$DPULL" -q 127.0.0.1:5000/bench "$M/out"
}
run_bytes() {
	local args=() d
	for d in $(layer_digests "$IMAGE"); do
		args+=(-o /dev/null "https://127.0.0.1:5000/v2/bench/blobs/$d")
	done
	"${NETNS[@]}" curl -sSf --cacert "$T/ca/ca.pem" "${args[@]}"
}
if [ -z "$THROTTLE_WHY" ] && throttle_setup; then
	for ((r = 1; r <= ROUNDS; r++)); do
		if ((r % 2)); then order=(bytes tcold); else order=(tcold bytes); fi
		line="throttled round $r:"
		for c in "${order[@]}"; do
			measure "$c"
			line+=" $c $(secs "$(tail -n 1 "$T/time.$c")")"
		done
		progress "$line"
	done
	clean
	rm -rf "$M/tcold-cache"
fi

# --- d-run, bwrap and ch-run -----------------------------------------------------------

progress "start-up: d-run, bwrap and ch-run (hyperfine)"
push_fixture busybox "$REG" >/dev/null || die "pushing busybox failed"
env HOME="$M/home" XDG_CACHE_HOME="$M/warm-cache" "$DPULL" -q "$REG/busybox" "$M/box" ||
	die "d-pull busybox failed"
# d-run's bwrap command line, from a bwrap first in PATH that prints its arguments: line 1
# without --seccomp FD, line 2 with the filter's fd as 9. It saves the filter that d-run made (as
# root, d-run gives one) from that fd into $T/filter.bpf.
mkdir -p "$T/showargs"
cat >"$T/showargs/bwrap" <<STANDIN
#!/bin/bash
plain=() filtered=()
while [ \$# -gt 0 ] && [ "\$1" != -- ]; do
	if [ "\$1" = --seccomp ]; then
		cat <&"\$2" >"$T/filter.bpf" || exit 1
		filtered+=(--seccomp 9)
		shift 2
		continue
	fi
	plain+=("\$1") filtered+=("\$1")
	shift
done
printf bwrap; printf " %q" "\${plain[@]}" "\$@"; echo
printf bwrap; printf " %q" "\${filtered[@]}" "\$@"; echo
STANDIN
chmod +x "$T/showargs/bwrap"
{ read -r BWRAP && read -r BWRAP_SECCOMP; } < <(PATH="$T/showargs:$PATH" "$DRUN" "$M/box" true) ||
	die "d-run $M/box true failed"
[[ $BWRAP == bwrap\ * ]] || die "no bwrap command line from d-run: $BWRAP"
[ "$BWRAP" != "$BWRAP_SECCOMP" ] || die "d-run gave a run as root no seccomp filter: $BWRAP"
size=$(stat -c %s "$T/filter.bpf" 2>/dev/null)
if [ "${size:-0}" = 0 ] || [ $((size % 8)) != 0 ]; then
	die "the seccomp filter from d-run is not a BPF program (${size:-no} bytes)"
fi
FILTER_INSNS=$((size / 8))
# ch-run gets charliecloud's own copy of the same image: ch-image pull, ch-convert to a directory
if [ -z "$CH_WHY" ]; then
	if ! "${CH_ENV[@]}" REQUESTS_CA_BUNDLE="$T/ca/ca.pem" ch-image -s "$M/ch-box-storage" \
		pull "$REG/busybox:latest" </dev/null >"$T/run.log" 2>&1 ||
		! "${CH_ENV[@]}" CH_IMAGE_STORAGE="$M/ch-box-storage" ch-convert -i ch-image -o dir \
			"$REG/busybox:latest" "$M/chbox" </dev/null >>"$T/run.log" 2>&1; then
		die "ch-image pull or ch-convert of busybox failed: $(tail -n 5 "$T/run.log")"
	fi
fi

# isolation: the namespaces a runner does not share with the host, and how many processes it
# sees in its /proc (the host's many when it shares the pid namespace)
# shellcheck disable=SC2016 # expanded by the sh in the sandbox
PROBE='for n in cgroup ipc mnt net pid user uts; do echo "$n $(readlink /proc/self/ns/$n)"; done
echo "procs $(ls /proc | grep -c "^[0-9]")"'
isolation() { # RUNNER-ARGV... (up to the command)
	local out n id host unshared="" shared="" procs=""
	out=$("$@" sh -c "$PROBE" 2>&1) || {
		echo "the probe failed: ${out%%$'\n'*}"
		return
	}
	while read -r n id; do
		if [ "$n" = procs ]; then
			procs=$id
			continue
		fi
		host=$(readlink "/proc/self/ns/$n")
		if [ "$id" = "$host" ]; then shared+=" $n"; else unshared+=" $n"; fi
	done <<<"$out"
	echo "own namespaces:${unshared:- none}; shared with the host:${shared:- none}; sees $procs processes"
}
ISO_DRUN=$(isolation "$DRUN" "$M/box")
ISO_CHRUN="not measured: $CH_WHY"
[ -n "$CH_WHY" ] || ISO_CHRUN=$(isolation "${CH_ENV[@]}" ch-run "$M/chbox" --)

# The filter is replayed from fd 9, which hyperfine gets open on $T/filter.bpf and passes to every
# command it runs. bwrap reads it to its end, so the offset they share goes back to 0 before each
# run, of every command alike (preparation is not timed).
# shellcheck disable=SC2016 # perl's variables
REWIND=(--prepare 'perl -e '\''open(my $f, "<&=", 9) or die; sysseek($f, 0, 0) or die'\''')
# the floor for any wrapper: env(1) adds one exec of a small dynamic program to bwrap
declare -A RUN_CMDS=([drun]="$DRUN $M/box true" [seccomp]=$BWRAP_SECCOMP [bwrap]=$BWRAP
	[env]="env $BWRAP" [chrun]="ch-run $M/chbox -- true")
RUN_ORDER=(drun seccomp bwrap env)
[ -n "$CH_WHY" ] || RUN_ORDER+=(chrun)
N=${#RUN_ORDER[@]}
HF_RUNS=100
# N hyperfine runs, the order rotated each time; all samples pooled. ch-run needs $USER, and
# Debian's python3 first on PATH costs bwrap and d-run nothing.
for ((r = 0; r < N; r++)); do
	cmds=()
	for ((i = 0; i < N; i++)); do
		cmds+=("${RUN_CMDS[${RUN_ORDER[(i + r) % N]}]}")
	done
	"${CH_ENV[@]}" hyperfine -N --warmup 20 --runs "$HF_RUNS" --style none --export-json "$T/hf$r.json" \
		"${REWIND[@]}" "${cmds[@]}" 9<"$T/filter.bpf" \
		>"$T/hyperfine.log" 2>&1 || die "hyperfine failed: $(cat "$T/hyperfine.log")"
	for c in "${RUN_ORDER[@]}"; do
		jq -r --arg c "${RUN_CMDS[$c]}" '.results[] | select(.command == $c) | .times[] * 1e6 | floor' \
			"$T/hf$r.json" >>"$T/time.$c"
		# CPU time, which other work on the machine disturbs less: hyperfine gives only means
		jq -r --arg c "${RUN_CMDS[$c]}" '.results[] | select(.command == $c) | (.user + .system) * 1e6 | floor' \
			"$T/hf$r.json" >>"$T/cpu.$c"
	done
done

# --- the table -----------------------------------------------------------------------

med() { median "$T/time.$1"; }
ms() { awk -v u="$1" 'BEGIN { printf "%.2f ms", u / 1000 }'; }
msdiff() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.2f ms", (a - b) / 1000 }'; }
mean() { awk '{ s += $1 } END { print s / NR }' "$1"; }
kb_mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
spread() { # TIME-FILE: median (min-max, runs)
	printf '%s (%s-%s, n=%d)' "$(secs "$(median "$1")")" "$(secs "$(minimum "$1")" | cut -d' ' -f1)" \
		"$(secs "$(maximum "$1")" | cut -d' ' -f1)" "$(count "$1")"
}
row() { printf '| %s | %s | %s | %s |\n' "$@"; }
goal() { # LABEL VALUE OP LIMIT ISSUE [NOTE]: the value is a ratio or a number of the goal's unit
	local op=$3
	[ "$op" = "<=" ] && op="≤"
	row "**$1**" "$2" "$op $4 (issue $5)" "**$(verdict "$2" "$3" "$4")**${6:+ $6}"
}
# min_ratio A B: the ratio of the fastest runs of A and B (other work on the machine only ever
# adds time), for the result column
min_ratio() { echo "(fastest runs: $(ratio "$(minimum "$T/time.$1")" "$(minimum "$T/time.$2")"))"; }
not_measured() { row "**$1**" "not measured" "$2" "— $3"; }
MISSED=()
track() { # LABEL VALUE OP LIMIT: remembers a missed goal for the closing line
	[ "$(verdict "$2" "$3" "$4")" = PASS ] || MISSED+=("$1 ($2, goal $3 $4)")
}
# cold_warm LABEL COLD WARM: the cold / warm goal of issue 13
cold_warm() {
	local r
	r=$(ratio "$(med "$2")" "$(med "$3")")
	goal "$1" "$r" "<=" 1.30 13 "$(min_ratio "$2" "$3")"
	track "$1" "$r" "<=" 1.30
}

echo
echo "## d-utils benchmark, $BENCH_DATE"
echo
echo "Machine: $(nproc) CPUs ($CPU_MODEL), Linux $(uname -r), $MEM_GIB GiB RAM; load average" \
	"$START_LOAD at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (other test runs were" \
	"using the machine: the times are the medians of a noisy machine). d-utils $REV; $VERSIONS."
echo "Image \`bench\`: $NLAYERS layers, $(mib "$BYTES") MiB of tar ($(mib "$GZBYTES") MiB gzip)," \
	"$ENTRIES entries; $KIND docker-registry on loopback; registry storage, DIRs and caches on a" \
	"tmpfs; d-pull as $WHO. $ROUNDS rounds after a warm-up round; skopeo + umoci 1 round," \
	"charliecloud $PEER_ROUNDS (they are slow); times are medians (min-max, number of runs)."
echo
row "measure" "value" "goal" "result"
row "---" "---" "---" "---"
row "d-pull cold cache, bench" "$(spread "$T/time.cold")" "" ""
row "d-pull warm cache (new DIR), bench" "$(spread "$T/time.warm")" "" ""
cold_warm "d-pull cold / warm, bench" cold warm
if [ ${#AS_USER[@]} != 0 ]; then
	row "d-pull cold, bench, unprivileged (uid 65534)" "$(spread "$T/time.ucold")" "" ""
	row "d-pull warm, bench, unprivileged" "$(spread "$T/time.uwarm")" "" ""
	cold_warm "d-pull cold / warm, bench, unprivileged" ucold uwarm
fi
if [ -z "$DEBIAN_WHY" ]; then
	m=$(jq -r '.manifests[0].digest' "$FIXTURES/$DEBIAN/index.json" | tr : /)
	gz=$(jq '[.layers[].size] | add' "$FIXTURES/$DEBIAN/blobs/$m")
	row "d-pull cold / warm, $DEBIAN ($(jq '.layers | length' "$FIXTURES/$DEBIAN/blobs/$m") layers, $(mib "$gz") MiB gzip)" \
		"$(spread "$T/time.dcold") / $(spread "$T/time.dwarm")" "" ""
	cold_warm "d-pull cold / warm, $DEBIAN" dcold dwarm
	if [ ${#AS_USER[@]} != 0 ]; then
		row "d-pull cold / warm, $DEBIAN, unprivileged" \
			"$(spread "$T/time.ducold") / $(spread "$T/time.duwarm")" "" ""
		cold_warm "d-pull cold / warm, $DEBIAN, unprivileged" ducold duwarm
	fi
else
	not_measured "d-pull cold / warm, Debian fixture" "≤ 1.30 (issue 13)" "$DEBIAN_WHY"
fi
if [ -z "$THROTTLE_WHY" ]; then
	BYTES_T=$(med bytes) TCOLD=$(med tcold)
	row "$THROTTLE_RATE MB/s: the layer bytes alone (one curl, one connection)" "$(spread "$T/time.bytes")" \
		"" "$(awk -v b="$GZBYTES" -v r="$THROTTLE_RATE" \
			'BEGIN { printf "%.2f s at exactly %d MB/s", b / r / 1e6, r }')"
	row "$THROTTLE_RATE MB/s: d-pull cold, bench" "$(spread "$T/time.tcold")" "" ""
	r=$(ratio "$TCOLD" "$BYTES_T")
	goal "$THROTTLE_RATE MB/s: d-pull cold / the bytes alone" "$r" "<=" 1.15 13 "$(min_ratio tcold bytes)"
	track "$THROTTLE_RATE MB/s: cold / bytes alone" "$r" "<=" 1.15
else
	not_measured "$THROTTLE_RATE MB/s: d-pull cold / the bytes alone" "≤ 1.15 (issue 13)" "$THROTTLE_WHY"
fi
RSS_FILES=()
for f in "$T"/rss.*cold "$T"/rss.*warm; do
	case $f in */rss.ch*) ;; *) RSS_FILES+=("$f") ;; esac
done
RSS_MAX=$(maximum "${RSS_FILES[@]}")
RSS_MIB=$(awk -v k="$RSS_MAX" 'BEGIN { printf "%.1f", k / 1024 }')
goal "d-pull peak RSS, largest process (time %M), every d-pull run, MiB" "$RSS_MIB" "<" 32 13
track "d-pull peak RSS" "$RSS_MIB" "<" 32
PSS_MIB=$(awk -v a="$PSS_COLD" -v b="$PSS_WARM" 'BEGIN { printf "%.1f", (a > b ? a : b) / 1024 }')
goal "d-pull + extractor peak PSS, summed, cold and warm, MiB" "$PSS_MIB" "<" 32 13
track "d-pull + extractor peak PSS" "$PSS_MIB" "<" 32
row "  (summed RSS, shared pages counted twice: cold / warm)" \
	"$(kb_mib "$RSSSUM_COLD") / $(kb_mib "$RSSSUM_WARM")" "" "info"
row "tar -xzf of the cached layers (reference)" "$(spread "$T/time.tar")" "" ""
row "zlib inflate piped to tar -x, of the cached layers" "$(spread "$T/time.ztar")" "" ""
COLD=$(med cold) WARM=$(med warm) TAR=$(med tar)
goal "d-pull cold / tar" "$(ratio "$COLD" "$TAR")" "<=" 1.25 3
goal "d-pull warm / tar" "$(ratio "$WARM" "$TAR")" "<=" 1.10 3
row "d-pull cold, warm / (zlib piped to tar)" \
	"$(ratio "$COLD" "$(med ztar)") / $(ratio "$WARM" "$(med ztar)")" "" "info"
row "skopeo copy + umoci unpack --rootless" "$(spread "$T/time.skopeo")" "" ""
goal "d-pull cold / (skopeo + umoci)" "$(ratio "$COLD" "$(med skopeo)")" "<" 0.25 4
if [ -z "$CH_WHY" ]; then
	row "charliecloud ch-image pull, fresh storage (cold)" "$(spread "$T/time.chcold")" "" ""
	row "charliecloud ch-convert ch-image → dir (second copy)" "$(spread "$T/time.chcopy")" "" ""
	row "d-pull cold / ch-image pull; d-pull warm / ch-convert" \
		"$(ratio "$COLD" "$(med chcold)"); $(ratio "$WARM" "$(med chcopy)")" "" "info"
	row "ch-image pull peak RSS, largest process (time %M)" "$(kb_mib "$(maximum "$T/rss.chcold")")" "" \
		"info; d-pull: $RSS_MIB MiB"
else
	row "charliecloud ch-image pull, ch-convert" "not measured" "" "$CH_WHY"
fi
for s in "${SCALES[@]}"; do
	d=$FIXTURES/scale-$s
	n=${s%x*}
	[ "$n" = 1 ] && layer=layer || layer=layers
	b=$(stat_of "$d" bytes) gz=$(stat_of "$d" compressed)
	row "scaling: d-pull cold, $(mib "$b") MiB of tar ($(mib "$gz") MiB gzip) in $n $layer" \
		"$(spread "$T/time.scale-$s")" "" \
		"$(awk -v b="$b" -v t="$(median "$T/time.scale-$s")" -v ref="$(median "$T/time.scale-8x300")" \
			'BEGIN { printf "%.0f MiB/s of tar; %.2fx the time of 8x300", b / 1048576 / (t / 1e6), t / ref }')"
done
DRUN_T=$(med drun) SECCOMP_T=$(med seccomp) BWRAP_T=$(med bwrap) ENV_T=$(med env)
declare -A CPU
for c in "${RUN_ORDER[@]}"; do
	CPU[$c]=$(mean "$T/cpu.$c")
done
row "d-run DIR true (busybox, as root: with the filter)" "$(ms "$DRUN_T")" "" ""
row "bare bwrap, d-run's argv, --seccomp 9 (the filter)" "$(ms "$SECCOMP_T")" "" ""
row "bare bwrap, d-run's argv without --seccomp" "$(ms "$BWRAP_T")" "" ""
row "env bwrap ... (one extra exec, no filter)" "$(ms "$ENV_T")" "" ""
r=$(ratio "$DRUN_T" "$SECCOMP_T")
goal "d-run / (bare bwrap, same argv, filter included)" "$r" "<=" 1.10 13
track "d-run start-up / bare bwrap" "$r" "<=" 1.10
row "d-run / (bwrap without the filter); (env bwrap) / bwrap, the floor for a wrapper" \
	"$(ratio "$DRUN_T" "$BWRAP_T"); $(ratio "$ENV_T" "$BWRAP_T")" "" "info"
row "d-run / (env bwrap)" "$(ratio "$DRUN_T" "$ENV_T")" "" "info"
row "the filter ($FILTER_INSNS BPF instructions): wall, CPU" \
	"$(msdiff "$SECCOMP_T" "$BWRAP_T"); $(msdiff "${CPU[seccomp]}" "${CPU[bwrap]}")" "" "info"
CPU_LINE="$(ms "${CPU[drun]}") / $(ms "${CPU[seccomp]}") / $(ms "${CPU[bwrap]}")"
if [ -z "$CH_WHY" ]; then
	CHRUN_T=$(med chrun)
	row "ch-run DIR -- true (charliecloud's copy of busybox)" "$(ms "$CHRUN_T")" "" ""
	row "ch-run / (bare bwrap, d-run's argv, filter)" "$(ratio "$CHRUN_T" "$SECCOMP_T")" "" "info"
	CPU_LINE+=" / $(ms "${CPU[chrun]}")"
	row "CPU (user+sys): d-run / bwrap --seccomp / bwrap / ch-run" "$CPU_LINE" "" "mean"
else
	row "ch-run DIR -- true" "not measured" "" "$CH_WHY"
	row "CPU (user+sys): d-run / bwrap --seccomp / bwrap" "$CPU_LINE" "" "mean"
fi
row "isolation: d-run, and bare bwrap (the same argv)" "$ISO_DRUN" "" \
	"fresh /proc, minimal /dev, tmpfs /tmp, read-only root; no network but loopback"
row "isolation: ch-run (defaults)" "$ISO_CHRUN" "" \
	"the host's network, processes and IPC"
echo
echo "- Times: wall clock of one run, from a clean DIR (and, cold, an empty cache or storage)."
echo "  d-pull's peak RSS is time(1)'s %M, the largest peak of any one process of the tree (wait4"
echo "  reports the max, not the sum); the PSS row samples the whole tree every 5 ms in runs of"
echo "  their own, so it may miss a short peak."
echo "- charliecloud: \`ch-image -s STORAGE pull\` into a fresh storage directory each time, its"
echo "  build cache (git) on as by default; the second copy is \`ch-convert -i ch-image -o dir\` from"
echo "  that storage, the cheapest way to a second runnable copy (a second \`ch-image pull\` under"
echo "  another name asks the registry again and copies from the build cache). ch-image trusts the"
echo "  test CA (REQUESTS_CA_BUNDLE): TLS is verified, as for d-pull, not --tls-no-verify. \$USER"
echo "  and a git identity come from a HOME of the benchmark's own."
echo "- Scaling: the same files of this machine's /usr in 1, 8 or 32 layers (tests/bench-image.py"
echo "  --layers N --size MiB); $(scale_rounds 300) runs each up to 300 MiB, fewer for the big size:"
echo "  $(scale_rounds 1000) at 1 GB."
echo "- $THROTTLE_RATE MB/s: a second registry on the same storage, in a network namespace whose"
echo "  loopback goes through tc's token bucket filter at $((THROTTLE_RATE * 8)) mbit/s; d-pull and curl run"
echo "  in it. The bytes alone: one curl that fetches the $NLAYERS layer blobs one after the other."
echo "- Start-up: hyperfine -N, $N x $HF_RUNS runs each (after 20 warm-up runs), the order rotated"
echo "  per run; the filter is d-run's own, replayed as bwrap ... --seccomp 9 ... 9<filter.bpf. Wall"
echo "  times are medians; CPU times the mean of hyperfine's means (it keeps no CPU time per run)."
echo "  Isolation is measured: /proc/self/ns/* inside against the host's, and the processes in /proc."
if [ ${#MISSED[@]} = 0 ]; then
	echo "- Issue 13's goals: all met."
else
	echo "- Issue 13's goals missed (medians):"
	printf '  %s;\n' "${MISSED[@]}" | sed '$ s/;$/./'
fi
echo "- Medians of a few runs on a loaded machine move by 10-30 % from one run of the benchmark to"
echo "  the next; a ratio near its limit can pass or fail by chance: tests/bench.sh 5 (or make bench"
echo "  BENCH_ROUNDS=5) gives more runs."
echo "- The benchmark took $SECONDS s."
