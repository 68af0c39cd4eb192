#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Build the test images as OCI image layouts: fixtures.py OUTDIR [NAME...]

Each fixture is OUTDIR/NAME, an OCI image layout whose tag "latest" is the image.
Layers come from Debian's busybox-static and are made by umoci (file-system changes)
and skopeo (compression and format changes); the few things no tool can write (an
opaque whiteout after a file in the same layer, an index with chosen platforms, a
config key umoci does not know) are written here by the OCI image spec.
debian-umoci and debian-buildah are the real thing: Debian bookworm from debootstrap
(once per OUTDIR, kept as OUTDIR/debian-bookworm-minbase.tar.zst), in layers made by dpkg,
useradd and update-ca-certificates run in a chroot, committed by umoci and by buildah.
A fixture that exists is not rebuilt; one that fails leaves nothing behind.
The expected contents are documented in tests/lib.sh (the debian ones in tests/40-debian.t).
"""
import glob
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MTIME = 1700000000  # fixed time for hand-written tar entries

PASSWD = """root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
staff:x:50:
user:x:1000:
nogroup:x:65534:
"""
OS_RELEASE = """ID=d-utils-test
NAME="d-utils test image"
PRETTY_NAME="d-utils test image (busybox)"
"""


def run(*cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- OCI layout helpers -------------------------------------------------------

def blob_path(layout, digest):
    return os.path.join(layout, "blobs", *digest.split(":", 1))


def read_blob(layout, digest):
    with open(blob_path(layout, digest), "rb") as f:
        return f.read()


def write_blob(layout, data, media_type, **extra):
    digest = sha256(data)
    path = blob_path(layout, digest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    desc = {"mediaType": media_type, "digest": digest, "size": len(data)}
    desc.update(extra)
    return desc


def dump(obj):
    return json.dumps(obj, indent=2).encode() + b"\n"


def get_index(layout):
    with open(os.path.join(layout, "index.json")) as f:
        return json.load(f)


def tag_desc(layout, tag="latest"):
    for d in get_index(layout)["manifests"]:
        if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return d
    raise KeyError(f"{layout}: no tag {tag}")


def set_tag(layout, desc, tag="latest"):
    """Point TAG at DESC; index.json lists only tagged roots."""
    index = get_index(layout)
    keep = [d for d in index["manifests"]
            if d.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
    desc = dict(desc)
    desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
    index["manifests"] = keep + [desc]
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(dump(index))


def new_layout(layout):
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(dump({"schemaVersion": 2, "manifests": []}))


def copy_blobs(src, dst):
    for path in glob.glob(os.path.join(src, "blobs", "sha256", "*")):
        target = os.path.join(dst, "blobs", "sha256", os.path.basename(path))
        if not os.path.exists(target):
            shutil.copyfile(path, target)


def edit_image(layout, edit_config=None, edit_manifest=None, tag="latest"):
    """Rewrite the config and/or manifest of TAG, fixing the digests above them."""
    mdesc = tag_desc(layout, tag)
    manifest = json.loads(read_blob(layout, mdesc["digest"]))
    if edit_config:
        config = json.loads(read_blob(layout, manifest["config"]["digest"]))
        edit_config(config)
        cdesc = write_blob(layout, dump(config), manifest["config"]["mediaType"])
        manifest["config"].update(digest=cdesc["digest"], size=cdesc["size"])
    if edit_manifest:
        edit_manifest(manifest)
    media_type = manifest.get("mediaType", mdesc["mediaType"])
    set_tag(layout, write_blob(layout, dump(manifest), media_type), tag)


def tar_entry(tar, name, kind="file", data=b"", mode=0o644, link=""):
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.mode = mode
    info.uname = info.gname = "root"
    if kind == "dir":
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = link
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def append_layer(layout, entries, comment):
    """Append a hand-written gzip layer (ENTRIES in this exact order) to the image."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            tar_entry(tar, *entry[:2], **entry[2] if len(entry) > 2 else {})
    raw = raw.getvalue()
    ldesc = write_blob(layout, gzip.compress(raw, mtime=0), OCI_GZIP)

    def config(c):
        c["rootfs"]["diff_ids"].append(sha256(raw))
        c.setdefault("history", []).append(
            {"created": "2023-11-14T22:13:20Z", "created_by": "tests/fixtures.py",
             "comment": comment})

    edit_image(layout, config, lambda m: m["layers"].append(ldesc))


