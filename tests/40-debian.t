#!/bin/bash
# SPDX-License-Identifier: MIT
# A real-world image (issue 7): Debian bookworm from debootstrap with ca-certificates
# (a non-ASCII file name) and iputils-ping (a file capability), in layers that install,
# replace and delete things as apt-get, dpkg and useradd do, built once by umoci and once
# by buildah. d-pull must give the tree `umoci unpack` gives, as root and unprivileged,
# and d-run must run bash, apt-cache and update-ca-certificates in it.
# Scripts for the sandbox's shell are single-quoted on purpose:
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC2016
. "$(dirname "$0")/lib.sh"

FIXTURE_NAMES=(debian-umoci debian-buildah)
WHO=(as_root as_user)
PER_FIXTURE=3
PER_PULL=9
TESTS=$((2 + ${#FIXTURE_NAMES[@]} * (PER_FIXTURE + ${#WHO[@]} * PER_PULL)))
plan "$TESTS"

NETLOCK='NetLock_Arany_=Class_Gold=_Főtanúsítvány'

# --- fixtures: debootstrap needs the Debian mirror once; its result is kept ----------
# Without the mirror (and without a kept debootstrap tarball or built fixtures) every
# test is skipped; with the mirror, a fixture that cannot be built is a failure. The
# mirror is the one apt uses here, or $DEBIAN_MIRROR (fixtures.py debian_mirror).
fixtures_need_mirror() {
	local name
	[ -f "$FIXTURES/debian-bookworm-minbase.tar.zst" ] && return 1
	for name in "${FIXTURE_NAMES[@]}"; do
		[ -f "$FIXTURES/$name/index.json" ] || return 0
	done
	return 1
}
if fixtures_need_mirror; then
	need_debian_mirror "$TESTS" "Debian image test"
fi
start=$SECONDS
ok "build the debian-umoci and debian-buildah fixtures (debootstrap once per clone)" \
	build_fixtures "${FIXTURE_NAMES[@]}"
diag "fixtures ready after $((SECONDS - start)) s"
ok "start the tls and token registries" eval 'make_ca && start_registry tls && start_registry token'

# --- helpers --------------------------------------------------------------------------

# tree_manifest ROOTFS raw|root|user: one line per entry of ROOTFS, sorted by name bytes:
#   NAME TYPE MODE UID:GID [sha256 of a file, "=FIRST" for a hardlink of FIRST | "-> TARGET"]
#   [mtime of a non-directory] [xattrs=NAMES]
# Names and targets are the raw bytes (only \ and newline escaped). raw describes ROOTFS
# as it is. root and user describe what d-pull is documented to make of a reference tree
# unpacked as root (README "Unpacking"; d-pull.c extract_entry/extract_layer):
#   - setuid and setgid bits are dropped (extract_entry masks S_ISUID|S_ISGID), on
#     directories too (/var/mail and /var/local are 2775 in the image, 0775 pulled);
#   - xattrs are not extracted (no ARCHIVE_EXTRACT_XATTR): ping's security.capability goes;
#   - user only: owners are not restored, so everything belongs to the pulling user
#     (65534:65534, lib.sh's as_user), and directories get u+rwx so that rm -rf works.
# Device nodes would be skipped too; the Debian layers have none (as Debian's images).
tree_manifest() {
	"$PYTHON" - "$@" <<'EOF'
import hashlib, os, stat, sys
root, mode = sys.argv[1], sys.argv[2]
os.chdir(root)
names = [b"."]
for top, dirs, files in os.walk(b"."):
    names += [os.path.join(top, n) for n in dirs + files]
names.sort()
first = {}
for n in names:
    st = os.lstat(n)
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        first.setdefault((st.st_dev, st.st_ino), n)
esc = lambda b: b.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")
out = sys.stdout.buffer
for n in names:
    st = os.lstat(n)
    perm, kind = stat.S_IMODE(st.st_mode), stat.filemode(st.st_mode)[0]
    owner = b"%d:%d" % (st.st_uid, st.st_gid)
    if mode != "raw":
        perm &= ~(stat.S_ISUID | stat.S_ISGID)
    if mode == "user":
        owner = b"65534:65534"
        if kind == "d":
            perm |= stat.S_IRWXU
    line = [esc(n), kind.encode(), b"%04o" % perm, owner]
    if kind == "-":
        link = first.get((st.st_dev, st.st_ino))
        if link and link != n:
            line.append(b"=" + esc(link))
        else:
            with open(n, "rb") as f:
                line.append(hashlib.file_digest(f, "sha256").hexdigest().encode())
    elif kind == "l":
        line.append(b"-> " + esc(os.readlink(n)))
    if kind != "d":
        line.append(b"%d" % st.st_mtime)
    xattrs = os.listxattr(n, follow_symlinks=False) if mode == "raw" else []
    if xattrs:
        line.append(b"xattrs=" + ",".join(sorted(xattrs)).encode())
    out.write(b" ".join(line) + b"\n")
EOF
}

# layer_features LAYOUT: what the image's layers contain that real images have and
# busybox fixtures do not, one word each.
layer_features() {
	"$PYTHON" - "$1" <<'EOF'
import json, os, sys, tarfile
layout = sys.argv[1]
def blob(d):
    return os.path.join(layout, "blobs", *d.split(":"))
with open(os.path.join(layout, "index.json")) as f:
    top = json.load(f)["manifests"][0]["digest"]
with open(blob(top)) as f:
    layers = json.load(f)["layers"]
seen = set()
for i, desc in enumerate(layers):
    with tarfile.open(blob(desc["digest"])) as tar:
        names = {}
        for e in tar:
            base = os.path.basename(e.name.rstrip("/"))
            if base == ".wh..wh..opq":
                seen.add("opaque")
            elif base.startswith(".wh."):
                seen.add("whiteout")
            if "path" in e.pax_headers and not e.name.isascii():
                seen.add("pax-utf8-path")
            if "linkpath" in e.pax_headers and not e.linkname.isascii():
                seen.add("pax-utf8-linkpath")
            if "SCHILY.xattr.security.capability" in e.pax_headers:
                seen.add("capability")
            if e.islnk():
                seen.add("hardlink")
            if e.isfile() and e.mode & 0o6000:
                seen.add("setuid")
            if e.name.rstrip("/") == "usr/share/doc/libcap2-bin" and e.issym():
                seen.add("dir-to-symlink")
            if e.name.rstrip("/") == "etc/motd" and e.isdir():
                seen.add("file-to-dir")
            if e.name.startswith("var/lib/apt/lists/.wh."):
                seen.add("lists-deleted")
print(len(layers), "layers:", " ".join(sorted(seen)))
EOF
}

# first_lines N TEXT: at most N lines of TEXT, for a readable TAP diagnostic
first_lines() { head -n "$1" <<<"$2"; }

FEATURES='capability dir-to-symlink file-to-dir hardlink lists-deleted pax-utf8-linkpath pax-utf8-path setuid whiteout'
declare -A REGISTRY=([debian-umoci]=$REG_TLS [debian-buildah]=$REG_TOKEN)
# umoci 0.4.7 writes an opaque directory (`umoci insert --opaque`, a tar without its
# end-of-archive blocks); buildah, with the vfs driver, lists each deleted entry as a
# whiteout instead, as docker's own diff does. umoci also writes, after the symlink
# usr/share/doc/libcap2-bin -> libcap2, whiteouts for the old directory's children
# (usr/share/doc/libcap2-bin/.wh.copyright ...); `umoci unpack` resolves them through the
# new symlink, as docker's os.RemoveAll in its chroot does, and deletes
# usr/share/doc/libcap2/*: d-pull must give the same tree, so the umoci image has an empty
# usr/share/doc/libcap2 and the buildah image a full one.
declare -A EXPECTED_FEATURES=(
	[debian-umoci]="5 layers: $FEATURES opaque"
	[debian-buildah]="5 layers: $FEATURES"
)

for name in "${FIXTURE_NAMES[@]}"; do
	reg=${REGISTRY[$name]}
	ok "$name: push to $reg" push_fixture "$name" "$reg"
	is "$name: the layers have what real images have" "$(layer_features "$FIXTURES/$name" | tr ' ' '\n' | LC_ALL=C sort | tr '\n' ' ')" \
		"$(tr ' ' '\n' <<<"${EXPECTED_FEATURES[$name]}" | LC_ALL=C sort | tr '\n' ' ')"
	# The reference: umoci unpack of the same OCI layout that was pushed (--preserve-digests).
	cp -r "$FIXTURES/$name" "$T/$name-oci"
	ok "$name: umoci unpack makes the reference tree" \
		umoci unpack --image "$T/$name-oci:latest" "$T/$name-ref"
	digest=$(jq -r '.manifests[0].digest' "$FIXTURES/$name/index.json")

	for who in "${WHO[@]}"; do
		home=$(user_home "$who")
		dir=$home/$name
		ref=root
		[ "$who" = as_user ] && ref=user
		run "$who" "$DPULL" -q "$reg/$name" "$name"
		is "$who: $name: d-pull exits 0, nothing on stderr, image.txt names the pushed digest" \
			"$? $(cat "$T/err")|$(head -1 "$dir/image.txt" 2>/dev/null)" "0 |$reg/$name:latest@$digest"
		rootfs=$dir/rootfs
		if [ -d "$rootfs" ]; then
			diff=$(diff <(tree_manifest "$T/$name-ref/rootfs" "$ref") <(tree_manifest "$rootfs" raw) 2>&1)
		else
			diff="no $rootfs"
		fi
		is "$who: $name: rootfs = umoci's tree: names, types, modes, owners, contents, links, mtimes" \
			"$(first_lines 40 "$diff")" ""
		is "$who: $name: the non-ASCII certificate and its link are there, byte for byte" \
			"$(cd "$rootfs" 2>&1 && readlink "etc/ssl/certs/$NETLOCK.pem" && sha256sum <"usr/share/ca-certificates/mozilla/$NETLOCK.crt" | cut -c1-64)" \
			"/usr/share/ca-certificates/mozilla/$NETLOCK.crt"$'\n'"$(cd "$T/$name-ref/rootfs" && sha256sum <"usr/share/ca-certificates/mozilla/$NETLOCK.crt" | cut -c1-64)"
		is "$who: $name: no whiteout file left anywhere" "$(find "$rootfs" -name '.wh.*' 2>&1 | head -3)" ""

		out=$("$who" "$DRUN" "$dir" bash -c 'echo "bash $BASH_VERSION"; id -u; cat /etc/debian_version
			ls /etc/motd; readlink /usr/share/doc/libcap2-bin; getent passwd app | cut -d: -f3,6
			ls /var/lib/apt/lists | wc -l' 2>&1)
		like "$who: $name: d-run bash -c: bash 5, root, Debian 12, the layers' changes" "$out" \
			$'^bash 5\\.[0-9.()a-z-]+\n0\n12\\.[0-9]+\n10-welcome\nlibcap2\n1000:/home/app\n0$'
		is "$who: $name: d-run apt-cache policy: only dpkg's status, the lists were deleted" \
			"$("$who" "$DRUN" "$dir" apt-cache policy 2>&1)" \
			$'Package files:\n 100 /var/lib/dpkg/status\n     release a=now\nPinned packages:'
		out=$("$who" "$DRUN" "$dir" apt-cache policy ca-certificates iputils-ping 2>&1)
		like "$who: $name: d-run apt-cache policy: both packages installed, from dpkg's status" "$out" \
			$'^ca-certificates:\n  Installed: [0-9]+\\+deb12u[0-9]+\n.*\n +100 /var/lib/dpkg/status\niputils-ping:\n  Installed: 3:[0-9]+-[0-9.+a-z]+\n'
		out=$("$who" "$DRUN" "$dir" update-ca-certificates --help 2>&1)
		like "$who: $name: d-run update-ca-certificates --help: its usage line" "$out" \
			'^(/usr/sbin/)?update-ca-certificates: \[--verbose\] \[--fresh\]$'
		out=$("$who" "$DRUN" "$dir" openssl x509 -noout -subject -in "/etc/ssl/certs/$NETLOCK.pem" 2>&1)
		like "$who: $name: d-run openssl reads the certificate through its non-ASCII link" "$out" \
			'^subject=C = HU, .*, CN = NetLock Arany \(Class Gold\) F\\C5\\91tan\\C3\\BAs\\C3\\ADtv\\C3\\A1ny$'
		"$who" rm -rf "$dir"
	done
done
