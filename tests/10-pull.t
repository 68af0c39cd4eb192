#!/bin/bash
# SPDX-License-Identifier: MIT
# d-pull against real registries (issue 3): names, CLI, transport, auth and token renewal,
# manifests and platforms, verification, the layer cache, extraction, config.json,
# output, parallel and interrupted pulls; as root and unprivileged.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

plan 117

WHO=(as_root as_user)
# Unprivileged, d-pull unpacks in a user namespace. Where as_user cannot make one, the tests of
# as_user's own pulls are skipped, and U, the user of the tests that need someone's pull, is root.
U=as_user NO_USERNS=
if ! can_userns as_user; then
	U=as_root NO_USERNS="as_user cannot unpack in a user namespace here: $PROBE_ERROR"
fi
u=$(user_home "$U")
usable() { [ "$1" = as_root ] || [ -z "$NO_USERNS" ]; } # WHO: WHO's pulls can unpack here
ACCEPT='application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'

# run, err, expect_failure, temp_files, cache_list, blob_path, auth_json: lib.sh's

# dp WHO ARGS...: d-pull ARGS as WHO in WHO's home
dp() { run "$1" "$DPULL" "${@:2}"; }

# digest_of SCHEME://REGISTRY REPO TAG: the manifest digest the registry serves
digest_of() {
	curl -sfI -H "Accept: $ACCEPT" "$1/v2/$2/manifests/$3" | tr -d '\r' |
		sed -n 's/^docker-content-digest: //Ip'
}

# --- CLI and names: no registry is running yet -------------------------------------
run "$U" "$DPULL" -h
is "-h: usage on stdout, exit 0, nothing on stderr" "$? $(head -c 13 "$T/out")|$(err)" "0 usage: d-pull|"
run "$U" "$DPULL"
like "no argument: usage on stderr, exit 2" "$? $(err)" '^2 .*usage: d-pull'
run "$U" "$DPULL" a b c
like "three arguments: usage error, exit 2" "$? $(err)" '^2 .*usage: d-pull'
run "$U" "$DPULL" --bogus 127.0.0.1:1/busybox
like "unknown option: usage error, exit 2" "$? $(err)" '^2 .*usage: d-pull'

