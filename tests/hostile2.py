#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""hostile2.py REGISTRY FIXTURES IMAGE...: build images for tests/25-security.t and push
each as sec/NAME:latest to https://REGISTRY (the CA is $SSL_CERT_FILE) through the
registry API, which takes what skopeo would refuse (2000 layers, huge files).

IMAGE is one of:
  config:NAME:JSON   busybox (FIXTURES/busybox) whose config object is updated with JSON
  opq-repeat:N       the opaque marker of /d N times, between N files the layer writes in /d
  opq-deep:N         a chain of N nested directories c/c/..., each with a marker, a file
                     "new" the layer writes and, below, a file "low" of the layer under it
  opq-siblings:N     N directories s0..sN-1, each with a marker and 4 files of the layer
  opq-root:N         the root's marker N times, between N files the layer writes in /
  zeros              one zstd layer: /zeros, a 4 GiB file of zeros
  tiny               one small layer: /tiny ("tiny\\n")
  dup:N              the tiny layer N times
  dupbad:N           the tiny layer N times, then a layer /second ("second\\n")
Every opq-* image has a lower layer with /d/low0..9, /sK/low, /c/.../low and /rootlow,
so the opaque markers have something to hide. Prints "NAME DIGEST..." for each image:
the digests of its layers, in order, each once.
"""
import gzip
import hashlib
import http.client
import io
import json
import os
import ssl
import subprocess
import sys
import tarfile
import threading
import urllib.parse

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
REGISTRY, FIXTURES = sys.argv[1], sys.argv[2]
CONN = http.client.HTTPSConnection(REGISTRY, context=ssl.create_default_context(
    cafile=os.environ["SSL_CERT_FILE"]))


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def call(method, path, body=None, headers=None, want=(200, 201, 202)):
    CONN.request(method, path, body=body, headers=headers or {})
    resp = CONN.getresponse()
    data = resp.read()
    if resp.status not in want:
        sys.exit("%s %s: HTTP %d %s" % (method, path, resp.status, data[:300]))
    return resp


def push_blob(repo, data):
    digest = sha256(data)
    if call("HEAD", "/v2/%s/blobs/%s" % (repo, digest), want=(200, 404)).status == 200:
        return digest
    loc = urllib.parse.urlsplit(call("POST", "/v2/%s/blobs/uploads/" % repo).getheader("Location"))
    path = loc.path + "?" + (loc.query + "&" if loc.query else "") + "digest=" + digest
    call("PUT", path, data, {"Content-Type": "application/octet-stream"})
    return digest


def push_image(name, layers, config):
    """layers: (media type, blob, diff_id); config: the image config's config object."""
    repo = "sec/" + name
    image = {"architecture": "amd64", "os": "linux", "config": config,
             "rootfs": {"type": "layers", "diff_ids": [diff for _, _, diff in layers]}}
    cfg = json.dumps(image).encode()
    descs, pushed = [], {}
    for media, blob, _ in layers:
        if id(blob) not in pushed:
            pushed[id(blob)] = push_blob(repo, blob)
        descs.append({"mediaType": media, "digest": pushed[id(blob)], "size": len(blob)})
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": push_blob(repo, cfg), "size": len(cfg)},
                "layers": descs}
    call("PUT", "/v2/%s/manifests/latest" % repo, json.dumps(manifest).encode(),
         {"Content-Type": OCI_MANIFEST})
    print(name, " ".join(dict.fromkeys(d["digest"] for d in descs)))


def entry(name, kind="file", data=b""):
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE if kind == "dir" else tarfile.REGTYPE
    ti.mode = 0o755 if kind == "dir" else 0o644
    ti.mtime = 1700000000
    ti.uname = ti.gname = "root"
    ti.size = len(data)
    return ti, data