# --- building blocks ------------------------------------------------------------

def busybox_rootfs(rootfs, busybox="/bin/busybox"):
    """Fill ROOTFS with a static busybox, its applet links and a minimal /etc."""
    for d, mode in [("bin", 0o755), ("sbin", 0o755), ("usr/bin", 0o755),
                    ("usr/sbin", 0o755), ("etc", 0o755), ("root", 0o700),
                    ("home/user", 0o755), ("tmp", 0o1777), ("proc", 0o555),
                    ("sys", 0o555), ("dev", 0o755)]:
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
        os.chmod(os.path.join(rootfs, d), mode)
    os.chown(os.path.join(rootfs, "home/user"), 1000, 1000)
    shutil.copy2(busybox, os.path.join(rootfs, "bin/busybox"))
    # The host's busybox-static is the same version as the i386 one: same applets.
    applets = subprocess.run(["/bin/busybox", "--list-full"], check=True,
                             capture_output=True, text=True).stdout.split()
    for path in applets:
        dst = os.path.join(rootfs, path)
        if path != "bin/busybox" and not os.path.lexists(dst):
            os.symlink("/bin/busybox", dst)
    for name, text in [("passwd", PASSWD), ("group", GROUP), ("os-release", OS_RELEASE)]:
        with open(os.path.join(rootfs, "etc", name), "w") as f:
            f.write(text)


def umoci_base(layout, work, arch="amd64", busybox="/bin/busybox"):
    """LAYOUT:latest = one gzip layer with the busybox rootfs, PATH/FOO env, Cmd sh."""
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", layout + ":latest")
    bundle = os.path.join(work, "bundle-base")
    run("umoci", "unpack", "--image", layout + ":latest", bundle)
    busybox_rootfs(os.path.join(bundle, "rootfs"), busybox)
    run("umoci", "repack", "--image", layout + ":latest", bundle)
    run("umoci", "config", "--image", layout + ":latest", "--os", "linux",
        "--architecture", arch, "--config.env", PATH_ENV, "--config.env", "FOO=bar",
        "--config.cmd", "sh", "--author", "d-utils tests")


def clone(out, src, layout):
    shutil.copytree(os.path.join(out, src), layout, symlinks=True)


def skopeo_copy(*args):
    run("skopeo", "copy", "-q", *args)


# --- fixtures --------------------------------------------------------------------

def build_busybox(out, layout, work):
    umoci_base(layout, work)


def build_full(out, layout, work):
    clone(out, "busybox", layout)
    run("umoci", "config", "--image", layout + ":latest", "--config.user", "user",
        "--config.entrypoint", "/bin/echo", "--config.entrypoint", "entry",
        "--config.cmd", "cmd", "--config.workingdir", "/home/user/work",
        "--config.volume", "/data")

    def config(c):
        c["config"]["Hostname"] = "fixturehost"
    edit_image(layout, config)


def build_hostile_config(out, layout, work):
    clone(out, "busybox", layout)

    def config(c):
        # An image must not grant itself host access: d-pull drops all of this.
        for obj in (c, c["config"]):
            obj["net"] = True
            obj["rw"] = True
        c["config"]["Volumes"] = {"/etc/shadow-host:/x": {}, "/ok": {}}
    edit_image(layout, config)


