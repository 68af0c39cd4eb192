#!/bin/bash
# SPDX-License-Identifier: MIT
# tests/bench.sh [ROUNDS]: the "Speed and memory" goals of issues 3 and 4, measured here.
# d-pull of a big image (tests/bench-image.py) from a loopback registry, cold and warm cache,
# against plain `tar -xzf` of its layers and against skopeo copy + umoci unpack; d-pull's peak
# memory; `d-run DIR true` against the bare bwrap call it makes, with and without the seccomp
# filter that d-run gives a run as root (issue 11), so that the filter's start-up cost shows
# (hyperfine times these; it is in the Makefile's DEBS). DIRs, caches and the registry's
# storage live on a tmpfs. Contenders alternate within each round (the first round is a
# discarded warm-up); times are medians. Informational: exits 0 when a goal is missed, 1 only
# when the benchmark itself fails. BENCH_REGISTRY=tls (default) or http picks the registry.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

ROUNDS=${1:-5}
KIND=${BENCH_REGISTRY:-tls}
IMAGE=$FIXTURES/bench
CONTENDERS=(cold warm tar ztar skopeo)
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

# a snapshot of the binaries, so that a rebuild during the run cannot mix versions or break it
mkdir "$T/bin" || die "mkdir $T/bin"
cp "$DPULL" "$DRUN" "$T/bin/" || die "no $DPULL or $DRUN: run make"
DPULL=$T/bin/d-pull DRUN=$T/bin/d-run

# Everything on a tmpfs: ours when root, else a directory in /dev/shm.
if [ "$(id -u)" = 0 ]; then
	M=$T/tmpfs
	mkdir "$M" || die "mkdir $M"
	mount -t tmpfs -o size=8g,mode=0755 d-utils-bench "$M" || die "cannot mount a tmpfs on $M"
else
	M=$(mktemp -d /dev/shm/d-utils-bench.XXXXXX) || die "no room in /dev/shm"
fi

bench_cleanup() {
	local rc=$?
	set +e
	stop_servers # the registry's storage is on $M
	if mountpoint -q "$M"; then
		umount "$M" || umount -l "$M"
	else
		rm -rf "$M"
	fi
	(exit "$rc")
	_cleanup
}
trap bench_cleanup EXIT

# --- the image and the registry ----------------------------------------------

if [ ! -f "$IMAGE/index.json" ] || [ "$SRC/tests/bench-image.py" -nt "$IMAGE/index.json" ]; then
	echo "# building the benchmark image in $IMAGE (once, about a minute)"
	mkdir -p "$FIXTURES"
	flock "$FIXTURES/.lock" "$PYTHON" "$SRC/tests/bench-image.py" "$IMAGE" </dev/null >"$T/image.log" 2>&1 ||
		die "building the image failed: $(cat "$T/image.log")"
fi
read -r NLAYERS BYTES GZBYTES ENTRIES < <(jq -r '"\(.layers) \(.bytes) \(.compressed) \(.entries)"' "$IMAGE/stats.json") ||
	die "no $IMAGE/stats.json"

mkdir "$M/registry"
ln -s "$M/registry" "$T/registry-$KIND"
start_registry "$KIND" || die "the $KIND registry did not start"
if [ "$KIND" = http ]; then REG=$REG_HTTP; else REG=$REG_TLS; fi
_skopeo_opts --dest- "$REG"
skopeo copy -q --preserve-digests "${_OPTS[@]}" "oci:$IMAGE:latest" "docker://$REG/bench:latest" </dev/null ||
	die "pushing the image failed"
_skopeo_opts --src- "$REG"
SKOPEO_SRC=("${_OPTS[@]}")

# the layer blobs in d-pull's warm cache, in manifest order, for the tar reference
manifest=$(jq -r '.manifests[0].digest' "$IMAGE/index.json" | tr : /)
mapfile -t LAYER_FILES < <(jq -r --arg c "$M/warm-cache/d-utils/" '.layers[].digest | $c + .' "$IMAGE/blobs/$manifest")
[ "${#LAYER_FILES[@]}" = "$NLAYERS" ] || die "cannot read the manifest of $IMAGE"

# --- contenders: each writes $M/out ------------------------------------------

dpull() { # CACHE-HOME: d-pull of the image into $M/out; its peak RSS (KB) into $M/rss
	env HOME="$M/home" XDG_CACHE_HOME="$1" /usr/bin/time -f %M -o "$M/rss" \
		"$DPULL" -q "$REG/bench" "$M/out"
}
run_cold() { dpull "$M/cold-cache"; }
run_warm() { dpull "$M/warm-cache"; }
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

