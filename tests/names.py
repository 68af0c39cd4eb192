#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Layer names as bytes (tests/15-names.t).

  names.py build OUT      OCI image layouts OUT/main, OUT/nfd, OUT/gopax (tag latest)
  names.py expect NAME    the tree that image NAME describes, as `list` prints it
  names.py list ROOT      a listing of the tree under ROOT, names as raw bytes

Images (made with umoci init/new, layers added verbatim with `umoci raw add-layer`):
  main   1 PAX (Python's tarfile, UTF-8: path=/linkpath= records as Go's archive/tar
           writes them for any name that is not ASCII): NetLock_..._Főtanúsítvány.crt,
           a directory with a non-ASCII name and files in it, symlinks whose name and
           target are non-ASCII, hardlinks whose target is non-ASCII, a 4-byte character,
           a name over 100 bytes;
         2 GNU (no PAX at all, raw bytes in the header): Latin-1 names (caf\\xe9), a
           symlink and a hardlink whose targets are Latin-1, GNU long name and long link
           target with Latin-1 bytes, a Latin-1 name in the UTF-8 directory of layer 1, a
           hardlink to a layer-1 file, an NFD name as raw bytes, whiteouts and an opaque
           marker whose names are UTF-8 bytes;
         3 ustar: Latin-1 names, symlink and hardlink targets, a prefix/name split path;
         4 PAX with hdrcharset=BINARY (as Python and GNU tar write undecodable names):
           Latin-1 path= and linkpath= records.
  nfd    PAX (UTF-8) names in NFD (as macOS writes them) next to the same names in NFC.
  gopax  PAX path=/linkpath= records holding Latin-1 bytes without hdrcharset: what Go's
         archive/tar writes for a non-UTF-8 file name (docker build, docker commit).
