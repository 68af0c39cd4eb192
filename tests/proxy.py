#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A fault-injecting HTTP(S) server for the tests: a reverse proxy in front of a real
registry, or a hostile server of its own, that logs every request with all its headers.

proxy.py --port-file FILE --log FILE [--answers FILE] [--tls-cert C --tls-key K]
         [--upstream URL] [--rules FILE] [--rule JSON]...

Each request takes the first rule that matches it, else the default: forward to
--upstream (its CA is $SSL_CERT_FILE), or 404 without one. A rule is a JSON object:

  match: "REGEX"       searched in the path (with its query); default: any path
  method: "GET"        default: any method
  has_header / lacks_header: "NAME"   the request has (lacks) that header
  times: N             the rule applies to its first N matching requests only
  delay: SECONDS       sleep before acting (a stall)
  action:
    "forward"  (default) to --upstream, with the request's headers (Range too) but for
               the hop-by-hop ones, and back the upstream's status and headers (a 206
               with its Content-Range); "rewrite": ["REGEX", "REPL"] changes the path
               first; "strip": ["NAME"...] request headers not forwarded (a server that
               ignores Range); "cut_after": N sends the headers and N bytes of the body,
               then drops the connection; "stall_after": N with "stall": SECONDS sleeps
               in the middle of the body; "corrupt_at": N inverts the body's byte N
    "respond"  "status" (default 200), "headers" {NAME: VALUE}, "body" (text) or
               "body_file" (sent as is); "cut_after", "stall_after" and "corrupt_at"
               as for "forward"
    "redirect" "status" (default 307) with "location"
    "drop"     close the connection without an answer

