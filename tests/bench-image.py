#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Build a benchmark image: bench-image.py [--layers N --size MB] OUTDIR

OUTDIR becomes an OCI image layout (tag "latest") of a big linux/amd64 image made from
trees of this machine's /usr, in tar+gzip layers (gzip level 6, as docker and Go's
DefaultCompression write them). The layers hold real files (headers, man pages, docs,
Python, icons), so they compress like real images do. OUTDIR/stats.json says what was
built. Built in OUTDIR.tmp, renamed at the end, so a failed build leaves nothing behind.

Without options: the "big" image, one layer per group of trees in LAYERS (about 500 MB and
60 000 entries here) and a last small "cleanup" layer with whiteouts and an opaque directory,
as real images have.

With --layers N --size MB: an image of the scaling series, N layers of about equal size. Files
and symlinks of the same trees are drawn in an order fixed by a hash of their names until they
make MB MiB of tar (when this machine's trees hold less, they are drawn again under copy1/,
copy2/...), put back in tree order and cut into N runs of consecutive entries; each layer also
holds the parent directories of its entries, so the tar is somewhat larger than MB (stats.json
has the real size). So 100 MB and 1 GB hold the same mix of trees, and the same MB in 1, 8 or
32 layers is the same files.
"""
import argparse
import gzip
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import stat
import sys
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MTIME = 1700000000

# One list of /usr trees per layer; trees missing on this machine are skipped, and the
# totals are checked at the end against the benchmark's minimums.
LAYERS = [
    ["usr/share/man", "usr/share/zoneinfo", "usr/share/mime"],
    ["usr/include"],
    ["usr/share/doc"],
    ["usr/lib/python3.11", "usr/lib/python3"],
    ["usr/share/vim"],
    ["usr/share/icons", "usr/share/cmake-3.25"],
    ["usr/share/i18n", "usr/share/perl", "usr/lib/x86_64-linux-gnu/perl"],
]
MIN_BYTES, MIN_FILES, MIN_LAYERS = 300 << 20, 20000, 8


class Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what goes through it to `out`."""

    def __init__(self, out):
        super().__init__()
        self.out, self.hash, self.size = out, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, b):
        self.hash.update(b)
        self.size += len(b)
        return self.out.write(b)


def owned_by_root(ti):
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.mtime = int(ti.mtime)  # a float mtime would cost a pax header per entry
    return ti


def write_layer(blobs, n, fill):
    """Writes layer n with fill(tar); returns (descriptor, diff_id, uncompressed bytes, entries)."""
    tmp = os.path.join(blobs, f".layer{n}")
    with open(tmp, "wb") as f:
        compressed = Hashing(f)
        gz = gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=6, mtime=0)
        plain = Hashing(gz)
        with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            entries = fill(tar)
        gz.close()
    digest = "sha256:" + compressed.hash.hexdigest()
    os.rename(tmp, os.path.join(blobs, digest[7:]))
    desc = {"mediaType": OCI_GZIP, "digest": digest, "size": compressed.size}
    return desc, "sha256:" + plain.hash.hexdigest(), plain.size, entries


