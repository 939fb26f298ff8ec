"""Request edges against the real server: body limits before any read, admin auth before the body,
text that cannot be stored, response timeouts, and Sanic's own error pages — all in our envelope.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, Server
from tests.replay import ReplayUpstream

StartServer = Callable[..., Server]
INVALIDATE = "/api/admin/cache/invalidate"
TEN_MB = 10 * 1024 * 1024


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def exchange(port: int, head: bytes, body_bytes: int = 0, timeout_s: float = 10) -> tuple[int, dict, bytes]:
    """Send ``head`` then (from a thread) up to ``body_bytes`` of body; return status, headers, body."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(timeout_s)
    sock.sendall(head)

    def pump() -> None:
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < body_bytes:
                sent += sock.send(chunk[: body_bytes - sent])
        except OSError:
            pass  # the server answered and closed: it did not want the rest

    sender = threading.Thread(target=pump, daemon=True)
    sender.start()
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
        head_part, _, rest = data.partition(b"\r\n\r\n")
        lines = head_part.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            more = sock.recv(65536)
            if not more:
                break
            rest += more
    finally:
        sock.close()
    return int(lines[0].split()[1]), headers, rest


def post_head(path: str, length: int, token: str | None = None, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def envelope(body: bytes, code: str) -> dict:
    doc = json.loads(body)
    assert doc["success"] is False and doc["code"] == code and isinstance(doc["error"], str) and doc["error"], doc
    assert set(doc) == {"success", "error", "code"}
    return doc


def test_big_bodies_get_413_before_they_are_read(start_server: StartServer) -> None:
    server = start_server("--no-jobs")
    pid = server.proc.pid  # one worker: the server process itself
    before = rss_kib(pid)
    results: list[tuple[int, dict, bytes, float]] = []

    def one(token: str | None) -> None:
        t0 = time.monotonic()
        status, headers, body = exchange(server.port, post_head(INVALIDATE, TEN_MB, token), TEN_MB)
        results.append((status, headers, body, time.monotonic() - t0))

    threads = [threading.Thread(target=one, args=(token,)) for token in (None, ADMIN_TOKEN, None, ADMIN_TOKEN)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    after = rss_kib(pid)
    print(f"\n[measure] four 10 MB bodies: 413 in {max(r[3] for r in results):.2f} s at most; "
          f"server RSS {before / 1024:.0f} MB -> {after / 1024:.0f} MB")
    assert len(results) == 4
    for status, _, body, elapsed in results:
        assert status == 413 and elapsed < 2, (status, body, elapsed)
        envelope(body, "payload_too_large")
    assert after - before < 8 * 1024, (before, after)  # KiB: nothing close to a 10 MB body was buffered
    assert server.client.get("/health").status_code == 200
    assert server.stop() == 0


def test_chunked_body_over_the_limit_gets_413(start_server: StartServer) -> None:
    server = start_server("--no-jobs", env={"CHESSSTATS_SERVER_MAX_BODY_BYTES": "2048"})
    head = (f"POST {INVALIDATE} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b"1000\r\n" + b"x" * 4096 + b"\r\n"
    status, _, body = exchange(server.port, head + chunk * 4)
    assert status == 413
    envelope(body, "payload_too_large")
    response = server.admin("POST", INVALIDATE, json={"key": "x" * 1000})  # under the limit: served
    assert response.status_code == 200 and response.json()["data"] == {"invalidated": 0}


def test_admin_token_checked_before_the_body_is_read(start_server: StartServer) -> None:
    """The body is announced but never sent: the 401 must not wait for it."""
    server = start_server("--no-jobs")
    for path in (INVALIDATE, "/api/admin/jobs/cleanup/run", "/api/admin/cache/clear"):
        t0 = time.monotonic()
        status, _, body = exchange(server.port, post_head(path, 1000), timeout_s=5)
        assert status == 401 and time.monotonic() - t0 < 2, (path, status)
        envelope(body, "unauthorized")


@pytest.mark.parametrize("field", ["key", "pattern"])
def test_lone_surrogate_is_a_bad_request(start_server: StartServer, field: str) -> None:
    server = start_server("--no-jobs")
    value = "tournament:\\ud800" + ("*" if field == "pattern" else "")
    headers = {"content-type": "application/json", "authorization": f"Bearer {ADMIN_TOKEN}"}
    response = server.client.post(INVALIDATE, content=f'{{"{field}": "{value}"}}'.encode(), headers=headers)
    assert response.status_code == 400, response.text
    assert "surrogate" in envelope(response.content, "bad_request")["error"]
    assert "Traceback" not in server.log()


def test_response_timeout_answers_upstream_busy(start_server: StartServer, upstream: ReplayUpstream) -> None:
    server = start_server("--workers", "2", "--no-jobs", env={"CHESSSTATS_SERVER_RESPONSE_TIMEOUT_S": "1"})
    upstream.set_fault(r"/api/tournament/", "slow", seconds=5)
    answers: list[httpx.Response] = []

    def call() -> None:
        answers.append(httpx.get(server.url + "/api/tournaments/sH24g2zH", timeout=20))

    t0 = time.monotonic()
    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    elapsed = time.monotonic() - t0
    assert len(answers) == 3 and elapsed < 4, elapsed
    for response in answers:
        assert response.status_code == 503 and response.headers["retry-after"].isdigit()
        doc = envelope(response.content, "upstream_busy")
        assert doc["error"] == "the answer took too long; try again"
    time.sleep(0.3)
    log = server.log()
    assert log.count("GET /api/tournaments/sH24g2zH -> 503: no answer within 1.0 s") == 3, log
    assert "Traceback" not in log
    assert server.stop() == 0


def test_sanic_pages_come_in_our_envelope(start_server: StartServer) -> None:
    server = start_server("--no-jobs", env={"SANIC_REQUEST_TIMEOUT": "1"})
    port = server.port
    cases = [
        (b"GET /no/such/route HTTP/1.1\r\nHost: t\r\n\r\n", 404, "not_found"),
        (b"DELETE /health HTTP/1.1\r\nHost: t\r\n\r\n", 405, "method_not_allowed"),
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n", 400, "bad_request"),
        (b"GET /health HTTP/1.1\r\nHost: t\r\n", 408, "request_timeout"),  # the head never ends
        (post_head(INVALIDATE, 10**9, ADMIN_TOKEN), 413, "payload_too_large"),
        (b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431, "headers_too_large"),
        (b"GET /health HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 400) for i in range(30))
         + b"\r\n", 431, "headers_too_large"),  # many headers, each small
        (b"GET /api/tournaments?x=" + b"a" * 10000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, "uri_too_long"),
        (b"GET /api/tournaments?x=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\nX-B: " + b"b" * 4000 + b"\r\n\r\n",
         414, "uri_too_long"),
    ]
    for request, status, code in cases:
        got, headers, body = exchange(port, request)
        assert got == status, (request[:40], got, body)
        assert headers["content-type"] == "application/json"
        envelope(body, code)
    assert "Traceback" not in server.log()
