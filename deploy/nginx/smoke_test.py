#!/usr/bin/env python3
"""Runs deploy/nginx/nginx.conf for real against two stubs and checks the forward-auth wiring.

    python3 deploy/nginx/smoke_test.py          # needs `nginx` (Debian: apt-get install nginx)

What runs, all on 127.0.0.1 with free ports, for a few seconds:
  - nginx, from nginx.conf with its placeholders replaced, in a temporary prefix;
  - a stub playing authgate: /oauth2/auth answers 202 + identity headers when the request
    carries the cookie `ok=1`, 401 otherwise (403 for /denied*, 503 for /broken*, 202
    without identity for /public*); /oauth2/start answers 200 so the proxying shows;
  - a stub app that answers every request with the method, path, headers and body length it
    received, as JSON.
It does not test authgate itself (no OIDC here): only that nginx asks the right question and
passes the right answer on. Prints one line per check, then `N passed, N failed`; exits 1 if
any check failed. Everything it started is stopped before it exits.
"""

import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
IDENTITY = {
    "Authorization": "Bearer stub-access-token",
    "X-Forwarded-User": "user-123",
    "X-Forwarded-Email": "alice@example.com",
    "X-Forwarded-Preferred-Username": "alice",
    "X-Forwarded-Groups": "admins,dev",
}


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []

    def add(self, item):
        with self.lock:
            self.requests.append(item)

    def clear(self):
        with self.lock:
            self.requests.clear()

    def all(self):
        with self.lock:
            return list(self.requests)


AUTH_SEEN = Recorder()
APP_SEEN = Recorder()
# Set to play "authgate is down": kept-alive connections from nginx are dropped unanswered
# (closing the listener alone would not stop them).
AUTH_DOWN = threading.Event()


class Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keepalive, as nginx's upstream blocks ask for

    def log_message(self, *args):
        pass

    def send(self, status, body=b"", headers=None, content_type="text/plain"):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


class AuthgateStub(Quiet):
    def do_GET(self):
        if AUTH_DOWN.is_set():
            self.close_connection = True
            return
        body = self.read_body()
        AUTH_SEEN.add({"method": self.command, "path": self.path,
                       "headers": dict(self.headers.items()), "body_len": len(body)})
        if self.path == "/oauth2/auth":
            uri = self.headers.get("X-Forwarded-Uri", "")
            cookies = [c.strip() for c in self.headers.get("Cookie", "").split(";")]
            if uri.startswith("/denied"):
                return self.send(403, b'{"error":"forbidden"}', content_type="application/json")
            if uri.startswith("/broken"):
                return self.send(503, b"idp down", {"Retry-After": "2"})
            if uri.startswith("/public"):
                return self.send(202)
            if "ok=1" in cookies:
                return self.send(202, headers=IDENTITY)
            return self.send(401, b'{"error":"unauthenticated","login_url":"/oauth2/start"}',
                             content_type="application/json")
        if self.path.startswith("/oauth2/"):
            return self.send(200, ("authgate stub: " + self.path).encode())
        return self.send(404, b"not an authgate path")

    do_HEAD = do_GET
    do_POST = do_GET


class AppStub(Quiet):
    def do_GET(self):
        body = self.read_body()
        seen = {"method": self.command, "path": self.path,
                "headers": dict(self.headers.items()), "body_len": len(body)}
        APP_SEEN.add(seen)
        self.send(200, json.dumps(seen).encode(), content_type="application/json")

    do_HEAD = do_GET
    do_POST = do_GET
    do_PUT = do_GET
    do_DELETE = do_GET


class StubServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # nginx closing its kept-alive upstream connections at exit is not an error.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def serve(handler, port=0):
    server = StubServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Client:
    def __init__(self, port):
        self.port = port

    def request(self, method, path, headers=None, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()


RESULTS = []


def check(name, condition, detail=""):
    RESULTS.append(bool(condition))
    print(("ok    " if condition else "FAIL  ") + name + ("" if condition else f"  -- {detail}"))


def lower_keys(headers):
    return {k.lower(): v for k, v in headers.items()}


def run_checks(c, auth_server):
    # 1. No session, browser navigation: 302 to the login start, rd = the original URI.
    APP_SEEN.clear()
    status, headers, _ = c.request("GET", "/some/page?x=1", {"Accept": "text/html"})
    check("no cookie: 302 to /oauth2/start?rd=<original uri>",
          status == 302 and headers.get("location") == "/oauth2/start?rd=/some/page?x=1",
          f"{status} {headers.get('location')}")
    check("no cookie: the app is never reached", not APP_SEEN.all(), APP_SEEN.all())

    status, headers, _ = c.request("HEAD", "/head/me")
    check("no cookie, HEAD: 302 as well",
          status == 302 and headers.get("location") == "/oauth2/start?rd=/head/me",
          f"{status} {headers.get('location')}")

    # 2. rd degrades safely when the URI holds characters nginx cannot escape.
    status, headers, _ = c.request("GET", "/a/b?x=1&y=2")
    check("rd with '&' in the query keeps only the path",
          status == 302 and headers.get("location") == "/oauth2/start?rd=/a/b",
          f"{status} {headers.get('location')}")
    status, headers, _ = c.request("GET", "/a%20b?q=1")
    check("rd with '%' in the path falls back to /",
          status == 302 and headers.get("location") == "/oauth2/start?rd=/",
          f"{status} {headers.get('location')}")

    # 3. No session, a POST: 401 JSON, no redirect, the app is not reached.
    APP_SEEN.clear()
    status, headers, body = c.request("POST", "/form", {"Content-Type": "text/plain"}, b"data")
    check("no cookie, POST: 401 JSON with login_url, no redirect",
          status == 401 and "location" not in headers
          and json.loads(body or b"{}").get("login_url") == "/oauth2/start?rd=/form"
          and headers.get("content-type", "").startswith("application/json"),
          f"{status} {headers} {body!r}")
    check("no cookie, POST: the app is never reached", not APP_SEEN.all(), APP_SEEN.all())

    # 4. Valid session: the app gets the bearer token and the identity headers.
    APP_SEEN.clear()
    status, _, body = c.request("GET", "/page?x=1", {
        "Cookie": "ok=1; authgate_session=secret-session; theme=dark",
        "X-Forwarded-User": "mallory",  # spoofing attempt, must be overwritten
    })
    seen = lower_keys(json.loads(body).get("headers", {})) if status == 200 else {}
    check("cookie: 200 from the app", status == 200, status)
    for name, value in IDENTITY.items():
        check(f"cookie: app receives {name}: {value}", seen.get(name.lower()) == value, seen.get(name.lower()))
    check("cookie: authgate's session cookie is not forwarded to the app, other cookies are",
          seen.get("cookie") == "ok=1; theme=dark", seen.get("cookie"))

    for sent, expected in [
        ("authgate_session=x; ok=1", "ok=1"),           # first
        ("ok=1; authgate_session=x", "ok=1"),           # last
        ("ok=1; xauthgate_session=y", "ok=1; xauthgate_session=y"),  # another cookie
        ("ok=1; authgate_session_login=l; authgate_session=x", "ok=1"),  # the login's too
    ]:
        status, _, body = c.request("GET", "/cookies", {"Cookie": sent})
        got = lower_keys(json.loads(body).get("headers", {})).get("cookie") if status == 200 else status
        check(f"cookie {sent!r} reaches the app as {expected!r}", got == expected, got)

    # 5. The auth subrequest: GET, no body, the original method and URI in the headers.
    AUTH_SEEN.clear()
    APP_SEEN.clear()
    status, _, body = c.request("POST", "/form?a=1", {"Cookie": "ok=1", "Content-Type": "text/plain"}, b"hello")
    auth = [r for r in AUTH_SEEN.all() if r["path"] == "/oauth2/auth"]
    h = lower_keys(auth[0]["headers"]) if auth else {}
    check("POST with cookie: reaches the app with its body",
          status == 200 and json.loads(body).get("body_len") == 5 and json.loads(body).get("method") == "POST",
          f"{status} {body[:200]!r}")
    check("subrequest: GET /oauth2/auth without a body",
          auth and auth[0]["method"] == "GET" and auth[0]["body_len"] == 0
          and "content-length" not in h, auth[:1])
    check("subrequest: X-Forwarded-Method / X-Forwarded-Uri / X-Original-URI describe the original",
          h.get("x-forwarded-method") == "POST" and h.get("x-forwarded-uri") == "/form?a=1"
          and h.get("x-original-uri") == "/form?a=1", h)
    check("subrequest: X-Forwarded-Host / X-Forwarded-Proto set, Cookie passed",
          h.get("x-forwarded-host") == "127.0.0.1" and h.get("x-forwarded-proto") == "http"
          and h.get("cookie") == "ok=1", h)

    # 6. Public route: authgate answers 202 without identity; forged headers are removed.
    APP_SEEN.clear()
    status, _, body = c.request("GET", "/public/x", {
        "Authorization": "Bearer forged", "X-Forwarded-User": "mallory",
        "X-Forwarded-Groups": "admins"})
    seen = lower_keys(json.loads(body).get("headers", {})) if status == 200 else {}
    check("public: 200, forged Authorization/X-Forwarded-* never reach the app",
          status == 200 and not {"authorization", "x-forwarded-user", "x-forwarded-groups"} & set(seen),
          f"{status} {seen}")

    # 7. Denied route: 403 passes through, the app is not reached.
    APP_SEEN.clear()
    status, _, _ = c.request("GET", "/denied/x", {"Cookie": "ok=1"})
    check("403 from authgate is answered 403", status == 403, status)
    check("403: the app is never reached", not APP_SEEN.all(), APP_SEEN.all())

    # 8. authgate answering 503: a retryable 503, not a 500.
    status, headers, _ = c.request("GET", "/broken", {"Cookie": "ok=1"})
    check("authgate 503 -> 503 with Retry-After", status == 503 and "retry-after" in headers,
          f"{status} {headers}")

    # 9. /oauth2/* goes to authgate; /oauth2/auth is not reachable from outside.
    status, _, body = c.request("GET", "/oauth2/start?rd=/x")
    check("/oauth2/start is proxied to authgate",
          status == 200 and body == b"authgate stub: /oauth2/start?rd=/x", f"{status} {body!r}")
    status, headers, body = c.request("GET", "/oauth2/auth", {"Cookie": "ok=1"})
    check("/oauth2/auth from outside: 404, never the token",
          status == 404 and "authorization" not in headers, f"{status} {headers}")

    # 10. authgate down: 503, not a 500.
    AUTH_DOWN.set()
    auth_server.shutdown()
    auth_server.server_close()
    status, headers, _ = c.request("GET", "/page", {"Cookie": "ok=1"})
    check("authgate unreachable -> 503 with Retry-After", status == 503 and "retry-after" in headers,
          f"{status} {headers}")


def main():
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not nginx:
        print("nginx not found (Debian: apt-get install nginx)")
        print("0 passed, 1 failed")
        return 1
    prefix = tempfile.mkdtemp(prefix="authgate-nginx-")
    auth_server = serve(AuthgateStub)
    app_server = serve(AppStub)
    listen_port = free_port()
    with open(os.path.join(HERE, "nginx.conf")) as f:
        conf = f.read()
    for placeholder, value in {
        "__LISTEN_PORT__": str(listen_port),
        "__AUTHGATE_PORT__": str(auth_server.server_address[1]),
        "__UPSTREAM_PORT__": str(app_server.server_address[1]),
        # the second app (location /billing/): the same stub serves here
        "__BILLING_PORT__": str(app_server.server_address[1]),
        "__PREFIX__": prefix,
    }.items():
        conf = conf.replace(placeholder, value)
    conf_path = os.path.join(prefix, "nginx.conf")
    with open(conf_path, "w") as f:
        f.write(conf)

    test = subprocess.run([nginx, "-t", "-c", conf_path, "-p", prefix + "/"],
                          capture_output=True, text=True)
    check("nginx -t accepts the configuration", test.returncode == 0, test.stderr.strip())
    proc = None
    try:
        if test.returncode == 0:
            proc = subprocess.Popen([nginx, "-c", conf_path, "-p", prefix + "/"],
                                    stdout=subprocess.DEVNULL, stderr=open(os.path.join(prefix, "stderr.log"), "w"))
            up = wait_listening(listen_port, proc)
            check("nginx starts and listens", up, "see " + os.path.join(prefix, "stderr.log"))
            if up:
                run_checks(Client(listen_port), auth_server)
    finally:
        if proc is not None:
            proc.terminate()  # master_process off: the one process is all there is
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        app_server.shutdown()
        app_server.server_close()
        try:
            auth_server.shutdown()
            auth_server.server_close()
        except Exception:
            pass
        failed = RESULTS.count(False)
        if failed:
            print("nginx stderr:\n" + open(os.path.join(prefix, "stderr.log")).read()
                  if os.path.exists(os.path.join(prefix, "stderr.log")) else "")
        shutil.rmtree(prefix, ignore_errors=True)
    passed = RESULTS.count(True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
