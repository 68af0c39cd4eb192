#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A Docker-Hub-like token server for the tests (docker registry token auth spec).

token-server.py --tls-cert C --tls-key K --sign-key S --service SVC --issuer ISS
                --log FILE --port-file FILE

GET /token?service=SVC&scope=repository:NAME:ACTIONS (scope repeated or absent):
HTTP Basic alice:secret gets pull and push on every repository; anonymous gets pull
on every repository except private/*, where it gets an empty action list; any other
credentials get 401. Tokens live TOKEN_TTL seconds (default 60). Each issued token
adds "anonymous|alice SCOPE..." to the log. The port (picked by the kernel) is
written to the port file once the server listens.
"""
import argparse
import base64
import datetime
import hashlib
import json
import os
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization

USERS = {"alice": ("secret", {"pull", "push"})}
LOCK = threading.Lock()


def libtrust_kid(public_key):
    """docker/libtrust key ID: base32 of the first 240 bits of sha256(DER SPKI)."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))


class Handler(BaseHTTPRequestHandler):
    server_version = "d-utils-token-server"

    def log_message(self, fmt, *args):  # keep the test output clean
        pass

    def reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def user(self):
        """'anonymous', a user name, or None for bad credentials."""
        auth = self.headers.get("Authorization")
        if not auth:
            return "anonymous"
        kind, _, value = auth.partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            name, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None
        return name if USERS.get(name, (None,))[0] == password else None

    def do_GET(self):
        cfg = self.server.cfg
        url = urlsplit(self.path)
        if url.path != "/token":
            return self.reply(404, {"errors": [{"code": "NOT_FOUND"}]})
        query = parse_qs(url.query)
        user = self.user()
        if user is None:
            return self.reply(401, {"details": "incorrect username or password"},
                              [("WWW-Authenticate", 'Basic realm="d-utils test"')])
        scopes = [s for v in query.get("scope", []) for s in v.split(" ") if s]
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            wanted = set(actions.split(","))
            if user == "anonymous":
                allowed = set() if name.startswith("private/") else {"pull"}
            else:
                allowed = USERS[user][1]
            access.append({"type": "repository", "name": name,
                           "actions": sorted(wanted & allowed)})
        now = int(time.time())
        ttl = int(os.environ.get("TOKEN_TTL", "60"))
        claims = {"iss": cfg.issuer, "sub": "" if user == "anonymous" else user,
                  "aud": query.get("service", [cfg.service])[0], "exp": now + ttl,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        token = jwt.encode(claims, cfg.key, algorithm="ES256", headers={"kid": cfg.kid})
        with LOCK, open(cfg.log, "a") as log:
            log.write(" ".join([user] + scopes) + "\n")
        issued = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        self.reply(200, {"token": token, "access_token": token, "expires_in": ttl,
                         "issued_at": issued.strftime("%Y-%m-%dT%H:%M:%SZ")})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def finish_request(self, request, client_address):
        # TLS handshake in the connection's own thread, so a stuck client blocks no one.
        with self.ctx.wrap_socket(request, server_side=True) as conn:
            Handler(conn, client_address, self)

    def handle_error(self, request, client_address):
        pass  # clients that reject the certificate or hang up are part of the tests


def main():
    p = argparse.ArgumentParser()
    for opt in ("tls-cert", "tls-key", "sign-key", "service", "issuer", "log", "port-file"):
        p.add_argument("--" + opt, required=True)
    cfg = p.parse_args()
    with open(cfg.sign_key, "rb") as f:
        cfg.key = serialization.load_pem_private_key(f.read(), None)
    cfg.kid = libtrust_kid(cfg.key.public_key())
    server = Server(("127.0.0.1", 0), Handler)
    server.cfg = cfg
    server.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    with open(cfg.port_file + ".tmp", "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.rename(cfg.port_file + ".tmp", cfg.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
