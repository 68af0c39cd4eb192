#!/bin/bash
# SPDX-License-Identifier: MIT
# The test bed itself: CA, the three kinds of registry, the token server's rules,
# every fixture as the registry serves it, and no server left behind.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

FIXTURE_NAMES=(busybox full hostile-config layers multi dockerlist plain zstd docker i386)
plan $((40 + 2 * ${#FIXTURE_NAMES[@]}))

# --- CA ------------------------------------------------------------------------
ok "make_ca makes a CA and exports SSL_CERT_FILE" make_ca
is "SSL_CERT_FILE and CURL_CA_BUNDLE name the test CA" "${SSL_CERT_FILE:-} ${CURL_CA_BUNDLE:-}" \
	"$T/ca/ca.pem $T/ca/ca.pem"
ok "server cert is signed by the CA" openssl verify -CAfile "$T/ca/ca.pem" "$T/ca/server.pem"
like "server cert names 127.0.0.1 and localhost" \
	"$(openssl x509 -in "$T/ca/server.pem" -noout -ext subjectAltName)" \
	"IP Address:127\.0\.0\.1, DNS:localhost"

# --- users -----------------------------------------------------------------------
# shellcheck disable=SC2016 # expanded by the inner shell
is "as_user runs as 65534 with its own HOME" "$(as_user sh -c 'echo "$(id -u):$(id -g):$(id -G) $HOME"')" \
	"65534:65534:65534 $T/home-65534"
# shellcheck disable=SC2016
is "as_root runs as root with its own HOME" "$(as_root sh -c 'echo "$(id -u) $HOME"')" "0 $T/home-0"
ok "as_user can write in user_home as_user" as_user touch "$(user_home as_user)/x"

# --- registries --------------------------------------------------------------------
http_code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

ok "http registry starts" start_registry http
is "http registry: GET /v2/ is 200 over plain HTTP" "$(http_code "http://$REG_HTTP/v2/")" 200
ok "tls registry starts" start_registry tls
is "tls registry: GET /v2/ is 200 over HTTPS with the test CA" \
	"$(as_user curl -s -o /dev/null -w '%{http_code}' "https://$REG_TLS/v2/")" 200
ok "token registry starts" start_registry token
like "token registry: TOKEN_REALM is https on loopback" "${TOKEN_REALM:-}" '^https://127\.0\.0\.1:[0-9]+/token$'
headers=$(curl -s -D - -o /dev/null "https://$REG_TOKEN/v2/")
like "token registry: GET /v2/ is 401" "$headers" '^HTTP/[0-9.]+ 401'
like "token registry: Bearer challenge names realm and service" "$headers" \
	"[Ww]ww-[Aa]uthenticate: Bearer realm=\"$TOKEN_REALM\",service=\"$TOKEN_SERVICE\""

# --- fixtures --------------------------------------------------------------------------
build_fixtures busybox full hostile-config layers multi dockerlist plain zstd docker
have_fixture i386
declare -A RAW
for name in "${FIXTURE_NAMES[@]}"; do
	if [ "$name" = i386 ] && ! have_fixture i386; then
		skip "push fixture $name" "busybox-static:i386 not available from the Debian mirror"
		skip "inspect fixture $name" "not built"
		continue
	fi
	ok "push fixture $name to the tls registry" push_fixture "$name" "$REG_TLS"
	RAW[$name]=$(inspect_raw "$REG_TLS" "$name")
	ok "skopeo inspect --raw $name" test -n "${RAW[$name]}"
done

q() { jq -r "$2" <<<"${RAW[$1]}" | tr '\n' ' '; }
is "busybox: OCI config, one gzip layer" "$(q busybox '.config.mediaType, .layers[].mediaType')" \
	"application/vnd.oci.image.config.v1+json application/vnd.oci.image.layer.v1.tar+gzip "
is "multi: OCI index, arm64/v8 first, then amd64, then unknown" \
	"$(q multi '.mediaType, (.manifests[].platform | [.os, .architecture, .variant // empty] | join("/"))')" \
	"application/vnd.oci.image.index.v1+json linux/arm64/v8 linux/amd64 unknown/unknown "
is "dockerlist: Docker list of Docker manifests" \
	"$(q dockerlist '.mediaType, (.manifests[] | .mediaType + " " + .platform.architecture)')" \
	"application/vnd.docker.distribution.manifest.list.v2+json application/vnd.docker.distribution.manifest.v2+json arm64 application/vnd.docker.distribution.manifest.v2+json amd64 "
is "docker: Docker schema 2 with Docker gzip layer" "$(q docker '.mediaType, .layers[].mediaType')" \
	"application/vnd.docker.distribution.manifest.v2+json application/vnd.docker.image.rootfs.diff.tar.gzip "
is "zstd: zstd layer" "$(q zstd '.layers[].mediaType')" "application/vnd.oci.image.layer.v1.tar+zstd "
is "plain: uncompressed layer" "$(q plain '.layers[].mediaType')" "application/vnd.oci.image.layer.v1.tar "
is "full: config as documented" \
	"$(inspect_raw "$REG_TLS" full --config | jq -c '.config | [.User, .Entrypoint, .Cmd, .WorkingDir, .Volumes, .Hostname, .Env]')" \
	'["user",["/bin/echo","entry"],["cmd"],"/home/user/work",{"/data":{}},"fixturehost",["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","FOO=bar"]]'
is "hostile-config: config asks for net, rw and a host path" \
	"$(inspect_raw "$REG_TLS" hostile-config --config | jq -c '.config | [.net, .rw, (.Volumes | keys)]')" \
	'[true,true,["/etc/shadow-host:/x","/ok"]]'
if [ -n "${RAW[i386]:-}" ]; then
	is "i386: config says linux/386" "$(inspect_raw "$REG_TLS" i386 --config | jq -r '.os + "/" + .architecture')" linux/386
else
	skip "i386: config says linux/386" "no i386 fixture"
fi

# Layer tars as the registry serves them.
blob() { curl -sf "https://$REG_TLS/v2/$1/blobs/$2"; }
layer_list() { # REPO INDEX: the entries of layer INDEX, one line
	blob "$1" "$(jq -r ".layers[$2].digest" <<<"${RAW[$1]}")" | tar -tzf - | tr '\n' ' '
}
is "layers: 5 layers" "$(q layers '.layers | length')" "5 "
like "layers: layer 3 has umoci's whiteouts" "$(layer_list layers 2)" 'data/\.wh\.dir data/\.wh\.gone'
like "layers: layer 4 replaces /srv/tree by a file" "$(layer_list layers 3)" 'srv/tree srv/tree/\.wh\.sub srv/tree/\.wh\.top'
is "layers: layer 5 has whiteouts after same-layer files" "$(layer_list layers 4)" \
	"data/ data/same data/.wh.same opt/ opt/old/ opt/old/new opt/old/.wh..wh..opq "
cp -r "$FIXTURES/layers" "$T/layers-oci"
umoci unpack --image "$T/layers-oci:latest" "$T/layers-bundle" >"$T/umoci.log" 2>&1
is "layers: umoci unpack gives the documented tree" "$(layers_tree "$T/layers-bundle/rootfs")" "$LAYERS_TREE"
like "zstd: the registry serves a zstd tar with busybox" \
	"$(blob zstd "$(jq -r '.layers[0].digest' <<<"${RAW[zstd]}")" | zstd -dc | tar -tf - | tr '\n' ' ')" 'bin/busybox'

# --- token server rules --------------------------------------------------------------
ok "push busybox to the token registry as alice" push_fixture busybox "$REG_TOKEN"
ok "push private/busybox to the token registry as alice" push_fixture busybox "$REG_TOKEN" private/busybox
token() { # SCOPE [CURL-ARGS...]
	local scope=$1
	shift
	curl -sf "$@" "$TOKEN_REALM?service=$TOKEN_SERVICE&scope=$scope" | jq -r .token
}
manifest_code() { # REPO TOKEN
	http_code -H "Authorization: Bearer $2" -H "Accept: application/vnd.oci.image.manifest.v1+json" \
		"https://$REG_TOKEN/v2/$1/manifests/latest"
}
is "anonymous token pulls a public repository" \
	"$(manifest_code busybox "$(token repository:busybox:pull)")" 200
is "anonymous token gives no access to private/" \
	"$(manifest_code private/busybox "$(token repository:private/busybox:pull)")" 401
is "alice's token pulls private/" \
	"$(manifest_code private/busybox "$(token repository:private/busybox:pull -u alice:secret)")" 200
is "a token without scope opens /v2/" \
	"$(http_code -H "Authorization: Bearer $(curl -sf "$TOKEN_REALM?service=$TOKEN_SERVICE" | jq -r .access_token)" "https://$REG_TOKEN/v2/")" 200
is "token answer: token = access_token, expires_in = TOKEN_TTL (60)" \
	"$(curl -sf "$TOKEN_REALM?service=$TOKEN_SERVICE" | jq -c '[.token == .access_token, .expires_in, (.issued_at | test("Z$"))]')" \
	"[true,${TOKEN_TTL:-60},true]"
is "wrong password is 401" \
	"$(http_code -u alice:wrong "$TOKEN_REALM?service=$TOKEN_SERVICE&scope=repository:busybox:pull")" 401
like "token log counts the tokens" "$(cat "$TOKEN_LOG")" \
	$'anonymous repository:busybox:pull\nanonymous repository:private/busybox:pull\nalice repository:private/busybox:pull\nanonymous\nanonymous$'

# --- cleanup -------------------------------------------------------------------------
pids=("${SERVER_PIDS[@]}")
stop_servers
left=()
for pid in "${pids[@]}"; do
	# by its command line, which names $T: the kernel may have given the pid to another process
	tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$T/" && left+=("$pid")
done
is "all ${#pids[@]} servers stopped" "${left[*]}" ""