def layer(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for ti, data in entries:
            t.addfile(ti, io.BytesIO(data) if data else None)
    raw = buf.getvalue()
    return GZIP, gzip.compress(raw, mtime=0), sha256(raw)


def busybox():
    """The busybox fixture's layer and config object."""
    blobs = os.path.join(FIXTURES, "busybox", "blobs", "sha256")

    def load(digest, parse=True):
        with open(os.path.join(blobs, digest.split(":")[1]), "rb") as f:
            return json.load(f) if parse else f.read()
    with open(os.path.join(FIXTURES, "busybox", "index.json")) as f:
        manifest = load(json.load(f)["manifests"][0]["digest"])
    config = load(manifest["config"]["digest"])
    desc = manifest["layers"][0]
    return (desc["mediaType"], load(desc["digest"], False), config["rootfs"]["diff_ids"][0]), config["config"]


def opaque(shape, n):
    """(lower layer, upper layer) entries for one shape of many opaque markers."""
    lower, upper = [entry("rootlow", data=b"low\n")], []
    if shape == "repeat":
        lower += [entry("d", "dir")] + [entry("d/low%d" % i, data=b"low\n") for i in range(10)]
        upper.append(entry("d", "dir"))
        for i in range(n):  # markers before, between and after the files
            upper += [entry("d/.wh..wh..opq"), entry("d/f%d" % i, data=b"%d\n" % i)]
        upper.append(entry("d/.wh..wh..opq"))
    elif shape == "deep":
        path = ""
        for _ in range(n):
            path += "c/"
            lower += [entry(path, "dir"), entry(path + "low", data=b"low\n")]
            upper += [entry(path, "dir"), entry(path + ".wh..wh..opq"), entry(path + "new", data=b"new\n")]
    elif shape == "siblings":
        for i in range(n):
            lower += [entry("s%d" % i, "dir"), entry("s%d/low" % i, data=b"low\n")]
            upper += [entry("s%d" % i, "dir")]
            upper += [entry("s%d/f%d" % (i, k), data=b"f\n") for k in range(2)]
            upper.append(entry("s%d/.wh..wh..opq" % i))
            upper += [entry("s%d/f%d" % (i, k), data=b"f\n") for k in range(2, 4)]
    elif shape == "root":
        for i in range(n):
            upper += [entry(".wh..wh..opq"), entry("f%d" % i, data=b"%d\n" % i)]
    return lower, upper


def zeros():
    """A zstd tar holding /zeros, 4 GiB of zeros: streamed through zstd, never in memory."""
    size = 4 << 30
    ti, _ = entry("zeros")
    ti.size = size
    zstd = subprocess.Popen(["zstd", "-q", "-c", "-T0"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    out = []
    reader = threading.Thread(target=lambda: out.append(zstd.stdout.read()))
    reader.start()
    diff = hashlib.sha256()
    chunk = bytes(1 << 20)
    for block in [ti.tobuf(tarfile.USTAR_FORMAT)] + [chunk] * (size >> 20) + [bytes(1024)]:
        diff.update(block)
        zstd.stdin.write(block)
    zstd.stdin.close()
    reader.join()
    if zstd.wait():
        sys.exit("zstd failed")
    return ZSTD, out[0], "sha256:" + diff.hexdigest()


def main():
    tiny = layer([entry("tiny", data=b"tiny\n")])
    for arg in sys.argv[3:]:
        kind, _, rest = arg.partition(":")
        if kind == "config":
            name, _, text = rest.partition(":")
            base, config = busybox()
            config.update(json.loads(text))
            push_image(name, [base], config)
        elif kind.startswith("opq-"):
            lower, upper = opaque(kind[4:], int(rest))
            push_image(kind, [layer(lower), layer(upper)], {"Cmd": ["sh"]})
        elif kind == "zeros":
            push_image(kind, [zeros()], {"Cmd": ["sh"]})
        elif kind == "tiny":
            push_image(kind, [tiny], {})
        elif kind == "dup":
            push_image(kind, [tiny] * int(rest), {})
        elif kind == "dupbad":
            push_image(kind, [tiny] * int(rest) + [layer([entry("second", data=b"second\n")])], {})
        else:
            sys.exit("unknown image " + arg)


main()