# With nothing listening anywhere, the error can only come from parsing. The proxy that does
# not resolve makes a wrong attempt at the network fail at once (no connection retries).
OFFLINE=(env -u no_proxy -u NO_PROXY https_proxy=http://proxy.invalid:1 http_proxy=http://proxy.invalid:1)
is "uppercase repository: error naming it, before any network access" \
	"$(expect_failure "$U" BusyBox 'BusyBox' "${OFFLINE[@]}" "$DPULL" 127.0.0.1:1/BusyBox)" ""
like "  ... and the error is a name error, not a connection error" "$(err)" '^d-pull: 127\.0\.0\.1:1/BusyBox: invalid'
is "bad tag: error naming the tag, before any network access" \
	"$(expect_failure "$U" busybox '^d-pull: [^ ]*:-bad: invalid' \
		"${OFFLINE[@]}" "$DPULL" 127.0.0.1:1/busybox:-bad)" ""
is "short digest: error naming the digest, before any network access" \
	"$(expect_failure "$U" busybox '^d-pull: [^ ]*@sha256:abc: invalid' \
		"${OFFLINE[@]}" "$DPULL" 127.0.0.1:1/busybox@sha256:abc)" ""
is "uppercase hex digest: invalid digest" \
	"$(expect_failure "$U" busybox '@sha256:A{64}: invalid' \
		"${OFFLINE[@]}" "$DPULL" "127.0.0.1:1/busybox@sha256:$(printf 'A%.0s' {1..64})")" ""
is "Foo/bar (no registry: that takes a dot, a port or localhost): invalid name, before any network access" \
	"$(expect_failure "$U" bar '^d-pull: Foo/bar: invalid' "${OFFLINE[@]}" "$DPULL" Foo/bar)" ""
run "$U" "${OFFLINE[@]}" "$DPULL" --platform linux 127.0.0.1:1/busybox pf
like "--platform without ARCH: error naming the platform, exit 1 or 2, before any network access, no DIR" \
	"$? $(err) $([ -e "$u/pf" ] && echo DIR)" '^[12] d-pull: [^ ]*platform linux.*OS/ARCH.*[^R]$'

# Docker Hub and other remote names, seen through the URL d-pull tries first (the /v2/ ping or
# the manifest): a proxy that does not resolve stops every request before it leaves the machine.
# NAME -> HOST REPO TAG
declare -A NAMES=(
	[alpine]="registry-1.docker.io library/alpine latest"
	[alpine:3.20]="registry-1.docker.io library/alpine 3.20"
	[library/alpine]="registry-1.docker.io library/alpine latest"
	[docker.io/library/alpine]="registry-1.docker.io library/alpine latest"
	[index.docker.io/x/y]="registry-1.docker.io x/y latest"
	[foo/bar]="registry-1.docker.io foo/bar latest"
	[ghcr.io/o/r:tag]="ghcr.io o/r tag"
	[reg.example:8443/a/b/c:tag]="reg.example:8443 a/b/c tag"
)
for name in alpine alpine:3.20 library/alpine docker.io/library/alpine index.docker.io/x/y foo/bar \
	ghcr.io/o/r:tag reg.example:8443/a/b/c:tag; do
	read -r host repo tag <<<"${NAMES[$name]}"
	re="^d-pull: https://${host//./\\.}/v2/(${repo//./\\.}/manifests/${tag//./\\.})?: "
	is "name $name is $host, repository $repo, tag $tag (DIR removed after the failure)" \
		"$(expect_failure "$U" "$(basename "${name%:*}")" "$re" \
			"${OFFLINE[@]}" "$DPULL" "$name")" ""
done

# --- registries and images --------------------------------------------------------------
ok "start the http, tls and token registries" \
	eval 'start_registry http && start_registry tls && start_registry token'
push_all() { # REGISTRY NAME[:REPO]...
	local reg=$1 f
	shift
	for f; do
		push_fixture "${f%%:*}" "$reg" "${f#*:}" || return 1
	done
}
ok "push the fixtures to the tls registry" push_all "$REG_TLS" busybox full hostile-config layers \
	multi dockerlist plain zstd docker
ok "push busybox to the http registry" push_all "$REG_HTTP" busybox
ok "push busybox, private/busybox and layers to the token registry" \
	push_all "$REG_TOKEN" busybox busybox:private/busybox layers
# derive MODE FIXTURE NAME: $T/NAME, a copy of the OCI layout FIXTURE changed by MODE, pushed
# to the tls registry as NAME. dupkeys: the config object gets "net": true and "rw": true,
# twice each (written by hand: json.dumps cannot repeat a key); novariant: the first
# entry of the index loses its platform variant.
derive() {
	"$PYTHON" - "$1" "$FIXTURES/$2" "$T/$3" <<'EOF' &&
import hashlib, json, os, shutil, sys
mode, src, dst = sys.argv[1:]
shutil.copytree(src, dst)
def path(desc):
    return os.path.join(dst, "blobs", "sha256", desc["digest"].split(":")[1])
def load(desc):
    with open(path(desc), "rb") as f:
        return json.load(f)
def store(desc, data):
    desc.update(digest="sha256:" + hashlib.sha256(data).hexdigest(), size=len(data))
    with open(path(desc), "wb") as f:
        f.write(data)
with open(os.path.join(dst, "index.json")) as f:
    layout = json.load(f)
top = layout["manifests"][0]
doc = load(top)
if mode == "novariant":
    del doc["manifests"][0]["platform"]["variant"]
else:
    config = load(doc["config"])
    inner = json.dumps(config.pop("config"))
    raw = (json.dumps(config)[:-1] + ', "config": {"net": true, "rw": true, "net": true, "rw": true, '
           + inner[1:] + "}")
    store(doc["config"], raw.encode())
store(top, json.dumps(doc).encode())
with open(os.path.join(dst, "index.json"), "w") as f:
    json.dump(layout, f)
EOF
		_skopeo_opts --dest- "$REG_TLS" &&
		skopeo copy -q --all --preserve-digests "${_OPTS[@]}" "oci:$T/$3:latest" \
			"docker://$REG_TLS/$3:latest" </dev/null
}
ok "push busybox with duplicate net and rw keys, and multi without arm64's variant" \
	eval 'derive dupkeys busybox dupkeys && derive novariant multi novariant'
TLS=https://$REG_TLS
BUSYBOX=$(digest_of "$TLS" busybox latest)
BUSYBOX_LAYER=$(inspect_raw "$REG_TLS" busybox | jq -r '.layers[].digest')
LAYERS_LAYERS=$(inspect_raw "$REG_TLS" layers | jq -r '.layers[].digest' | LC_ALL=C sort | tr '\n' ' ')
BUSYBOX_SUM=$(tar -xzOf "$(blob_path "$REG_STORAGE_TLS" "$BUSYBOX_LAYER")" bin/busybox | sha256sum)
like "the registry serves busybox's manifest digest and one layer" "$BUSYBOX $BUSYBOX_LAYER" \
	'^sha256:[0-9a-f]{64} sha256:[0-9a-f]{64}$'

# --- a plain pull, as root and as a user ---------------------------------------------------
for who in "${WHO[@]}"; do
	if ! usable "$who"; then
		skip_n 7 "$who: pull busybox into the default DIR" "$NO_USERNS"
		continue
	fi
	home=$(user_home "$who")
	dp "$who" "$REG_TLS/busybox"
	is "$who: pull $REG_TLS/busybox into the default DIR busybox, exit 0" \
		"$? $(cache_list "$home/busybox")" "0 config.json image.txt rootfs "
	is "$who: image.txt = REGISTRY/REPO:TAG@DIGEST and the platform" "$(cat "$home/busybox/image.txt")" \
		"$REG_TLS/busybox:latest@$BUSYBOX"$'\n'"linux/amd64"
	is "$who: rootfs has busybox, its absolute applet links and os-release" \
		"$(cd "$home/busybox/rootfs" && sha256sum <bin/busybox) $(readlink "$home/busybox/rootfs/bin/sh") $(grep ^ID= "$home/busybox/rootfs/etc/os-release")" \
		"$BUSYBOX_SUM /bin/busybox ID=d-utils-test"
	is "$who: config.json is the image config's config object" \
		"$(jq -S . "$home/busybox/config.json")" "$(inspect_raw "$REG_TLS" busybox --config | jq -S .config)"
	like "$who: config.json is pretty-printed" "$(cat "$home/busybox/config.json")" $'^\\{\n[ \t]+"'
	is "$who: the cache holds the layer (only), under its digest, no temporary file" \
		"$(cache_list "$home/.cache/d-utils") $(temp_files "$home/.cache")" "$BUSYBOX_LAYER  "
	like "$who: log lines on stderr (pulling, pulled into), nothing on stdout" "$(err)|$(cat "$T/out")" \
		'^d-pull: pulling .*busybox.*d-pull: pulled into busybox\|$'
done
r=$(user_home as_root)/busybox/rootfs
is "as_root: owners and modes restored (home/user 1000:1000, proc 555, root 700, tmp 1777)" \
	"$(stat -c '%n %u:%g %a' "$r/home/user" "$r/proc" "$r/root" "$r/tmp" | sed "s|$r/||")" \
	"home/user 1000:1000 755
proc 0:0 555
root 0:0 700
tmp 0:0 1777"
if usable as_user; then
	h=$(user_home as_user)
	is "as_user: every file belongs to the user, no owner restored" \
		"$(find "$h/busybox" ! -user 65534 -o ! -group 65534 | head -3)" ""
	ok "as_user: rm -rf DIR works (the image has 0555 /proc and /sys)" \
		eval "as_user rm -rf '$h/busybox' && test ! -e '$h/busybox'"
else
	skip "as_user: every file belongs to the user, no owner restored" "$NO_USERNS"
	skip "as_user: rm -rf DIR works (the image has 0555 /proc and /sys)" "$NO_USERNS"
fi
rm -rf "$(user_home as_root)/busybox"

dp "$U" -q "$REG_TLS/busybox" quiet
is "-q: exit 0 and nothing on stderr" "$? $(err)" "0 "

# --- existing DIR, errors ----------------------------------------------------------------
mkdir "$u/exists" && echo keep >"$u/exists/marker" && chown -R --reference="$u" "$u/exists"
dp "$U" "$REG_TLS/busybox" exists
is "an existing DIR is refused and left untouched" "$? $(err) $(ls "$u/exists")" \
	"1 d-pull: exists: already exists marker"
is "unknown repository: one line with HTTP 404 and not found, exit 1, no DIR, no temp file" \
	"$(expect_failure "$U" nosuch 'HTTP 404.*not found' "$DPULL" "$REG_TLS/nosuch")" ""
is "unknown tag: one line with HTTP 404 and not found, exit 1, no DIR, no temp file" \
	"$(expect_failure "$U" busybox 'HTTP 404.*not found' "$DPULL" "$REG_TLS/busybox:nosuchtag")" ""
is "as_root: unknown tag: same error" \
	"$(expect_failure as_root busybox 'HTTP 404.*not found' "$DPULL" "$REG_TLS/busybox:nosuchtag")" ""
MULTI=$(digest_of "$TLS" multi latest)
is "a digest that is not in the repository fails, no DIR" \
	"$(expect_failure "$U" busybox 'HTTP 404|digest mismatch' "$DPULL" -q "$REG_TLS/busybox@$MULTI")" ""

# --- name forms on loopback ---------------------------------------------------------------
line1() { head -1 "$u/$1/image.txt" 2>/dev/null; }
dp "$U" -q "$REG_TLS/busybox:latest" n-tag
is "name:tag: image.txt line 1 has the tag and the digest" "$? $(line1 n-tag)" "0 $REG_TLS/busybox:latest@$BUSYBOX"
dp "$U" -q "$REG_TLS/busybox@$BUSYBOX" n-digest
is "name@digest: image.txt line 1 has the digest" "$? $(line1 n-digest)" "0 $REG_TLS/busybox@$BUSYBOX"
dp "$U" -q "$REG_TLS/busybox:nosuchtag@$BUSYBOX" n-both
like "name:tag@digest: the digest wins over an unknown tag" "$? $(line1 n-both)" \
	"^0 $REG_TLS/busybox(:nosuchtag)?@$BUSYBOX\$"
port=${REG_TLS#*:}
dp "$U" -q "localhost:$port/busybox" n-localhost
is "localhost:PORT/name is a registry" "$? $(line1 n-localhost)" "0 localhost:$port/busybox:latest@$BUSYBOX"

# --- manifests and platforms ------------------------------------------------------------
platform() { echo "$(cat "$u/$1/rootfs/etc/platform" 2>/dev/null)|$(sed -n 2p "$u/$1/image.txt" 2>/dev/null)"; }
for who in "${WHO[@]}"; do
	if ! usable "$who"; then
		skip "$who: OCI index (arm64 listed first): default platform linux/amd64" "$NO_USERNS"
		continue
	fi
	dp "$who" -q "$REG_TLS/multi" multi
	is "$who: OCI index (arm64 listed first): default platform linux/amd64" \
		"$? $(cat "$(user_home "$who")/multi/rootfs/etc/platform")" "0 linux/amd64"
done
is "OCI index: image.txt line 1 has the index digest, line 2 linux/amd64" \
	"$(cat "$u/multi/image.txt")" "$REG_TLS/multi:latest@$MULTI"$'\n'"linux/amd64"
dp "$U" -q "$(line1 multi)" multi-again
is "image.txt line 1 fed back to d-pull pulls the same image" \
	"$? $(line1 multi-again) $(platform multi-again)" "0 $(line1 multi) linux/amd64|linux/amd64"
dp "$U" -q "$REG_TLS/dockerlist" dockerlist
is "Docker manifest list: default platform linux/amd64" "$? $(platform dockerlist)" "0 linux/amd64|linux/amd64"
dp "$U" -q --platform linux/arm64 "$REG_TLS/multi" multi-arm64
is "--platform linux/arm64 selects arm64/v8 (image.txt says linux/arm64/v8)" \
	"$? $(platform multi-arm64)" "0 linux/arm64/v8|linux/arm64/v8"
dp "$U" -q --platform linux/arm64/v8 "$REG_TLS/multi" multi-arm64v8
is "--platform linux/arm64/v8 on an OCI index" "$? $(platform multi-arm64v8)" \
	"0 linux/arm64/v8|linux/arm64/v8"
# d-pull reads no default variant into an entry: --platform linux/arm64 takes any variant
dp "$U" -q --platform linux/arm64 "$REG_TLS/novariant" novariant
is "--platform linux/arm64 takes an index entry linux/arm64 without variant (image.txt: the config says v8)" \
	"$? $(platform novariant)" "0 linux/arm64/v8|linux/arm64/v8"
dp "$U" -q --platform linux/arm64/v8 "$REG_TLS/dockerlist" dockerlist-arm64
is "--platform linux/arm64/v8 on a Docker list" "$? $(platform dockerlist-arm64)" \
	"0 linux/arm64/v8|linux/arm64/v8"
run "$U" env GOARCH=arm64 "$DPULL" -q "$REG_TLS/multi" multi-goarch
is "GOARCH=arm64 selects arm64 without --platform" "$? $(platform multi-goarch)" \
	"0 linux/arm64/v8|linux/arm64/v8"
run "$U" env GOARCH=arm64 "$DPULL" -q --platform linux/amd64 "$REG_TLS/multi" multi-over
is "--platform wins over GOARCH" "$? $(platform multi-over)" "0 linux/amd64|linux/amd64"
is "--platform linux/s390x: one line naming the platform asked for, no DIR" \
	"$(expect_failure "$U" multi-s390x 'no image for linux/s390x' \
		"$DPULL" -q --platform linux/s390x "$REG_TLS/multi" multi-s390x)" ""
is "  ... and names no attestation entry (unknown/unknown)" "$(grep -c unknown "$T/err")" 0
is "--platform linux/arm64/v7: the variant must match too" \
	"$(expect_failure "$U" multi-v7 'linux/arm64/v7' \
		"$DPULL" -q --platform linux/arm64/v7 "$REG_TLS/multi" multi-v7)" ""

DOCKER=$(digest_of "$TLS" docker latest)
dp "$U" -q "$REG_TLS/docker" docker
is "Docker schema 2 manifest with a Docker gzip layer" \
	"$? $(line1 docker) $(sha256sum <"$u/docker/rootfs/bin/busybox")" \
	"0 $REG_TLS/docker:latest@$DOCKER $BUSYBOX_SUM"
for f in zstd plain; do
	dp "$U" -q "$REG_TLS/$f" "$f"
	is "$f layer: the same busybox as the gzip image" \
		"$? $(sha256sum <"$u/$f/rootfs/bin/busybox" 2>/dev/null) $(readlink "$u/$f/rootfs/bin/sh")" \
		"0 $BUSYBOX_SUM /bin/busybox"
done
if have_fixture i386; then
	push_fixture i386 "$REG_TLS" || diag "push i386 failed"
	dp "$U" -q "$REG_TLS/i386" i386
	is "a single-platform image of another architecture: image.txt says linux/386" \
		"$? $(sed -n 2p "$u/i386/image.txt")" "0 linux/386"
else
	skip "a single-platform image of another architecture: image.txt says linux/386" "no i386 fixture"
fi

# --- extraction: whiteouts, opaque directories, a file replacing a tree --------------
for who in "${WHO[@]}"; do
	if ! usable "$who"; then
		skip_n 3 "$who: layers (5 layers with whiteouts)" "$NO_USERNS"
		continue
	fi
	home=$(user_home "$who")
	run "$who" env XDG_CACHE_HOME="$home/layers-cache" "$DPULL" -q "$REG_TLS/layers" layers
	is "$who: layers (5 layers with whiteouts): exactly the expected tree" \
		"$? $(layers_tree "$home/layers/rootfs")" "0 $LAYERS_TREE"
	is "$who: layers: no .wh. file anywhere in the rootfs" "$(find "$home/layers/rootfs" -name '.wh.*')" ""
	is "$who: layers: the cache holds the 5 layers, nothing else" \
		"$(cache_list "$home/layers-cache/d-utils")" "$LAYERS_LAYERS"
done

# --- config.json -------------------------------------------------------------------------
dp "$U" "$REG_TLS/hostile-config" hostile
is "hostile-config: net, rw and the host volume dropped, /ok kept" \
	"$? $(jq -c '[has("net"), has("rw"), (.Volumes | keys)]' "$u/hostile/config.json")" '0 [false,false,["/ok"]]'
like "hostile-config: a warning names the host volume dropped (net and rw go silently)" "$(err)" '/etc/shadow-host:/x'
for who in "${WHO[@]}"; do
	if ! usable "$who"; then
		skip "$who: \"net\" and \"rw\" each twice in the config object" "$NO_USERNS"
		continue
	fi
	dp "$who" "$REG_TLS/dupkeys" dupkeys
	is "$who: \"net\" and \"rw\" each twice in the config object: config.json has none of them" \
		"$? $(grep -cE '"(net|rw)"' "$(user_home "$who")/dupkeys/config.json")" "0 0"
done
dp "$U" -q "$REG_TLS/full" full
is "full: User, Entrypoint, Cmd, WorkingDir, Volumes, Hostname kept" \
	"$? $(jq -c '[.User, .Entrypoint, .Cmd, .WorkingDir, .Volumes, .Hostname]' "$u/full/config.json")" \
	'0 ["user",["/bin/echo","entry"],["cmd"],"/home/user/work",{"/data":{}},"fixturehost"]'

# --- transport -----------------------------------------------------------------------------
is "a plain-HTTP loopback registry: HTTPS only, one line naming the registry's URL and SSL, no DIR" \
	"$(expect_failure "$U" http "https://$REG_HTTP/v2/busybox/.*SSL" "$DPULL" -q "$REG_HTTP/busybox" http)" ""
run "$U" env -u CURL_CA_BUNDLE "$DPULL" -q "$REG_TLS/busybox" ca-ssl
is "SSL_CERT_FILE alone names the CA" "$? $(line1 ca-ssl)" "0 $REG_TLS/busybox:latest@$BUSYBOX"
run "$U" env -u SSL_CERT_FILE "$DPULL" -q "$REG_TLS/busybox" ca-curl
is "CURL_CA_BUNDLE alone names the CA" "$? $(line1 ca-curl)" "0 $REG_TLS/busybox:latest@$BUSYBOX"
is "without the test CA the TLS registry fails with a certificate error, nothing created" \
	"$(expect_failure "$U" ca-none '[Cc]ertificate|SSL|TLS' \
		env -u SSL_CERT_FILE -u CURL_CA_BUNDLE "$DPULL" -q "$REG_TLS/busybox" ca-none)" ""

# --- auth: token registry ---------------------------------------------------------------------
TOKEN_HOST=${REG_TOKEN//./\\.}
dp "$U" -q "$REG_TOKEN/busybox" tok-public
is "Bearer challenge: an anonymous token pulls a public repository" \
	"$? $(tail -1 "$TOKEN_LOG")" "0 anonymous repository:busybox:pull"
for who in "${WHO[@]}"; do
	is "$who: private repository without credentials: one line, HTTP 401/403, access denied, the registry" \
		"$(expect_failure "$who" busybox "HTTP 40[13].*$TOKEN_HOST.*access denied|access denied.*HTTP 40[13].*$TOKEN_HOST" \
			"$DPULL" -q "$REG_TOKEN/private/busybox")" ""
done
for who in "${WHO[@]}"; do
	if ! usable "$who"; then
		skip "$who: credentials from ~/.docker/config.json pull a private repository" "$NO_USERNS"
		continue
	fi
	home=$(user_home "$who")
	auth_json "$home/.docker/config.json" "$REG_TOKEN" alice:secret
	[ "$who" = as_user ] && chown -R 65534:65534 "$home/.docker"
	dp "$who" -q "$REG_TOKEN/private/busybox" priv-home
	is "$who: credentials from ~/.docker/config.json pull a private repository" \
		"$? $(tail -1 "$TOKEN_LOG") $(sed -n 2p "$home/priv-home/image.txt")" \
		"0 alice repository:private/busybox:pull linux/amd64"
	rm -rf "$home/.docker"
done
auth_json "$T/auth/docker/config.json" "$REG_TOKEN" alice:secret
run "$U" env DOCKER_CONFIG="$T/auth/docker" "$DPULL" -q "$REG_TOKEN/private/busybox" priv-docker
is "credentials from \$DOCKER_CONFIG/config.json" "$? $(tail -1 "$TOKEN_LOG")" \
	"0 alice repository:private/busybox:pull"
auth_json "$T/auth/podman.json" "$REG_TOKEN" alice:secret
run "$U" env REGISTRY_AUTH_FILE="$T/auth/podman.json" "$DPULL" -q "$REG_TOKEN/private/busybox" priv-raf
is "podman's \$REGISTRY_AUTH_FILE is not read: an anonymous token, refused" "$? $(tail -1 "$TOKEN_LOG")" \
	"1 anonymous repository:private/busybox:pull"
auth_json "$T/auth/run/containers/auth.json" "$REG_TOKEN" alice:secret
# nor is podman's default file: an anonymous token, refused
run "$U" env XDG_RUNTIME_DIR="$T/auth/run" "$DPULL" -q "$REG_TOKEN/private/busybox" priv-xdg
is "\$XDG_RUNTIME_DIR/containers/auth.json is not read" "$? $(tail -1 "$TOKEN_LOG")" \
	"1 anonymous repository:private/busybox:pull"
auth_json "$T/auth/url/config.json" "$REG_TOKEN" alice:secret "https://$REG_TOKEN/v2/"
run "$U" env DOCKER_CONFIG="$T/auth/url" "$DPULL" -q "$REG_TOKEN/private/busybox" priv-url
is "credentials saved under https://HOST/v2/ are found" "$? $(tail -1 "$TOKEN_LOG")" \
	"0 alice repository:private/busybox:pull"
auth_json "$T/auth/wrong/config.json" "$REG_TOKEN" alice:wrong
is "a wrong password: one line naming HTTP 401, exit 1, no DIR" \
	"$(expect_failure "$U" busybox 'HTTP 401' env DOCKER_CONFIG="$T/auth/wrong" \
		"$DPULL" -q "$REG_TOKEN/private/busybox")" ""
auth_json "$T/auth/other/config.json" "127.0.0.1:1" alice:secret
run "$U" env DOCKER_CONFIG="$T/auth/other" "$DPULL" -q "$REG_TOKEN/busybox" tok-other
is "credentials of another registry are not sent (anonymous token)" "$? $(tail -1 "$TOKEN_LOG")" \
	"0 anonymous repository:busybox:pull"

# --- auth: a registry with a Basic challenge (htpasswd) --------------------------------------
start_basic_registry() {
	local d=$T/registry-basic
	mkdir -p "$d/storage"
	# bcrypt of "secret" (made with Python's crypt module, which Python 3.13 no longer has)
	# shellcheck disable=SC2016 # not an expansion
	echo 'alice:$2b$04$vxZBSk38pT/8nY5KR31zmu.HtkH/QKtII2lQGL/zyhiYc9R.TjDQO' >"$d/htpasswd"
	_registry_config http "$d" 0 >"$d/config.yml"
	cat >>"$d/config.yml" <<EOF
  tls:
    certificate: $T/ca/server.pem
    key: $T/ca/server.key
auth:
  htpasswd:
    realm: d-utils-basic
    path: $d/htpasswd
EOF
	_serve_registry "$d" https || return 1
	REG_BASIC=127.0.0.1:$_PORT
	skopeo copy -q --preserve-digests --dest-cert-dir "$T/ca/certdir" --dest-creds alice:secret \
		"$(fixture_ref busybox)" "docker://$REG_BASIC/busybox:latest" </dev/null
}
REG_BASIC=127.0.0.1:1
ok "start a registry with Basic auth and push busybox" start_basic_registry
is "Basic challenge without credentials: one line, HTTP 401, access denied, no DIR" \
	"$(expect_failure "$U" busybox "HTTP 401.*access denied|access denied.*HTTP 401" \
		"$DPULL" -q "$REG_BASIC/busybox")" ""
auth_json "$T/auth/basic/config.json" "$REG_BASIC" alice:secret
run "$U" env DOCKER_CONFIG="$T/auth/basic" "$DPULL" -q "$REG_BASIC/busybox" basic
is "Basic challenge: the saved credentials pull" "$? $(line1 basic)" "0 $REG_BASIC/busybox:latest@$BUSYBOX"

# --- cache: reuse, XDG_CACHE_HOME, pruning (the tls registry's storage is changed, then restored) ---------
c=$u/xdg
LAYER_FILE=$(blob_path "$REG_STORAGE_TLS" "$BUSYBOX_LAYER")
run "$U" env XDG_CACHE_HOME="$c" "$DPULL" -q "$REG_TLS/busybox" cache1
is "XDG_CACHE_HOME: the layer is cached in \$XDG_CACHE_HOME/d-utils" "$? $(cache_list "$c/d-utils")" \
	"0 $BUSYBOX_LAYER "
mv "$LAYER_FILE" "$T/layer.saved"
run "$U" env XDG_CACHE_HOME="$c" "$DPULL" -q "$REG_TLS/busybox" cache2
is "a cached layer is not downloaded again (the registry has lost it)" \
	"$? $(sha256sum <"$u/cache2/rootfs/bin/busybox" 2>/dev/null)" "0 $BUSYBOX_SUM"
is "  ... while a pull with an empty cache fails: HTTP 404, no DIR, no temp file" \
	"$(expect_failure "$U" cache3 'HTTP 404' env XDG_CACHE_HOME="$u/xdg-empty" \
		"$DPULL" -q "$REG_TLS/busybox" cache3)" ""
mv "$T/layer.saved" "$LAYER_FILE"

fake=$c/d-utils/sha256:$(printf '0%.0s' {1..64})
young=$c/d-utils/sha256:$(printf '1%.0s' {1..64})
touch -d '40 days ago' "$fake" "$c/d-utils/$BUSYBOX_LAYER"
touch -d '20 days ago' "$young"
chown --reference="$u" "$fake" "$young"
run "$U" env XDG_CACHE_HOME="$c" "$DPULL" -q "$REG_TLS/busybox" cache4
is "prune: a file unused for 40 days is deleted, one of 20 days is kept" \
	"$? $([ -e "$fake" ] && echo fake) $([ -e "$young" ] && echo young)" "0  young"
is "prune: a used layer is touched, not pruned" \
	"$(find "$c/d-utils/$BUSYBOX_LAYER" -mmin -60 2>/dev/null | wc -l)" 1

# --- verification: corrupted blobs in the registry's storage -----------------------------------
CONFIG=$(inspect_raw "$REG_TLS" busybox | jq -r .config.digest)
CONFIG_FILE=$(blob_path "$REG_STORAGE_TLS" "$CONFIG")
cp "$CONFIG_FILE" "$T/config.saved"
printf X | dd of="$CONFIG_FILE" bs=1 seek=10 conv=notrunc 2>/dev/null
is "a corrupted config blob: digest mismatch, exit 1, no DIR" \
	"$(expect_failure "$U" corrupt-config "$CONFIG: digest mismatch" \
		env XDG_CACHE_HOME="$c" "$DPULL" -q "$REG_TLS/busybox" corrupt-config)" ""
cp "$T/config.saved" "$CONFIG_FILE"

cp "$LAYER_FILE" "$T/layer.saved"
printf XXXXXXXX | dd of="$LAYER_FILE" bs=1 seek=100000 conv=notrunc 2>/dev/null
for who in "${WHO[@]}"; do
	if ! usable "$who"; then
		skip_n 2 "$who: a corrupted layer" "$NO_USERNS"
		continue
	fi
	home=$(user_home "$who")
	is "$who: a corrupted layer: digest mismatch naming it (not the unpacker's complaint), exit 1, no DIR, no temp file" \
		"$(expect_failure "$who" corrupt "^d-pull: $BUSYBOX_LAYER: digest mismatch" \
			env XDG_CACHE_HOME="$home/corrupt-cache" "$DPULL" -q "$REG_TLS/busybox" corrupt)" ""
	is "$who:   ... and the cache has no file of that digest" "$(cache_list "$home/corrupt-cache/d-utils")" ""
done
head -c 500000 "$T/layer.saved" >"$LAYER_FILE"
is "a truncated layer: digest mismatch, no DIR, nothing cached" \
	"$(expect_failure "$U" truncated "^d-pull: $BUSYBOX_LAYER: digest mismatch" \
		env XDG_CACHE_HOME="$u/truncated-cache" "$DPULL" -q "$REG_TLS/busybox" truncated) $(cache_list "$u/truncated-cache/d-utils")" " "
cp "$T/layer.saved" "$LAYER_FILE"
# A layer unpacks as it downloads, before its digest can be checked: corrupted gzip above makes
# the unpacker fail, whose line must not show; an uncompressed layer with bytes changed inside a
# file is still a tar, unpacks whole, and only the digest check fails it; DIR, where those bytes
# went, goes with the pull.
PLAIN_LAYER=$(inspect_raw "$REG_TLS" plain | jq -r '.layers[].digest')
PLAIN_FILE=$(blob_path "$REG_STORAGE_TLS" "$PLAIN_LAYER")
cp "$PLAIN_FILE" "$T/plain.saved"
printf XXXXXXXX | dd of="$PLAIN_FILE" bs=1 seek=100000 conv=notrunc 2>/dev/null
is "an uncompressed layer with changed file bytes: unpacked as it came, then digest mismatch, no DIR, nothing cached" \
	"$(expect_failure "$U" plainbad "^d-pull: $PLAIN_LAYER: digest mismatch" \
		env XDG_CACHE_HOME="$u/plainbad-cache" "$DPULL" -q "$REG_TLS/plain" plainbad) $(cache_list "$u/plainbad-cache/d-utils")" " "
cp "$T/plain.saved" "$PLAIN_FILE"

# --- two pulls at once, killed pulls ---------------------------------------------------------
parallel_round() { # N: two pulls of layers at once into one fresh cache
	local c=$u/par-cache-$1 a b
	"$U" env XDG_CACHE_HOME="$c" "$DPULL" -q "$REG_TLS/layers" "par$1a" 2>"$T/par$1a.err" &
	a=$!
	"$U" env XDG_CACHE_HOME="$c" "$DPULL" -q "$REG_TLS/layers" "par$1b" 2>"$T/par$1b.err" &
	b=$!
	wait "$a" || echo "round $1: first pull failed: $(cat "$T/par$1a.err")"
	wait "$b" || echo "round $1: second pull failed: $(cat "$T/par$1b.err")"
	[ "$(layers_tree "$u/par$1a/rootfs")" = "$LAYERS_TREE" ] || echo "round $1: first tree wrong"
	[ "$(layers_tree "$u/par$1b/rootfs")" = "$LAYERS_TREE" ] || echo "round $1: second tree wrong"
	[ "$(cache_list "$c/d-utils")" = "$LAYERS_LAYERS" ] || echo "round $1: cache: $(cache_list "$c/d-utils")"
}
out=$(cd "$u" && for i in 1 2 3 4; do parallel_round "$i"; done)
is "two pulls of one image at once, one cache: both complete, each blob cached once, no temp file" "$out" ""

# SIGKILL at different moments of a cold pull; the next pull uses the killed one's cache. What
# is asserted holds wherever the kill lands (before the start, in the middle, after the end);
# the delays only spread the moments.
out="" killed=0
for delay in 0.01 0.02 0.03 0.05 0.07 0.1 0.15; do
	kc=$u/kill-cache-$delay
	(cd "$u" && exec_as "$U" env XDG_CACHE_HOME="$kc" \
		"$DPULL" -q "$REG_TLS/layers" "killed-$delay") 2>/dev/null &
	pid=$!
	sleep "$delay"
	kill -KILL "$pid" 2>/dev/null && killed=$((killed + 1))
	wait "$pid" 2>/dev/null
	left=$(cache_list "$kc/d-utils" | wc -w)
	run "$U" env XDG_CACHE_HOME="$kc" "$DPULL" -q "$REG_TLS/layers" "after-kill-$delay" ||
		out+="killed after ${delay}s with $left cache files: the next pull failed: $(err)"$'\n'
	[ "$(layers_tree "$u/after-kill-$delay/rootfs" 2>/dev/null)" = "$LAYERS_TREE" ] ||
		out+="killed after ${delay}s: the next pull's tree is wrong"$'\n'
	for f in $(cache_list "$kc/d-utils"); do
		case $f in *.*) continue ;; esac
		[ "sha256:$(sha256sum <"$kc/d-utils/$f" | cut -c1-64)" = "$f" ] ||
			out+="killed after ${delay}s: cache file $f does not hold its digest"$'\n'
	done
	diag "killed after ${delay}s: $left layers were in the cache"
done
is "after pulls killed with SIGKILL ($killed of 7) the next pull with the same cache succeeds, cache files hold their digest" \
	"$out" ""

# --- a token that expires in the middle of a pull ------------------------------------------
# docker-registry accepts a token until 60 s after its exp: TOKEN_TTL=-59 makes tokens that die
# at the next full second. So that every pull outlives its first token, however fast the
# machine, the pulls go through hold_proxy: it holds each blob request made with the token of
# the last manifest request until that token is dead, then forwards it (and the registry says
# 401); it forwards everything else at once. A pull must get a new token, and may need more:
# each one dies at the next full second.
stop_servers
export TOKEN_TTL=-59
ok "restart the token registry with tokens that live less than a second" start_registry token
tok=$(curl -sf "$TOKEN_REALM?service=$TOKEN_SERVICE&scope=repository:layers:pull" | jq -r .token)
sleep 1.1 # enough by construction: the token died at the full second after it was made
is "  ... (control: such a token is refused a second later)" \
	"$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tok" -H "Accept: $ACCEPT" \
		"https://$REG_TOKEN/v2/layers/manifests/latest")" 401

# start_hold_proxy: a TLS proxy to REG_TOKEN as described above; sets HOLD_PROXY = 127.0.0.1:PORT
start_hold_proxy() {
	local pid port
	cat >"$T/hold-proxy.py" <<'PY'
import base64, http.client, json, ssl, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM, CERT, KEY, CA = sys.argv[1:]
LEEWAY = 60  # docker-registry accepts a token until exp + LEEWAY
last = {"manifest_token": None}


def death(token):
    """When the registry stops accepting TOKEN (a JWT)."""
    claims = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["exp"] + LEEWAY


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        if "/manifests/" in self.path:
            last["manifest_token"] = token
        elif "/blobs/" in self.path and token and token == last["manifest_token"]:
            while time.time() < death(token) + 0.1:  # the registry refuses after death
                time.sleep(0.02)
        conn = http.client.HTTPSConnection(UPSTREAM, context=ssl.create_default_context(cafile=CA))
        conn.request(self.command, self.path, headers={
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")})
        resp = conn.getresponse()
        body = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", resp.getheader("Content-Length", "0")
                         if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        conn.close()

    do_HEAD = do_GET


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def finish_request(self, request, client_address):
        with self.ctx.wrap_socket(request, server_side=True) as conn:
            Handler(conn, client_address, self)

    def handle_error(self, request, client_address):
        pass


server = Server(("127.0.0.1", 0), Handler)
server.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server.ctx.load_cert_chain(CERT, KEY)
server.serve_forever()
PY
	"$PYTHON" "$T/hold-proxy.py" "$REG_TOKEN" "$T/ca/server.pem" "$T/ca/server.key" "$T/ca/ca.pem" \
		</dev/null >"$T/hold-proxy.log" 2>&1 &
	pid=$!
	SERVER_PIDS+=("$pid")
	port=$(_listen_port "$pid") || {
		diag "hold proxy did not start:" "$(cat "$T/hold-proxy.log")"
		return 1
	}
	HOLD_PROXY=127.0.0.1:$port
}
HOLD_PROXY=127.0.0.1:1
start_hold_proxy
failed="" renewed=0
for i in 1 2; do
	before=$(wc -l <"$TOKEN_LOG")
	run "$U" env XDG_CACHE_HOME="$u/ttl-cache-$i" "$DPULL" -q "$HOLD_PROXY/layers" "ttl-$i" ||
		failed+="pull $i: $(err) "
	[ "$(layers_tree "$u/ttl-$i/rootfs" 2>/dev/null)" = "$LAYERS_TREE" ] ||
		failed+="pull $i: wrong tree "
	[ $(($(wc -l <"$TOKEN_LOG") - before)) -gt 1 ] && renewed=$((renewed + 1))
done
is "pulls that outlive their token succeed" "$failed" ""
ok "  ... and got a new token on the way ($renewed pulls did)" test "$renewed" -gt 0