In every string of a rule, {self} is this server's 127.0.0.1:PORT, {scheme} http or
https, {path} the request's path. The log is one JSON object a line:
{"method", "path", "headers": [[NAME, VALUE]...], "rule": INDEX or null}, written
before the rule acts. --answers logs, one JSON object a line, what was answered:
{"method", "path", "range": the request's Range header or null, "status" (null when
nothing was: "drop", or the upstream failed), "headers": [[NAME, VALUE]...], "body":
how many bytes of the body are sent before a cut or a stall, "cut": true or "stall":
SECONDS when that happens}. It is written before the status line goes out, so a client
that has seen an answer's end finds it there.
"""
import argparse
import http.client
import json
import os
import re
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as registries do: every answer has a length
    server_version = "d-utils-test-proxy"

    def log_message(self, fmt, *args):
        pass

    def fill(self, value):
        """{self}, {scheme} and {path} in the strings of a rule."""
        if isinstance(value, str):
            srv = self.server
            return (value.replace("{self}", "127.0.0.1:%d" % srv.server_address[1])
                    .replace("{scheme}", "https" if srv.ctx else "http")
                    .replace("{path}", self.path))
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        return value

    def pick_rule(self):
        for i, rule in enumerate(self.server.rules):
            if rule.get("method", self.command) != self.command:
                continue
            if not re.search(rule.get("match", ""), self.path):
                continue
            if "has_header" in rule and rule["has_header"] not in self.headers:
                continue
            if "lacks_header" in rule and rule["lacks_header"] in self.headers:
                continue
            with LOCK:
                used = self.server.used.get(i, 0)
                if used >= rule.get("times", float("inf")):
                    continue
                self.server.used[i] = used + 1
            return i, self.fill(rule)
        return None, {}

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        index, rule = self.pick_rule()
        with LOCK, open(self.server.cfg.log, "a") as log:
            log.write(json.dumps({"method": self.command, "path": self.path,
                                  "headers": list(self.headers.items()), "rule": index}) + "\n")
        time.sleep(rule.get("delay", 0))
        action = rule.get("action", "forward")
        if action == "drop":
            self.log_answer(None, [], 0, rule)
            self.close_connection = True
        elif action == "redirect":
            self.answer(rule.get("status", 307), {"Location": rule["location"]}, b"")
        elif action == "respond":
            data = rule.get("body", "").encode()
            if "body_file" in rule:
                with open(rule["body_file"], "rb") as f:
                    data = f.read()
            self.answer(rule.get("status", 200), rule.get("headers", {}), data, rule)
        elif self.server.cfg.upstream:
            self.forward(rule, body)
        else:
            self.answer(404, {"Content-Type": "application/json"}, b'{"errors": []}')

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    def forward(self, rule, body):
        up = urllib.parse.urlsplit(self.server.cfg.upstream)
        if up.scheme == "https":
            conn = http.client.HTTPSConnection(up.netloc, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(up.netloc)
        path = self.path
        if "rewrite" in rule:
            path = re.sub(rule["rewrite"][0], rule["rewrite"][1], path)
        strip = HOP | {"host"} | {h.lower() for h in rule.get("strip", [])}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in strip}
        headers["Host"] = up.netloc
        try:
            conn.request(self.command, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            try:
                data = resp.read()
            except http.client.IncompleteRead as e:
                # docker-registry 2.8's 416 says Content-Length: SIZE over a short text
                data = e.partial
        except (OSError, http.client.HTTPException):
            self.log_answer(None, [], 0, rule)
            self.close_connection = True  # as the upstream did
            return
        finally:
            conn.close()
        # a HEAD answer keeps the upstream's length: that of the body a GET would get
        drop = HOP if self.command == "HEAD" else HOP | {"content-length"}
        out = [(k, v) for k, v in resp.getheaders() if k.lower() not in drop]
        self.answer(resp.status, out, data, rule)

    def answer(self, status, headers, data, rule=None):
        """status, headers (a dict or pairs) and data, cut or stalled as the rule says."""
        rule = rule or {}
        headers = list(headers.items() if isinstance(headers, dict) else headers)
        if "corrupt_at" in rule and rule["corrupt_at"] < len(data):
            n = rule["corrupt_at"]
            data = data[:n] + bytes([data[n] ^ 0xFF]) + data[n + 1:]
        if not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("Content-Length", str(len(data))))
        sent = 0 if self.command == "HEAD" else len(data)
        for key in "cut_after", "stall_after":
            sent = min(sent, rule.get(key, sent))
        self.log_answer(status, headers, sent, rule)
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        if "cut_after" in rule:
            self.wfile.write(data[:rule["cut_after"]])
            self.wfile.flush()
            self.close_connection = True
            return
        if "stall_after" in rule:
            self.wfile.write(data[:rule["stall_after"]])
            self.wfile.flush()
            time.sleep(rule.get("stall", 0))
            data = data[rule["stall_after"]:]
        self.wfile.write(data)

    def log_answer(self, status, headers, sent, rule):
        if not self.server.cfg.answers:
            return
        entry = {"method": self.command, "path": self.path, "range": self.headers.get("Range"),
                 "status": status, "headers": headers, "body": sent}
        if "cut_after" in rule:
            entry["cut"] = True
        elif "stall_after" in rule:
            entry["stall"] = rule.get("stall", 0)
        with LOCK, open(self.server.cfg.answers, "a") as log:
            log.write(json.dumps(entry) + "\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def finish_request(self, request, client_address):
        if not self.ctx:
            return Handler(request, client_address, self)
        # TLS handshake in the connection's own thread, so a stuck client blocks no one.
        with self.ctx.wrap_socket(request, server_side=True) as conn:
            Handler(conn, client_address, self)

    def handle_error(self, request, client_address):
        pass  # clients that hang up are part of the tests


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--answers", help="a log of the answers")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--upstream")
    p.add_argument("--rules", help="a JSON file: a list of rules")
    p.add_argument("--rule", action="append", default=[], help="one rule, as JSON")
    cfg = p.parse_args()
    rules = []
    if cfg.rules:
        with open(cfg.rules) as f:
            rules = json.load(f)
    rules += [json.loads(r) for r in cfg.rule]
    server = Server(("127.0.0.1", 0), Handler)
    server.cfg, server.rules, server.used, server.ctx = cfg, rules, {}, None
    if cfg.tls_cert:
        server.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    for log in cfg.log, cfg.answers:
        if log:
            open(log, "a").close()
    with open(cfg.port_file + ".tmp", "w") as f:
        f.write("%d\n" % server.server_address[1])
    # the port file appears whole, once the server listens
    os.rename(cfg.port_file + ".tmp", cfg.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