# measure NAME: one run of run_NAME from a clean start; appends its wall time (us) to
# $T/time.NAME and, for d-pull, its peak RSS (KB) to $T/rss.NAME
measure() {
	local t0 t1
	chmod -R u+rwx "$M/out" 2>/dev/null
	rm -rf "$M/out" "$M/oci" "$M/rss"
	[ "$1" = cold ] && rm -rf "$M/cold-cache"
	t0=$(date +%s%N)
	"run_$1" </dev/null >"$T/run.log" 2>&1 || die "$1 failed: $(tail -n 5 "$T/run.log")"
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
maximum() { sort -n "$1" | tail -n 1; }
minimum() { sort -n "$1" | head -n 1; }
# verdict VALUE OP LIMIT: PASS or MISS (OP is <= or <)
verdict() { awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { print ((op == "<" ? v < l : v <= l) ? "PASS" : "MISS") }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
secs() { awk -v u="$1" 'BEGIN { printf "%.2f s", u / 1e6 }'; }

# --- d-pull ----------------------------------------------------------------------

printf '# image: %d layers, %d MB (%d MB gzip), %d entries; %s registry %s; %d rounds\n' \
	"$NLAYERS" $((BYTES >> 20)) $((GZBYTES >> 20)) "$ENTRIES" "$KIND" "$REG" "$ROUNDS"
echo "# $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the numbers)"
echo "# warm-up round (its warm run fills the warm cache; not counted)"
for c in "${CONTENDERS[@]}"; do
	measure "$c"
	mv "$T/time.$c" "$T/warmup.$c"
	rm -f "$T/rss.$c"
done
for l in "${LAYER_FILES[@]}"; do
	[ -f "$l" ] || die "$l: not in the cache after a pull"
done
for ((r = 1; r <= ROUNDS; r++)); do
	line="# round $r:"
	for ((i = 0; i < ${#CONTENDERS[@]}; i++)); do
		c=${CONTENDERS[(i + r) % ${#CONTENDERS[@]}]}
		measure "$c"
		line+=" $c $(secs "$(tail -n 1 "$T/time.$c")")"
	done
	echo "$line"
done

# peak memory of the whole d-pull process tree, in runs of their own (sampling costs CPU)
for c in cold warm; do
	chmod -R u+rwx "$M/out" 2>/dev/null
	rm -rf "$M/out"
	[ "$c" = cold ] && rm -rf "$M/cold-cache"
	read -r pss rsssum < <(tree_memory env HOME="$M/home" XDG_CACHE_HOME="$M/$c-cache" \
		"$DPULL" -q "$REG/bench" "$M/out" 2>"$T/run.log") || die "d-pull $c failed: $(cat "$T/run.log")"
	printf -v "PSS_${c^^}" '%s' "$pss"
	printf -v "RSSSUM_${c^^}" '%s' "$rsssum"
done
rm -rf "$M/out" "$M/oci" "$M/cold-cache"

# --- d-run -----------------------------------------------------------------------

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
# The filter is replayed from fd 9, which hyperfine gets open on $T/filter.bpf and passes to every
# command it runs. bwrap reads it to its end, so the offset they share goes back to 0 before each
# run, of every command alike (preparation is not timed).
# shellcheck disable=SC2016 # perl's variables
REWIND=(--prepare 'perl -e '\''open(my $f, "<&=", 9) or die; sysseek($f, 0, 0) or die'\''')
# the floor for any wrapper: env(1) adds one exec of a small dynamic program to bwrap
declare -A RUN_CMDS=([drun]="$DRUN $M/box true" [seccomp]=$BWRAP_SECCOMP [bwrap]=$BWRAP
	[env]="env $BWRAP")
RUN_ORDER=(drun seccomp bwrap env)
N=${#RUN_ORDER[@]}
# N hyperfine runs, the order rotated each time; all samples pooled
for ((r = 0; r < N; r++)); do
	cmds=()
	for ((i = 0; i < N; i++)); do
		cmds+=("${RUN_CMDS[${RUN_ORDER[(i + r) % N]}]}")
	done
	hyperfine -N --warmup 20 --runs 150 --style none --export-json "$T/hf$r.json" \
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

# --- summary -----------------------------------------------------------------------

COLD=$(median "$T/time.cold") WARM=$(median "$T/time.warm") TAR=$(median "$T/time.tar")
ZTAR=$(median "$T/time.ztar") SKOPEO=$(median "$T/time.skopeo")
DRUN_T=$(median "$T/time.drun") BWRAP_T=$(median "$T/time.bwrap") ENV_T=$(median "$T/time.env")
SECCOMP_T=$(median "$T/time.seccomp")
mean() { awk '{ s += $1 } END { print s / NR }' "$1"; }
declare -A CPU
for c in "${RUN_ORDER[@]}"; do
	CPU[$c]=$(mean "$T/cpu.$c")
done
row() { printf '%-46s %16s %9s  %s\n' "$@"; }
spread() { printf '%s (%s-%s)' "$(secs "$(median "$1")")" "$(secs "$(minimum "$1")" | cut -d' ' -f1)" \
	"$(secs "$(maximum "$1")" | cut -d' ' -f1)"; }
goal() { # LABEL VALUE OP LIMIT [SHOWN-VALUE]
	row "$1" "${5:-$2}" "$3 $4" "$(verdict "$2" "$3" "$4")"
}
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

echo
echo "# summary: medians of $ROUNDS rounds (min-max); DIR, caches and registry on a tmpfs"
row "measure" "value" "goal" "result"
row "d-pull, cold cache" "$(spread "$T/time.cold")" "" ""
row "d-pull, warm cache (new DIR)" "$(spread "$T/time.warm")" "" ""
row "tar -xzf of the cached layers (reference)" "$(spread "$T/time.tar")" "" ""
row "zlib | tar -x of the cached layers" "$(spread "$T/time.ztar")" "" ""
row "skopeo copy + umoci unpack --rootless" "$(spread "$T/time.skopeo")" "" ""
goal "cold / tar" "$(ratio "$COLD" "$TAR")" "<=" 1.25
goal "warm / tar" "$(ratio "$WARM" "$TAR")" "<=" 1.10
row "cold / (zlib | tar), warm / (zlib | tar)" "$(ratio "$COLD" "$ZTAR") / $(ratio "$WARM" "$ZTAR")" "" "info"
goal "cold / (skopeo + umoci)" "$(ratio "$COLD" "$SKOPEO")" "<" 0.25
goal "peak RSS cold, largest process (time %M) MB" "$(mb "$(maximum "$T/rss.cold")")" "<" 32
goal "peak RSS warm, largest process (time %M) MB" "$(mb "$(maximum "$T/rss.warm")")" "<" 32
goal "peak memory cold, d-pull+extractor PSS MB" "$(mb "$PSS_COLD")" "<" 32
goal "peak memory warm, d-pull+extractor PSS MB" "$(mb "$PSS_WARM")" "<" 32
row "  (same, summed RSS, shared pages twice) MB" "$(mb "$RSSSUM_COLD") / $(mb "$RSSSUM_WARM")" "" "cold / warm"
ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }
msdiff() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.2f", (a - b) / 1000 }'; }
row "d-run DIR true (busybox, root: filter), ms" "$(ms "$DRUN_T")" "" ""
row "bare bwrap, same argv, --seccomp 9, ms" "$(ms "$SECCOMP_T")" "" ""
row "bare bwrap, same argv without --seccomp, ms" "$(ms "$BWRAP_T")" "" ""
row "env bwrap ... (one extra exec, no filter), ms" "$(ms "$ENV_T")" "" ""
goal "d-run / (bwrap --seccomp 9)" "$(ratio "$DRUN_T" "$SECCOMP_T")" "<=" 1.10
row "the filter: (bwrap --seccomp) / bwrap" "$(ratio "$SECCOMP_T" "$BWRAP_T")" "" "info"
row "the filter ($FILTER_INSNS BPF instructions), ms" "$(msdiff "$SECCOMP_T" "$BWRAP_T")" "" "info"
row "d-run / (bwrap without --seccomp)" "$(ratio "$DRUN_T" "$BWRAP_T")" "" "info"
row "(env bwrap) / bwrap: the floor for a wrapper" "$(ratio "$ENV_T" "$BWRAP_T")" "" "info"
row "d-run / (env bwrap)" "$(ratio "$DRUN_T" "$ENV_T")" "" "info"
row "CPU (user+sys) ms: d-run, seccomp, bare, env" \
	"$(ms "${CPU[drun]}") / $(ms "${CPU[seccomp]}") / $(ms "${CPU[bwrap]}") / $(ms "${CPU[env]}")" "" "mean"
row "the filter's CPU time, ms" "$(msdiff "${CPU[seccomp]}" "${CPU[bwrap]}")" "" "info"
echo "# time %M is the largest peak of any one process of the tree (wait4 reports the max, not"
echo "# the sum); the PSS line samples the whole tree every 5 ms, so it may miss a short peak."
echo "# zlib | tar: a Python zlib pipe into tar -x (about 15 ms of Python start per layer)."
echo "# d-run: hyperfine -N, $N x 150 runs each, order rotated per run; the filter is d-run's own,"
echo "# replayed as bwrap ... --seccomp 9 ... 9<filter.bpf. Wall times are medians; CPU times the mean"
echo "# of hyperfine's means (it keeps no CPU time per run)."
echo "# load average at the end $(cut -d' ' -f1-3 /proc/loadavg); took ${SECONDS} s."