def build_layers(out, layout, work):
    clone(out, "busybox", layout)
    image = layout + ":latest"
    bundle = os.path.join(work, "bundle")
    run("umoci", "unpack", "--image", image, bundle)
    root = os.path.join(bundle, "rootfs")

    def write(path, text):
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        with open(os.path.join(root, path), "w") as f:
            f.write(text)

    def repack(comment):
        run("umoci", "repack", "--refresh-bundle", "--history.comment", comment,
            "--image", image, bundle)

    # layer 2: files that later layers delete, hide or replace
    for path in ["data/keep", "data/gone", "data/same", "data/dir/a", "data/dir/b",
                 "opt/old/x", "opt/old/y", "srv/tree/top", "srv/tree/sub/deep/file"]:
        write(path, os.path.basename(path) + " from layer 2\n")
    repack("layer 2: add files")
    # layer 3: umoci's own whiteouts (.wh.gone, .wh.dir)
    os.unlink(os.path.join(root, "data/gone"))
    shutil.rmtree(os.path.join(root, "data/dir"))
    repack("layer 3: delete /data/gone and /data/dir")
    # layer 4: a directory with nested content replaced by a regular file
    shutil.rmtree(os.path.join(root, "srv/tree"))
    write("srv/tree", "tree is now a file\n")
    repack("layer 4: replace directory /srv/tree by a file")
    # layer 5 by hand (umoci 0.4.7's insert --opaque writes truncated tars): whiteouts
    # that come AFTER the files this same layer adds, which must survive them.
    append_layer(layout, [
        ("data", "dir", {"mode": 0o755}),
        ("data/same", "file", {"data": b"same from layer 5\n"}),
        ("data/.wh.same", "file"),
        ("opt", "dir", {"mode": 0o755}),
        ("opt/old", "dir", {"mode": 0o755}),
        ("opt/old/new", "file", {"data": b"new from layer 5\n"}),
        ("opt/old/.wh..wh..opq", "file"),
    ], "layer 5: opaque /opt/old and whiteouts after same-layer files")


def platform_image(out, layout, work, arch, variant, text):
    """busybox plus /etc/platform = TEXT, with config os/architecture/variant."""
    clone(out, "busybox", layout)
    image = layout + ":latest"
    bundle = os.path.join(work, "bundle-" + arch)
    run("umoci", "unpack", "--image", image, bundle)
    with open(os.path.join(bundle, "rootfs/etc/platform"), "w") as f:
        f.write(text + "\n")
    run("umoci", "repack", "--image", image, bundle)
    run("umoci", "config", "--image", image, "--architecture", arch)

    def config(c):
        if variant:
            c["variant"] = variant
    edit_image(layout, config, lambda m: m.setdefault("mediaType", OCI_MANIFEST))
    return tag_desc(layout)


def attestation(layout, subject):
    """An in-toto attestation manifest like BuildKit's (platform unknown/unknown)."""
    statement = dump({"_type": "https://in-toto.io/Statement/v0.1",
                      "predicateType": "https://spdx.dev/Document",
                      "subject": [{"name": "d-utils-test", "digest": {
                          "sha256": subject["digest"].split(":")[1]}}],
                      "predicate": {}})
    layer = write_blob(layout, statement, "application/vnd.in-toto+json",
                       annotations={"in-toto.io/predicate-type": "https://spdx.dev/Document"})
    config = write_blob(layout, dump({"architecture": "unknown", "os": "unknown",
                                      "config": {}, "rootfs": {
                                          "type": "layers",
                                          "diff_ids": [layer["digest"]]}}), OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                "layers": [layer]}
    return write_blob(layout, dump(manifest), OCI_MANIFEST, platform={
        "architecture": "unknown", "os": "unknown"}, annotations={
        "vnd.docker.reference.digest": subject["digest"],
        "vnd.docker.reference.type": "attestation-manifest"})


def build_multi(out, layout, work):
    new_layout(layout)
    entries = []
    for arch, variant, text in [("arm64", "v8", "linux/arm64/v8"),
                                ("amd64", None, "linux/amd64")]:
        sub = os.path.join(work, "img-" + arch)
        desc = platform_image(out, sub, work, arch, variant, text)
        copy_blobs(sub, layout)
        desc = {k: desc[k] for k in ("mediaType", "digest", "size")}
        desc["platform"] = {"architecture": arch, "os": "linux"}
        if variant:
            desc["platform"]["variant"] = variant
        entries.append(desc)
    entries.append(attestation(layout, entries[1]))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    set_tag(layout, write_blob(layout, dump(index), OCI_INDEX))