"""
import hashlib
import io
import os
import subprocess
import sys
import tarfile

MTIME = 1700000000


def u(b):
    """bytes -> the str tarfile encodes back to exactly these bytes"""
    return b.decode("utf-8", "surrogateescape")


CERT = "etc/ssl/certs/NetLock_Arany_=Class_Gold=_Főtanúsítvány.crt".encode()
LONG_UTF8 = ("répertoire/" + "très-long-nom-" * 8 + "🙂.txt").encode()
LONG_LATIN1 = b"latin1/" + b"tr\xe8s-long-nom-" * 9 + b"\xe9"
USTAR_SPLIT = b"ustar/" + b"r\xe9pertoire-" * 9 + b"/fichier-\xe9"

# Each image: a list of (tar format, [(path bytes, kind, data or link target bytes)])
# kinds: dir, file, symlink, hardlink; format "gopax" is written by go_pax_tar below.
IMAGES = {
    "main": [
        (tarfile.PAX_FORMAT, [
            (b"etc", "dir", b""),
            (b"etc/ssl", "dir", b""),
            (b"etc/ssl/certs", "dir", b""),
            (CERT, "file", "NetLock Arany (Class Gold) Főtanúsítvány\n".encode()),
            (b"etc/ssl/certs/8f5e4ae3.0", "symlink", os.path.basename(CERT)),
            ("etc/ssl/certs/Főtanúsítvány.pem".encode(), "symlink", os.path.basename(CERT)),
            (b"cert-hardlink", "hardlink", CERT),
            ("répertoire".encode(), "dir", b""),
            ("répertoire/fichier-été.txt".encode(), "file", "été\n".encode()),
            ("répertoire/lien-été".encode(), "symlink", "fichier-été.txt".encode()),
            ("répertoire/dur-été".encode(), "hardlink", "répertoire/fichier-été.txt".encode()),
            ("répertoire/sous-répertoire-ü".encode(), "dir", b""),
            ("répertoire/sous-répertoire-ü/日本語.txt".encode(), "file", b"nihongo\n"),
            ("lien-absolu-ß".encode(), "symlink", "/répertoire/sous-répertoire-ü".encode()),
            ("🙂.txt".encode(), "file", b"smile\n"),
            (LONG_UTF8, "file", b"long\n"),
            ("à-effacer".encode(), "file", b"whited out by layer 2\n"),
            ("supprimé".encode(), "dir", b""),
            ("supprimé/contenu".encode(), "file", b"whited out by layer 2\n"),
            ("opaque-é".encode(), "dir", b""),
            ("opaque-é/ancien".encode(), "file", b"hidden by layer 2's opaque marker\n"),
        ]),
        (tarfile.GNU_FORMAT, [
            (b"latin1", "dir", b""),
            (b"latin1/caf\xe9", "file", b"caf\xe9\n"),
            (b"latin1/na\xefve", "symlink", b"caf\xe9"),
            (b"latin1/dur-\xe0", "hardlink", b"latin1/caf\xe9"),
            (LONG_LATIN1, "file", b"long latin1\n"),
            (b"latin1/lien-long", "symlink", b"../" + LONG_LATIN1),
            ("répertoire/caf".encode() + b"\xe9", "file", b"latin1 in a utf-8 directory\n"),
            ("répertoire/dur-".encode() + b"\xe9", "hardlink",
             "répertoire/fichier-été.txt".encode()),
            ("nfd-cafe\u0301-gnu".encode(), "file", b"nfd bytes in a GNU header\n"),
            (".wh.à-effacer".encode(), "file", b""),
            (".wh.supprimé".encode(), "file", b""),
            ("opaque-é".encode(), "dir", b""),
            ("opaque-é/.wh..wh..opq".encode(), "file", b""),
            ("opaque-é/nouveau-ü".encode(), "file", b"new\n"),
        ]),
        (tarfile.USTAR_FORMAT, [
            (b"ustar", "dir", b""),
            (b"ustar/\xe9t\xe9", "file", b"ustar latin1\n"),
            (b"ustar/lien-\xe9", "symlink", b"\xe9t\xe9"),
            (b"ustar/dur-\xe9", "hardlink", b"ustar/\xe9t\xe9"),
            (os.path.dirname(USTAR_SPLIT), "dir", b""),
            (USTAR_SPLIT, "file", b"prefix and name\n"),
        ]),
        (tarfile.PAX_FORMAT, [
            (b"binary", "dir", b""),
            (b"binary/\xe9t\xe9", "file", b"hdrcharset=BINARY\n"),
            (b"binary/lien-\xe9", "symlink", b"\xe9t\xe9"),
            (b"binary/dur-\xe9", "hardlink", b"binary/\xe9t\xe9"),
        ]),
    ],
    "nfd": [
        (tarfile.PAX_FORMAT, [
            ("café.txt".encode(), "file", b"nfc\n"),
            ("cafe\u0301.txt".encode(), "file", b"nfd\n"),
            ("re\u0301pertoire".encode(), "dir", b""),
            ("re\u0301pertoire/fichier".encode(), "file", b"in an nfd directory\n"),
            ("lien-e\u0301".encode(), "symlink", "cafe\u0301.txt".encode()),
            (b"dur-nfd", "hardlink", "cafe\u0301.txt".encode()),
        ]),
    ],
    "gopax": [
        ("gopax", [
            (b"r\xe9p", "dir", b""),
            (b"r\xe9p/caf\xe9", "file", b"go pax latin1\n"),
            (b"r\xe9p/lien-\xe9", "symlink", b"caf\xe9"),
            (b"r\xe9p/dur-\xe9", "hardlink", b"r\xe9p/caf\xe9"),
            (b"plain.txt", "file", b"ascii\n"),
        ]),
    ],
}


def tarinfo(name, kind, data):
    ti = tarfile.TarInfo(u(name) + ("/" if kind == "dir" else ""))
    ti.type = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE,
               "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
    ti.mode = 0o755 if kind == "dir" else 0o644
    ti.mtime = MTIME
    ti.uname = ti.gname = "root"
    if kind in ("symlink", "hardlink"):
        ti.linkname = u(data)
    elif kind == "file":
        ti.size = len(data)
    return ti


def python_tar(fmt, entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8",
                      errors="surrogateescape") as t:
        for name, kind, data in entries:
            t.addfile(tarinfo(name, kind, data), io.BytesIO(data) if kind == "file" else None)
    return buf.getvalue()


def ustar_block(name, typeflag, size=0, link=b""):
    h = bytearray(512)
    for off, val in [(0, name), (100, b"%07o" % (0o755 if typeflag == b"5" else 0o644)),
                     (108, b"0000000"), (116, b"0000000"), (124, b"%011o" % size),
                     (136, b"%011o" % MTIME), (156, typeflag), (157, link),
                     (257, b"ustar\x0000"), (265, b"root"), (297, b"root")]:
        h[off:off + len(val)] = val
    h[148:156] = b" " * 8
    h[148:155] = b"%06o\x00" % sum(h)
    return bytes(h)


def pad(data):
    return data + b"\0" * (-len(data) % 512)


def pax_record(key, value):
    rec = b" %s=%s\n" % (key, value)
    n = len(rec)
    while len(b"%d" % n) + len(rec) != n:
        n += 1
    return b"%d" % n + rec


def go_pax_tar(entries):
    """As Go's archive/tar: any non-ASCII path or linkpath goes into a PAX record, bytes as
    they are, no hdrcharset; the ustar fields keep only the ASCII characters."""
    out = b""
    ascii_only = lambda b: bytes(c for c in b if c < 128)
    for name, kind, data in entries:
        link = data if kind in ("symlink", "hardlink") else b""
        name += b"/" if kind == "dir" else b""
        records = b""
        if not name.isascii():
            records += pax_record(b"path", name)
        if not link.isascii():
            records += pax_record(b"linkpath", link)
        if records:
            out += ustar_block(b"PaxHeaders.0/" + ascii_only(name)[-80:], b"x", len(records))
            out += pad(records)
        typeflag = {"dir": b"5", "file": b"0", "symlink": b"2", "hardlink": b"1"}[kind]
        size = len(data) if kind == "file" else 0
        out += ustar_block(ascii_only(name), typeflag, size, ascii_only(link))
        out += pad(data) if kind == "file" else b""
    return out + b"\0" * 1024


def build(out):
    for image, layers in IMAGES.items():
        layout = os.path.join(out, image)
        subprocess.run(["umoci", "init", "--layout", layout], check=True)
        subprocess.run(["umoci", "new", "--image", layout + ":latest"], check=True)
        for i, (fmt, entries) in enumerate(layers):
            path = os.path.join(out, "%s-layer%d.tar" % (image, i + 1))
            with open(path, "wb") as f:
                f.write(go_pax_tar(entries) if fmt == "gopax" else python_tar(fmt, entries))
            subprocess.run(["umoci", "raw", "add-layer", "--image", layout + ":latest",
                            "--history.comment", "tests/names.py %s layer %d" % (image, i + 1),
                            path], check=True)


def esc(b):
    return "".join(chr(c) if 0x21 <= c <= 0x7e and c != 0x5c else "\\x%02x" % c for c in b)


def line(path, kind, arg, ino=None):
    if kind == "dir":
        return "%s dir" % esc(path)
    if kind == "symlink":
        return "%s symlink -> %s" % (esc(path), esc(arg))
    return "%s file ino%d %s" % (esc(path), ino, esc(arg))


def listing(entries):
    """entries: [(path, kind, data or target, inode key)] -> the lines, sorted by bytes"""
    inodes, lines = {}, []
    for path, kind, arg, key in sorted(entries):
        ino = inodes.setdefault(key, len(inodes) + 1) if kind == "file" else None
        lines.append(line(path, kind, arg, ino))
    return "".join(l + "\n" for l in lines)


def expect(image):
    """Apply the image's layers as docker does, for the simple cases used here."""
    tree = {}  # path -> [kind, data or target, inode key]
    for _, entries in IMAGES[image]:
        written = set()
        for name, kind, data in entries:
            base = os.path.basename(name)
            parent = os.path.dirname(name)
            if base == b".wh..wh..opq":
                for p in list(tree):
                    if p.startswith(parent + b"/") and p not in written:
                        del tree[p]
                continue
            if base.startswith(b".wh."):
                gone = os.path.join(parent, base[4:])
                for p in list(tree):
                    if p == gone or p.startswith(gone + b"/"):
                        del tree[p]
                continue
            if kind == "hardlink":
                tree[name] = tree[data]  # the same list: one inode
            elif kind == "file":
                tree[name] = ["file", data, name]
            elif kind != "dir" or tree.get(name, [None])[0] != "dir":
                tree[name] = [kind, data, name]
            written.add(name)
    return listing((p, k, a, key) for p, (k, a, key) in tree.items())


def list_tree(root):
    root = os.fsencode(root)
    entries = []
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if os.path.islink(path):
                entries.append((rel, "symlink", os.readlink(path), None))
            elif os.path.isdir(path):
                entries.append((rel, "dir", b"", None))
            else:
                with open(path, "rb") as f:
                    entries.append((rel, "file", f.read(), (st.st_dev, st.st_ino)))
    return listing(entries)


def main():
    cmd, arg = sys.argv[1:3]
    if cmd == "build":
        build(arg)
    elif cmd == "expect":
        sys.stdout.write(expect(arg))
    elif cmd == "list":
        sys.stdout.write(list_tree(arg))
    else:
        sys.exit("usage: names.py build OUT | expect NAME | list ROOT")


if __name__ == "__main__":
    main()