def add_parents(tar, path, seen, prefix=""):
    """Adds the directories above `path` that the tar does not hold yet, as they are on this
    machine under `prefix` (copyK/usr is /usr, copyK itself /)."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        d = "/".join(parts[:i])
        if d not in seen:
            seen.add(d)
            source = "/" + d[len(prefix):] if d.startswith(prefix) and d != prefix[:-1] else "/"
            tar.add(source, arcname=d, recursive=False, filter=owned_by_root)


def tree_layer(args):
    blobs, n, trees = args

    def fill(tar):
        seen, count = set(), 0
        for t in trees:
            if not os.path.isdir("/" + t):
                continue
            add_parents(tar, t, seen)
            tar.add("/" + t, arcname=t, filter=owned_by_root)
            count += 1 + sum(len(ds) + len(fs) for _, ds, fs in os.walk("/" + t))
        return count

    return write_layer(blobs, n, fill)


def cleanup_layer(blobs, n):
    """What `rm -rf /usr/share/doc/* && apt-get clean` style steps leave: whiteouts for some
    lower files and directories, an opaque directory with one new file."""

    def entry(tar, name, kind=tarfile.REGTYPE, data=b""):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mtime, ti.size = kind, MTIME, len(data)
        ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        tar.addfile(ti, io.BytesIO(data) if data else None)

    def fill(tar):
        for d in ("usr/", "usr/share/", "usr/share/doc/", "usr/include/"):
            entry(tar, d, tarfile.DIRTYPE)
        docs = sorted(os.listdir("/usr/share/doc"))[:200] if os.path.isdir("/usr/share/doc") else []
        for d in docs:
            entry(tar, f"usr/share/doc/.wh.{d}")
        entry(tar, "usr/include/.wh..wh..opq")
        entry(tar, "usr/include/README", data=b"headers removed by the last layer\n")
        return len(docs) + 6

    return write_layer(blobs, n, fill)


def tree_entries():
    """(path, tar bytes) of every file and symlink of the LAYERS trees, names sorted. The
    bytes are a header and the data in 512-byte blocks, as tar writes them (PAX records for
    long names aside). Directories come with what they hold (add_parents)."""
    found = []
    for t in (t for trees in LAYERS for t in trees):
        if not os.path.isdir("/" + t):
            continue
        for top, dirs, files in os.walk("/" + t):
            dirs.sort()
            # os.walk lists a symlink to a directory with the directories, and skips it
            for f in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
                path = os.path.join(top, f)
                st = os.lstat(path)
                data = st.st_size if stat.S_ISREG(st.st_mode) else 0
                found.append((path, 512 + (data + 511) // 512 * 512))
    return found


def take(entries, size):
    """A sample of the entries that holds `size` bytes, in the order of `entries`, as (path,
    prefix, bytes). Entries are drawn in an order fixed by a hash of their names, so that any
    size has the same mix of trees; the trees again under the prefix copyK/ while too few."""
    drawn = sorted(range(len(entries)), key=lambda i: hashlib.sha1(entries[i][0].encode()).digest())
    taken, total, k = [], 0, 0
    while total < size:
        for i in drawn:
            if total >= size:
                break
            taken.append((k, i))
            total += entries[i][1]
        k += 1
    return [(entries[i][0], f"copy{k}/" if k else "", entries[i][1]) for k, i in sorted(taken)]


def scale_layer(args):
    blobs, n, run = args

    def fill(tar):
        seen = set()
        for path, prefix, _ in run:
            arc = prefix + path[1:]
            add_parents(tar, arc, seen, prefix)
            tar.add(path, arcname=arc, recursive=False, filter=owned_by_root)
        return len(run)

    return write_layer(blobs, n, fill)


def scale_layers(blobs, count, size, pool):
    entries = tree_entries()
    if not entries:
        sys.exit("bench-image.py: none of the trees of LAYERS is on this machine")
    taken = take(entries, size)
    total = sum(n for _, _, n in taken)
    runs, start, acc = [], 0, 0
    for i, (_, _, n) in enumerate(taken):
        acc += n
        if acc * count >= total * (len(runs) + 1) and len(runs) < count - 1:
            runs.append(taken[start : i + 1])
            start = i + 1
    runs.append(taken[start:])
    if len(runs) != count or not all(runs):
        sys.exit(f"bench-image.py: cannot cut {len(taken)} entries into {count} layers")
    return pool.map(scale_layer, [(blobs, i, r) for i, r in enumerate(runs)], chunksize=1)


def write_blob(blobs, obj, media_type):
    data = json.dumps(obj, indent=2).encode() + b"\n"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest[7:]), "wb") as f:
        f.write(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def main():
    ap = argparse.ArgumentParser(usage="bench-image.py [--layers N --size MB] OUTDIR")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--size", type=int, help="MiB of tar in all layers")
    ap.add_argument("outdir")
    args = ap.parse_args()
    if (args.layers is None) != (args.size is None) or min(args.layers or 1, args.size or 1) < 1:
        ap.error("--layers N and --size MB go together, both at least 1")
    out = args.outdir
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    blobs = os.path.join(tmp, "blobs", "sha256")
    os.makedirs(blobs)
    with multiprocessing.Pool(os.cpu_count()) as pool:
        if args.layers:
            layers = scale_layers(blobs, args.layers, args.size << 20, pool)
        else:
            jobs = [(blobs, i, t) for i, t in enumerate(LAYERS)]
            layers = pool.map(tree_layer, jobs, chunksize=1)
            layers.append(cleanup_layer(blobs, len(layers)))
    stats = {
        "layers": len(layers),
        "bytes": sum(l[2] for l in layers),
        "compressed": sum(l[0]["size"] for l in layers),
        "entries": sum(l[3] for l in layers),
    }
    if not args.layers and (stats["bytes"] < MIN_BYTES or stats["entries"] < MIN_FILES
                            or stats["layers"] < MIN_LAYERS):
        sys.exit(f"bench-image.py: too small an image on this machine: {stats}")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [l[1] for l in layers]},
        "history": [{"created_by": f"bench layer {i}"} for i in range(len(layers))],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": write_blob(blobs, config, OCI_CONFIG),
        "layers": [l[0] for l in layers],
    }
    desc = write_blob(blobs, manifest, OCI_MANIFEST)
    desc["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    with open(os.path.join(tmp, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(tmp, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [desc]}, f)
    with open(os.path.join(tmp, "stats.json"), "w") as f:
        json.dump(stats, f)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
