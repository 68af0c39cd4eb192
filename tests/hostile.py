#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""hostile.py OUT HOSTDIR [NAME...]: hostile OCI image layouts OUT/NAME (tag latest).

Every image starts with a small valid base layer: etc/os-release, bin/, tmp/ and a decoy
copy of the absolute host directory HOSTDIR (HOSTDIR/keepme, HOSTDIR/secret,
HOSTDIR/sub/inner, each "decoy BASENAME\n"), so that a link or whiteout that names
HOSTDIR and is resolved inside the rootfs lands on the decoy, while one that escapes
lands on the host. The attack layers follow; see ATTACKS below and tests/20-hostile.t.
A layer given as bytes instead of a list of entries is that blob as is, not a tar.
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

OUT, HOSTDIR = sys.argv[1], sys.argv[2].rstrip("/")
assert HOSTDIR.startswith("/") and len(HOSTDIR) > 1, "HOSTDIR must be absolute"
HREL = HOSTDIR.lstrip("/")  # HOSTDIR as a name inside the rootfs


def entry(name, kind="file", data=b"", mode=None, link="", dev=(0, 0)):
    """A (TarInfo, bytes) pair; kind: file dir symlink hardlink char block."""
    ti = tarfile.TarInfo(name)
    ti.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
               "hardlink": tarfile.LNKTYPE, "char": tarfile.CHRTYPE,
               "block": tarfile.BLKTYPE}[kind]
    ti.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
    ti.linkname = link
    ti.devmajor, ti.devminor = dev
    ti.mtime = 1700000000
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.size = len(data)
    if kind == "hardlink" and data:
        # readers take a hardlink's size as data only in a pax archive: say it is one
        ti.pax_headers = {"comment": "hardlink with data"}
    return ti, data


def f(name, text, mode=0o644):
    return entry(name, data=text.encode(), mode=mode)


def d(name, mode=0o755):
    return entry(name, "dir", mode=mode)


def tar(entries):
    buf = io.BytesIO()
    # PAX keeps names of any length; tarfile writes names exactly as given
    # (no stripping of "/" or ".."), which is what these attacks need.
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for ti, data in entries:
            if ti.type == tarfile.DIRTYPE and not ti.name.endswith("/"):
                ti.name += "/"
            t.addfile(ti, io.BytesIO(data) if data else None)
    return buf.getvalue()


def parents(path):
    parts = path.split("/")
    return [d("/".join(parts[: i + 1])) for i in range(len(parts))]


BASE = [
    d("etc"), f("etc/os-release", "ID=hostile\n"), d("bin"), f("bin/hello", "#!/bin/sh\necho hi\n", 0o755),
    d("tmp", 0o1777),
    *parents(HREL),
    f(HREL + "/keepme", "decoy keepme\n"), f(HREL + "/secret", "decoy secret\n"),
    d(HREL + "/sub"), f(HREL + "/sub/inner", "decoy inner\n"),
]

UP = "../../../../../../"
with open("/bin/busybox", "rb") as bb:  # static (Debian's busybox-static), as in fixtures.py
    BUSYBOX = bb.read()  # enough to reach / from DIR/rootfs when not chrooted

