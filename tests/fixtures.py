#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Build the test images as OCI image layouts: fixtures.py OUTDIR [NAME...]

Each fixture is OUTDIR/NAME, an OCI image layout whose tag "latest" is the image.
Layers come from Debian's busybox-static and are made by umoci (file-system changes)
and skopeo (compression and format changes); the few things no tool can write (an
opaque whiteout after a file in the same layer, an index with chosen platforms, a
config key umoci does not know) are written here by the OCI image spec.
A fixture that exists is not rebuilt; one that fails leaves nothing behind.
The expected contents are documented in tests/lib.sh.
"""
import glob
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

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
    try:
        func(out, tmp, work)
        os.rename(tmp, layout)
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