def build_dockerlist(out, layout, work):
    """multi as a Docker manifest list of Docker schema 2 images, in a dir: layout.

    skopeo 1.9 converts only single images, and its oci: transport neither holds
    Docker manifests nor names an image by digest: each platform's image is tagged
    in a scratch OCI layout, converted with `skopeo copy --format v2s2` into a dir:
    copy, and the list around them is written here the way the dir: transport
    stores lists (manifest.json, HEX.manifest.json per instance, blobs by HEX).
    """
    src = os.path.join(out, "multi")
    os.makedirs(layout)
    entries = []
    for desc in json.loads(read_blob(src, tag_desc(src)["digest"]))["manifests"]:
        if desc["platform"]["os"] == "unknown":
            continue
        hexdigest = desc["digest"].split(":")[1]
        single = os.path.join(work, "oci-" + hexdigest)
        dirdest = os.path.join(work, "dir-" + hexdigest)
        new_layout(single)
        copy_blobs(src, single)
        set_tag(single, desc)
        skopeo_copy("--format", "v2s2", "oci:%s:latest" % single, "dir:" + dirdest)
        for path in glob.glob(os.path.join(dirdest, "*")):
            shutil.copyfile(path, os.path.join(layout, os.path.basename(path)))
        with open(os.path.join(dirdest, "manifest.json"), "rb") as f:
            data = f.read()
        mdesc = {"mediaType": DOCKER_MANIFEST, "digest": sha256(data), "size": len(data),
                 "platform": desc["platform"]}
        os.rename(os.path.join(layout, "manifest.json"),
                  os.path.join(layout, mdesc["digest"].split(":")[1] + ".manifest.json"))
        entries.append(mdesc)
    with open(os.path.join(layout, "manifest.json"), "wb") as f:
        f.write(dump({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": entries}))


def build_plain(out, layout, work):
    """busybox with an uncompressed layer: skopeo decompresses only into dir:."""
    dirdest = os.path.join(work, "dir")
    skopeo_copy("--dest-decompress", "oci:%s/busybox:latest" % out, "dir:" + dirdest)
    skopeo_copy("--dest-oci-accept-uncompressed-layers", "dir:" + dirdest,
                "oci:%s:latest" % layout)


def build_zstd(out, layout, work):
    # skopeo 1.9 does not recompress gzip to zstd: start from the uncompressed copy.
    skopeo_copy("--dest-compress-format", "zstd", "oci:%s/plain:latest" % out,
                "oci:%s:latest" % layout)


def build_docker(out, layout, work):
    """busybox as a Docker schema 2 image, converted by skopeo, in a dir: layout."""
    skopeo_copy("--format", "v2s2", "oci:%s/busybox:latest" % out, "dir:" + layout)


def build_i386(out, layout, work):
    """busybox-static:i386 from Debian as a linux/386 image."""
    debs = glob.glob(os.path.join(out, "busybox-static_*_i386.deb"))
    if not debs:
        if "i386" not in subprocess.run(["dpkg", "--print-foreign-architectures"],
                                        capture_output=True, text=True).stdout.split():
            run("dpkg", "--add-architecture", "i386")
        # apt-get update fails on a partly synced mirror; the download may still work.
        subprocess.run(["apt-get", "update", "-qq"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run("apt-get", "download", "-q", "-o", "APT::Sandbox::User=root",
            "busybox-static:i386", cwd=work,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        debs = glob.glob(os.path.join(work, "busybox-static_*_i386.deb"))
        shutil.copy(debs[0], out)
    unpacked = os.path.join(work, "deb")
    run("dpkg-deb", "-x", debs[0], unpacked)
    busybox = os.path.join(unpacked, "bin/busybox")
    # umoci records the host's architecture by default; 386 is Go's name for i386.
    umoci_base(layout, work, arch="386", busybox=busybox)


# --- debian: a real Debian image, as umoci and as buildah build it ------------------

DEBIAN_SUITE = "bookworm"
DEBIAN_TARBALL = "debian-bookworm-minbase.tar.zst"  # the debootstrap result, kept in OUT
DEBIAN_EXTRA = ["ca-certificates", "openssl", "iputils-ping"]  # installed by layer 2
DEBIAN_CMD = "bash"
CHROOT_ENV = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C",
              "DEBIAN_FRONTEND=noninteractive", "HOME=/root"]
DEB822_SOURCES = """Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
DOCKER_CLEAN = """DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
"""


def debian_mirror():
    """$DEBIAN_MIRROR, else the Debian mirror this machine's apt uses for DEBIAN_SUITE."""
    if os.environ.get("DEBIAN_MIRROR"):
        return os.environ["DEBIAN_MIRROR"].rstrip("/")
    files = glob.glob("/etc/apt/sources.list") + sorted(
        glob.glob("/etc/apt/sources.list.d/*.list") + glob.glob("/etc/apt/sources.list.d/*.sources"))
    for path in files:
        with open(path, errors="replace") as f:
            text = f.read()
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([\w-]+):[ \t]*(.*)$", stanza, re.M))
                if (fields.get("Enabled", "yes") != "no" and "deb" in fields.get("Types", "").split()
                        and DEBIAN_SUITE in fields.get("Suites", "").split() and fields.get("URIs")):
                    return fields["URIs"].split()[0].rstrip("/")
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == DEBIAN_SUITE:
                    return words[1].rstrip("/")
    return "http://deb.debian.org/debian"


def debian_tarball(out, work):
    """OUT/DEBIAN_TARBALL: debootstrap's minbase with DEBIAN_EXTRA, made once (about a minute)."""
    tarball = os.path.join(out, DEBIAN_TARBALL)
    if os.path.exists(tarball):
        return tarball
    root = os.path.join(work, "debootstrap")
    start = time.monotonic()
    run("debootstrap", "--variant=minbase", "--include=" + ",".join(DEBIAN_EXTRA + ["libcap2-bin"]),
        DEBIAN_SUITE, root, debian_mirror(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    # GNU tar keeps what a rootfs needs: numeric owners, hardlinks, security.capability.
    run("tar", "--zstd", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", root,
        "-cf", tarball + ".tmp", ".")
    os.rename(tarball + ".tmp", tarball)
    shutil.rmtree(root)
    print(f"fixtures.py: debootstrap and {DEBIAN_TARBALL}: {time.monotonic() - start:.0f} s",
          file=sys.stderr)
    return tarball


def in_chroot(root, *cmd):
    """CMD in ROOT with the host's /dev and a /proc, mounted in a private mount namespace."""
    run("unshare", "--mount", "--propagation", "private", "sh", "-ec",
        'mount --rbind /dev "$1/dev"; mount -t proc proc "$1/proc"; exec chroot "$@"',
        "sh", root, *CHROOT_ENV, *cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def debian_base(out, work):
    """WORK/base: the debootstrap tree without DEBIAN_EXTRA (their .debs go to WORK/debs),
    made like a distribution's base image: no device nodes, no host files, no .deb cache."""
    base, debs = os.path.join(work, "base"), os.path.join(work, "debs")
    os.makedirs(base)
    os.makedirs(debs)
    run("tar", "--zstd", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", base,
        "-xpf", debian_tarball(out, work))
    archives = os.path.join(base, "var/cache/apt/archives")
    for path in glob.glob(os.path.join(archives, "*.deb")):
        if os.path.basename(path).split("_")[0] in DEBIAN_EXTRA:
            shutil.move(path, debs)
        else:
            os.unlink(path)
    in_chroot(base, "dpkg", "--purge", *DEBIAN_EXTRA)
    for name in os.listdir(os.path.join(base, "dev")):
        path = os.path.join(base, "dev", name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    for name in ("etc/hostname", "etc/resolv.conf"):  # debootstrap copies the host's
        os.unlink(os.path.join(base, name))
    return base, debs


def local_ca(work):
    """A CA certificate as a user adds to /usr/local/share/ca-certificates."""
    path = os.path.join(work, "d-utils-local.crt")
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", os.path.join(work, "local.key"), "-out", path, "-days", "3650",
        "-subj", "/CN=d-utils local CA", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


def debian_steps(base, debs, ca):
    """The image's layers as (created_by, function of the rootfs), each changing the tree
    the way a Dockerfile's RUN line with apt-get, dpkg and useradd does."""
    def layer1(root):
        run("cp", "-a", base + "/.", root)

    def layer2(root):
        archives = os.path.join(root, "var/cache/apt/archives")
        names = sorted(os.listdir(debs))
        for name in names:
            shutil.copy(os.path.join(debs, name), archives)
        in_chroot(root, "dpkg", "-i", *["/var/cache/apt/archives/" + n for n in names])
        for name in names:  # apt-get clean
            os.unlink(os.path.join(archives, name))
        for name in os.listdir(os.path.join(root, "var/lib/apt/lists")):
            path = os.path.join(root, "var/lib/apt/lists", name)
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)

    def layer3(root):
        in_chroot(root, "useradd", "--create-home", "--uid", "1000", "--shell", "/bin/bash", "app")
        # one-line sources.list -> deb822 file, as Debian's own images have it
        os.unlink(os.path.join(root, "etc/apt/sources.list"))
        with open(os.path.join(root, "etc/apt/sources.list.d/debian.sources"), "w") as f:
            f.write(DEB822_SOURCES)
        with open(os.path.join(root, "etc/apt/apt.conf.d/docker-clean"), "w") as f:
            f.write(DOCKER_CLEAN)
        # a directory replaced by a symlink (dpkg-maintscript-helper dir_to_symlink); umoci
        # 0.4.7 also writes whiteouts for the old children below the new symlink, which
        # umoci unpack (and docker) resolve through it: libcap2's own docs go too
        shutil.rmtree(os.path.join(root, "usr/share/doc/libcap2-bin"))
        os.symlink("libcap2", os.path.join(root, "usr/share/doc/libcap2-bin"))
        # a file replaced by a directory
        os.unlink(os.path.join(root, "etc/motd"))
        os.mkdir(os.path.join(root, "etc/motd"), 0o755)
        with open(os.path.join(root, "etc/motd/10-welcome"), "w") as f:
            f.write("Welcome to the d-utils test image.\n")
        # modes: a hardened file and directory, setuid removed
        os.chmod(os.path.join(root, "etc/login.defs"), 0o600)
        os.chmod(os.path.join(root, "var/log/apt"), 0o750)
        for name in ("usr/bin/chfn", "usr/bin/chsh"):
            os.chmod(os.path.join(root, name), 0o755)
        shutil.copy(ca, os.path.join(root, "usr/local/share/ca-certificates"))
        in_chroot(root, "update-ca-certificates")

    def layer4(root):
        os.unlink(os.path.join(root, "usr/local/share/ca-certificates", os.path.basename(ca)))

    def layer5(root):
        certs = os.path.join(root, "etc/ssl/certs")
        shutil.rmtree(certs)
        os.mkdir(certs, 0o755)
        in_chroot(root, "update-ca-certificates", "--fresh")

    return [
        ("debootstrap --variant=minbase " + DEBIAN_SUITE, layer1),
        ("apt-get install ca-certificates iputils-ping && apt-get clean && "
         "rm -rf /var/lib/apt/lists/*", layer2),
        ("useradd app; deb822 sources; doc dir -> symlink; /etc/motd file -> dir; chmod; "
         "a local CA", layer3),
        ("rm /usr/local/share/ca-certificates/d-utils-local.crt", layer4),
        ("rm -rf /etc/ssl/certs && mkdir /etc/ssl/certs && update-ca-certificates --fresh", layer5),
    ]


def build_debian_umoci(out, layout, work):
    """umoci repack for each layer but the last, which `umoci insert --opaque` writes:
    /etc/ssl/certs rebuilt from scratch, hiding everything below it."""
    base, debs = debian_base(out, work)
    steps = debian_steps(base, debs, local_ca(work))
    image = layout + ":latest"
    bundle = os.path.join(work, "bundle")
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", image)
    run("umoci", "unpack", "--image", image, bundle)
    root = os.path.join(bundle, "rootfs")
    for created_by, step in steps[:-1]:
        step(root)
        run("umoci", "repack", "--refresh-bundle", "--history.created_by", created_by,
            "--image", image, bundle)
    created_by, step = steps[-1]
    step(root)
    run("umoci", "insert", "--opaque", "--history.created_by", created_by, "--image", image,
        os.path.join(root, "etc/ssl/certs"), "/etc/ssl/certs")
    run("umoci", "config", "--image", image, "--os", "linux", "--architecture", "amd64",
        "--config.env", PATH_ENV, "--config.cmd", DEBIAN_CMD, "--author", "d-utils tests")


def build_debian_buildah(out, layout, work):
    """buildah from / mount / change / commit for each layer, then push to an OCI layout.
    Its own vfs storage in WORK: nothing touches the machine's containers storage."""
    base, debs = debian_base(out, work)
    steps = debian_steps(base, debs, local_ca(work))
    policy = os.path.join(work, "policy.json")
    with open(policy, "w") as f:
        json.dump({"default": [{"type": "insecureAcceptAnything"}]}, f)
    bah = ["buildah", "--root", os.path.join(work, "storage"), "--runroot",
           os.path.join(work, "runroot"), "--storage-driver", "vfs"]

    def out_of(*args):
        return subprocess.run(bah + list(args), check=True, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, text=True).stdout.strip()

    source = "scratch"
    try:
        for i, (created_by, step) in enumerate(steps, 1):
            ctr = out_of("from", "--signature-policy", policy, "--pull=never", source)
            step(out_of("mount", ctr))
            out_of("config", "--created-by", created_by, "--os", "linux", "--arch", "amd64",
                   "--env", PATH_ENV, "--cmd", DEBIAN_CMD, ctr)
            source = "d-utils-debian-%d" % i
            out_of("commit", "--signature-policy", policy, "--quiet", "--rm", ctr, source)
        out_of("push", "--signature-policy", policy, "--quiet", source, "oci:%s:latest" % layout)
    finally:
        subprocess.run(bah + ["rm", "--all"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


FIXTURES = {
    "busybox": (build_busybox, []),
    "full": (build_full, ["busybox"]),
    "hostile-config": (build_hostile_config, ["busybox"]),
    "layers": (build_layers, ["busybox"]),
    "multi": (build_multi, ["busybox"]),
    "dockerlist": (build_dockerlist, ["multi"]),
    "plain": (build_plain, ["busybox"]),
    "zstd": (build_zstd, ["plain"]),
    "docker": (build_docker, ["busybox"]),
    "i386": (build_i386, []),
    "debian-umoci": (build_debian_umoci, []),
    "debian-buildah": (build_debian_buildah, []),
}


def done(out, name):
    """A finished fixture is an OCI layout (index.json) or a dir: layout (manifest.json)."""
    return any(os.path.exists(os.path.join(out, name, f)) for f in ("index.json", "manifest.json"))


def build(out, name, failed):
    if done(out, name) or name in failed:
        return name not in failed
    func, deps = FIXTURES[name]
    for dep in deps:
        if not build(out, dep, failed):
            failed.add(name)
            return False
    layout = os.path.join(out, name)
    work = os.path.join(out, ".work-" + name)
    for path in (work, layout):
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(work)
    tmp = os.path.join(work, "layout")
    print(f"fixtures.py: building {name}", file=sys.stderr)
    start = time.monotonic()
    try:
        func(out, tmp, work)
        os.rename(tmp, layout)
        print(f"fixtures.py: built {name} in {time.monotonic() - start:.0f} s", file=sys.stderr)
    except (subprocess.CalledProcessError, OSError, KeyError, IndexError) as e:
        print(f"fixtures.py: {name}: {e}", file=sys.stderr)
        failed.add(name)
        return False
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return True


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: fixtures.py OUTDIR [NAME...]")
    out = os.path.abspath(sys.argv[1])
    names = sys.argv[2:] or list(FIXTURES)
    unknown = [n for n in names if n not in FIXTURES]
    if unknown:
        sys.exit("fixtures.py: unknown fixture: " + " ".join(unknown))
    os.makedirs(out, exist_ok=True)
    failed = set()
    for name in names:
        build(out, name, failed)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