ATTACKS = {
    "dotdot": [[
        f("../../../../tmp/PWNED-dotdot", "pwned\n"),
        f("a/../../../PWNED2", "pwned\n"),
    ]],
    "absolute": [[f("/tmp/PWNED-abs", "pwned\n")]],
    "symlink-escape": [[
        entry("x", "symlink", link=HOSTDIR), f("x/owned", "owned via x\n"),
        entry("y", "symlink", link=UP + HREL), f("y/owned2", "owned via y\n"),
    ]],
    "symlink-escape-later": [
        [entry("x", "symlink", link=HOSTDIR), entry("y", "symlink", link=UP + HREL)],
        [f("x/owned", "owned via x\n"), f("y/owned2", "owned via y\n")],
    ],
    # hardlinks that carry data: libarchive writes it into the link target
    "hardlink-escape": [[
        entry("h", "hardlink", link=HOSTDIR + "/secret", data=b"pwned via h\n"),
        entry("h2", "hardlink", link="../../../.." + HOSTDIR + "/secret"),
        entry("s", "symlink", link=HOSTDIR),
        entry("h3", "hardlink", link="s/keepme", data=b"pwned via h3\n"),
    ]],
    # no such file in the rootfs (there is no decoy /etc/passwd): the pull must fail
    "hardlink-missing": [[entry("h", "hardlink", link="/etc/passwd"), f("after", "after\n")]],
    "whiteout-escape": [
        [entry("x", "symlink", link=HOSTDIR), entry("y", "symlink", link=HOSTDIR + "/sub")],
        [entry("x/.wh.keepme"), entry("y/.wh..wh..opq")],
    ],
    "root-symlink": [[entry("./", "symlink", link="/"), f("PWNED-root", "pwned\n")]],
    "devices": [[
        d("dev"), entry("dev/null2", "char", mode=0o666, dev=(1, 3)),
        entry("dev/loop99", "block", mode=0o660, dev=(7, 99)), f("dev/after", "after\n"),
    ]],
    "setuid": [[
        f("bin/suid", "#!/bin/sh\n", 0o4755), f("bin/sgid", "#!/bin/sh\n", 0o2755),
        d("shared", 0o2775), f("shared/f", "f\n"),
    ]],
    "mode0000": [[
        d("locked", 0o000), f("locked/f", "in locked\n"),
        d("ro", 0o555), f("ro/f", "in ro\n"), d("ro/sub", 0o000), f("ro/sub/g", "in ro/sub\n"),
    ]],
    "replace-dir": [
        [d("d"), d("d/sub"), f("d/sub/f", "f\n"), f("d/g", "g\n")],
        [f("d", "d is now a file\n")],
    ],
    "truncated": [[f("big", os.urandom(1 << 18).hex())]],  # cut in half below
    # a blob in lrzip format, after a layer that ships an "lrzip" (a script, and a static
    # busybox as /bin/sh to run it): libarchive decompresses lrzip with the program "lrzip"
    # from PATH, which in the chrooted extractor is the image's. Run, it says so on stderr
    # (d-pull's) and leaves PWNED-lrzip files in /tmp and HOSTDIR.
    "lrzip-filter": [
        [d("usr"), d("usr/bin"), entry("bin/sh", data=BUSYBOX, mode=0o755),
         f("usr/bin/lrzip", "#!/bin/sh\necho 'PWNED: the lrzip of the image ran' >&2\n"
           ": >/tmp/PWNED-lrzip\n: >%s/PWNED-lrzip\n: >/PWNED-lrzip\nexit 1\n" % HOSTDIR, 0o755)],
        b"LRZI\x00\x06" + bytes(range(256)) * 4,
    ],
    # whiteouts that name the directory itself, its parent, or aufs' metadata: no-ops
    "whiteout-dotdot": [
        [d("a"), f("a/keep", "keep\n")],
        [entry("a/.wh.."), entry(".wh.."), entry("a/.wh."), entry(".wh..wh.plnk")],
    ],
    "bomb-names": [[
        f("/".join(["n" * 200] * 25) + "/deep", "deep\n"),  # 5030 bytes > PATH_MAX
        f("m" * 300, "long component\n"),  # > NAME_MAX
    ]],
}


def blob(root, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = os.path.join(root, "blobs", "sha256", digest[7:])
    with open(path, "wb") as out:
        out.write(data)
    return {"digest": digest, "size": len(data)}


def write_image(name, layers):
    root = os.path.join(OUT, name)
    os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
    descs, diff_ids = [], []
    for i, entries in enumerate([BASE] + layers):
        raw = entries if isinstance(entries, bytes) else tar(entries)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        gz = raw if isinstance(entries, bytes) else gzip.compress(raw, mtime=0)
        if name == "truncated" and i == 1:
            gz = gz[: len(gz) // 2]  # the manifest names the truncated blob
        descs.append(dict(mediaType="application/vnd.oci.image.layer.v1.tar+gzip", **blob(root, gz)))
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/hello"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "hostile.py " + name}],
    }
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dict(mediaType="application/vnd.oci.image.config.v1+json",
                       **blob(root, json.dumps(config).encode())),
        "layers": descs,
    }
    index = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [dict(mediaType=manifest["mediaType"], **blob(root, json.dumps(manifest).encode()),
                           annotations={"org.opencontainers.image.ref.name": "latest"})],
    }
    with open(os.path.join(root, "index.json"), "w") as out:
        json.dump(index, out)
    with open(os.path.join(root, "oci-layout"), "w") as out:
        json.dump({"imageLayoutVersion": "1.0.0"}, out)


for n in sys.argv[3:] or ATTACKS:
    write_image(n, ATTACKS[n])
