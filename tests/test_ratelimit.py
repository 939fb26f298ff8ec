"""Inbound rate limits: real servers on a real socket (``--workers 2``), the headers, the client
address behind a proxy, the expensive routes, and bad configuration."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chessstats.api.envelope import header_pairs
from chessstats.config import ConfigError, load_config
from chessstats.ratelimit import RateLimiter, Refusal, SharedWindows, is_expensive, route_template
from tests.conftest import imported

ROOT = Path(__file__).resolve().parent.parent
HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


def limited(max_requests: int, **more: str) -> dict[str, str]:
    return {"CHESSSTATS_RATELIMIT_ENABLED": "true", "CHESSSTATS_RATELIMIT_MAX_REQUESTS": str(max_requests), **more}


def settle(*windows_s: float, margin_s: float = 10.0) -> None:
    """Wait, when needed, until each (epoch-aligned) window has ``margin_s`` left: a test's counts
    must not straddle the start of a new window."""
    while any(w - time.time() % w < margin_s for w in windows_s):
        time.sleep(0.2)


def fresh_get(url: str, **kwargs: object) -> httpx.Response:
    """One request on a new connection (so the kernel spreads them over the workers)."""
    with httpx.Client(timeout=30) as client:
        return client.get(url, **kwargs)  # type: ignore[arg-type]


def assert_both_workers_answered(server: object, timeout_s: float = 10) -> None:
    """Both workers of a ``--workers 2`` server answered some requests (``/metrics``: each worker's
    count, flushed about every second, so it is polled up to ``timeout_s`` seconds)."""
    assert_workers_answered(server, 2, timeout_s, exactly=True)


def assert_workers_answered(server: object, at_least: int, timeout_s: float = 10, *, exactly: bool = False) -> None:
    """At least ``at_least`` workers of a server answered some requests (``exactly``: that many and no
    more), from ``/metrics`` (each worker's count, flushed about every second: polled up to ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        served = worker_requests(server)
        if len([pid for pid, n in served.items() if n > 0]) >= at_least or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    answered = len([pid for pid, n in served.items() if n > 0])
    assert answered == at_least if exactly else answered >= at_least, served


def worker_requests(server: object) -> dict[str, float]:
    """``chessstats_worker_requests`` per pid from ``/metrics`` (flushed about every second)."""
    text = server.client.get("/metrics").text  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "chessstats_worker_requests":
            for sample in family.samples:
                out[sample.labels["pid"]] = sample.value
    return out


def test_the_limit_holds_across_two_workers(start_server) -> None:
    server = start_server("--workers", "2", "--no-jobs", env=limited(30))
    settle(60)
    statuses = [fresh_get(server.url + "/api/no-such-route").status_code for _ in range(60)]
    assert statuses.count(404) == 30 and statuses.count(429) == 30, statuses
    assert statuses[:30] == [404] * 30  # in order: the first 30 pass, every later one is refused
    deadline = time.monotonic() + 10
    while True:  # both workers answered some of them (their metrics flush every second)
        served = worker_requests(server)
        if len([pid for pid, n in served.items() if n > 0]) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert len([pid for pid, n in served.items() if n > 0]) == 2, served


def test_headers_on_200_304_404_and_429(start_server) -> None:
    server = start_server("--no-jobs", env=limited(4))
    settle(60)
    client = server.client
    ok = client.get("/api/tournaments?limit=5")
    assert ok.status_code == 200, ok.text
    assert [ok.headers[h] for h in HEADERS[:2]] == ["4", "3"] and 1 <= int(ok.headers["ratelimit-reset"]) <= 60
    not_modified = client.get("/api/tournaments?limit=5", headers={"If-None-Match": ok.headers["etag"]})
    assert not_modified.status_code == 304
    assert not_modified.headers["ratelimit-remaining"] == "2" and not_modified.headers["ratelimit-limit"] == "4"
    missing = client.get("/api/no-such-route")
    assert missing.status_code == 404 and missing.headers["ratelimit-remaining"] == "1"
    assert client.get("/api/tournaments?limit=5").headers["ratelimit-remaining"] == "0"
    refused = client.get("/api/tournaments?limit=5")
    assert refused.status_code == 429
    body = refused.json()
    assert body["success"] is False and body["code"] == "rate_limited" and "4 per 60 s" in body["error"]
    assert refused.headers["ratelimit-remaining"] == "0" and refused.headers["ratelimit-limit"] == "4"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["retry-after"] == refused.headers["ratelimit-reset"]
    assert client.head("/api/tournaments?limit=5").headers["ratelimit-remaining"] == "0"
    # outside /api: neither counted nor marked
    health = client.get("/health")
    assert health.status_code == 200 and "ratelimit-limit" not in health.headers
    # a page of another origin may read them
    cors = client.get("/api/no-such-route", headers={"Origin": "https://example.org"})
    assert "RateLimit-Remaining" in cors.headers["access-control-expose-headers"]


@pytest.mark.parametrize("metrics", ["false", "true"])
def test_every_kind_of_api_answer_counts_down_in_its_headers(start_server, upstream, metrics: str) -> None:
    # each function that builds an /api answer puts the limiter's lines on it (no response hook does it
    # for them with the metrics off): envelope 200 / 304, PGN 200 / 304, the OpenAPI document 200 / 304,
    # an admin answer, a 400, a 404, a 429; every answer shows the count one lower than the one before
    server = start_server("--no-jobs", env=limited(30, CHESSSTATS_METRICS_ENABLED=metrics))
    settle(60)
    client = server.client
    imported(server, "sH24g2zH")
    start = int(client.get("/api/tournaments/sH24g2zH").headers["ratelimit-remaining"])
    pgn = "/api/tournaments/sH24g2zH/games?limit=2&format=pgn"
    answers = [
        client.get("/api/tournaments/sH24g2zH"),
        client.get("/api/tournaments/sH24g2zH", headers={"If-None-Match": client.get("/api/tournaments/sH24g2zH")
                                                         .headers["etag"]}),
        client.get(pgn),
        client.get(pgn, headers={"If-None-Match": client.get(pgn).headers["etag"]}),
        client.get("/api/openapi.json"),
        client.get("/api/openapi.json", headers={"If-None-Match": client.get("/api/openapi.json").headers["etag"]}),
        server.admin("GET", "/api/admin/cache/stats"),
        client.get("/api/tournaments?limit=abc"),
        client.get("/api/no-such-route"),
    ]
    assert [a.status_code for a in answers] == [200, 304, 200, 304, 200, 304, 200, 400, 404]
    # one request before each 304 fetched its ETag; the PGN (a games route) shows its expensive window
    shown = [int(a.headers["ratelimit-remaining"]) for a in answers]
    assert shown == [start - n for n in (1, 3)] + [9, 7] + [start - n for n in (7, 9, 10, 11, 12)], shown
    assert [a.headers["ratelimit-limit"] for a in answers] == ["30"] * 2 + ["10"] * 2 + ["30"] * 5
    assert all(1 <= int(a.headers["ratelimit-reset"]) <= 300 for a in answers)
    while (last := client.get("/api/tournaments/sH24g2zH")).status_code == 200:
        pass
    assert last.status_code == 429 and last.headers["ratelimit-remaining"] == "0"
    assert last.headers["retry-after"] == last.headers["ratelimit-reset"]


def raw_get(url: str, path: str, headers: dict[str, str], method: str = "GET") -> tuple[list[tuple[str, str]], bytes]:
    """One request on a raw socket: the response's header lines as sent (name in lower case, value)
    and its body."""
    host, port = url.removeprefix("http://").split(":")
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{lines}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    fields = [line.decode().split(": ", 1) for line in head.split(b"\r\n")[1:]]
    return [(name.lower(), value) for name, value in fields], body


def test_a_cached_hit_sends_every_header_once(start_server, upstream) -> None:
    # the cache-hit path hands Sanic its header lines pre-joined: each must arrive once, well formed
    server = start_server("--no-jobs", env=limited(1000))
    settle(60)
    imported(server, "sH24g2zH")
    expected = {"content-type", "cache-control", "etag", "x-cache", "vary", "ratelimit-limit", "ratelimit-remaining",
                "ratelimit-reset", "content-length", "connection"}
    seen = []
    for accept, method in (("identity", "GET"), ("gzip", "GET"), ("identity", "HEAD")):
        fields, body = raw_get(server.url, "/api/tournaments/sH24g2zH", {"Accept-Encoding": accept}, method)
        names = [name for name, _ in fields]
        got = dict(fields)
        assert len(names) == len(set(names)), fields
        assert set(names) == expected | ({"content-encoding"} if accept == "gzip" else set()), fields
        assert got["x-cache"] == "HIT" and got["connection"] == "close" and got["ratelimit-limit"] == "1000"
        assert got["content-type"] == "application/json" and got["cache-control"] == "public, max-age=31536000"
        if method == "GET":
            assert int(got["content-length"]) == len(body) > 0
        else:
            assert body == b"" and int(got["content-length"]) == int(seen[0]["content-length"])
        seen.append(got)
    assert [int(g["ratelimit-remaining"]) for g in seen] == [int(seen[0]["ratelimit-remaining"]) - i for i in range(3)]
    assert seen[1]["etag"] == seen[0]["etag"][:-1] + '-gzip"'
    # with an Origin, the CORS headers (echoing the request) join the same answer
    fields, _ = raw_get(server.url, "/api/tournaments/sH24g2zH", {"Origin": "https://example.org"})
    names = [name for name, _ in fields]
    assert len(names) == len(set(names)) and {"access-control-allow-origin", "ratelimit-remaining"} <= set(names)


def remaining(verdict: object) -> bytes:
    """``RateLimit-Remaining`` of a :meth:`RateLimiter.admit` verdict."""
    return dict(header_pairs(verdict))[b"ratelimit-remaining"]  # type: ignore[arg-type]


def take_over(limiter: RateLimiter, client: str, now: float) -> tuple[SharedWindows, int]:
    """Another process gives ``client``'s slot to another client (as :class:`SharedWindows` does when every
    slot near a key holds a live client): counts zeroed, its key, its tag, one request of it counted.
    Returns that process's table (to close) and the slot's tag word."""
    other = SharedWindows(limiter.table.path, 60, 300)
    t = other._find(*limiter.table.locate(client), now)
    off = 4 * t - 40
    key, _, tag = other.locate("198.51.100.9")
    other._mm[off + 48:off + 176] = bytes(128)
    other._mm[off:off + 40] = key
    struct.pack_into("<I", other._mm, off + 40, tag)
    struct.pack_into("<II", other._mm, off + 48, int(now // 60), 1)
    return other, t


def test_the_request_path_counts_in_the_shared_table(tmp_path: Path) -> None:
    # two workers (columns 0 and 1 of one file): the limit holds over both, and the table's general
    # path (SharedWindows.hit) sees the counts the request path (RateLimiter.admit) wrote
    config = load_config(None, env={"CHESSSTATS_RATELIMIT_MAX_REQUESTS": "5"})
    a = RateLimiter(config.ratelimit, tmp_path / "t", column=0, workers=2)
    b = RateLimiter(config.ratelimit, tmp_path / "t", column=1, workers=2)
    settle(60)
    now = time.time()
    answers = [(a if i % 2 == 0 else b).admit("192.0.2.1", None, False, now) for i in range(7)]
    assert [remaining(x) for x in answers] == [b"4", b"3", b"2", b"1", b"0", b"0", b"0"]
    assert [type(x) is Refusal for x in answers] == [False] * 5 + [True] * 2
    refused = answers[-1]
    assert (refused.limit, refused.window_s) == (5, 60.0) and 1 <= refused.reset_s <= 60
    assert dict(header_pairs(refused))[b"retry-after"] == b"%d" % refused.reset_s
    c = SharedWindows(tmp_path / "t", 60, 300, column=1, columns_read=2)
    assert c.hit("192.0.2.1", now, False)[0] == 8
    assert remaining(a.admit("192.0.2.1", None, False, now + 60)) == b"4"
    for x in (a, b):
        x.close()
    c.close()


def test_a_slot_taken_over_by_another_process_is_not_counted_into(tmp_path: Path) -> None:
    config = load_config(None, env={"CHESSSTATS_RATELIMIT_MAX_REQUESTS": "50"})
    limiter = RateLimiter(config.ratelimit, tmp_path / "t")
    settle(60)
    now = time.time()
    for _ in range(3):
        limiter.admit("192.0.2.1", None, False, now)
    # another process gives that slot to another client (as SharedWindows does when every slot near
    # a key holds a live client): counts zeroed, its key, its tag; then counts that client's request
    other, t = take_over(limiter, "192.0.2.1", now)
    # the limiter's cached slot no longer holds its client: it takes another, from a fresh count
    assert remaining(limiter.admit("192.0.2.1", None, False, now)) == b"49"
    assert list(other._words[t + 2:t + 4]) == [int(now // 60), 1]  # nothing counted into the other client's
    limiter.close()
    other.close()


def test_forwarded_for_is_ignored_from_an_untrusted_peer(start_server) -> None:
    server = start_server("--no-jobs", env=limited(3, CHESSSTATS_RATELIMIT_TRUSTED_PROXIES="10.0.0.0/8"))
    settle(60)
    statuses = [server.client.get("/api/no-such-route", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                for i in range(5)]
    assert statuses == [404, 404, 404, 429, 429]  # one client: the peer, 127.0.0.1


def test_forwarded_for_names_the_client_behind_a_trusted_proxy(start_server) -> None:
    server = start_server("--no-jobs", env=limited(2, CHESSSTATS_RATELIMIT_TRUSTED_PROXIES="127.0.0.1"))
    settle(60)
    client = server.client
    for i in range(6):  # six clients behind the proxy: two each is within their own limit
        for _ in range(2):
            assert client.get("/api/x", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code == 404
    assert client.get("/api/x", headers={"X-Forwarded-For": "203.0.113.1"}).status_code == 429
    # a client that forges the start of the chain is still the address the proxy appended
    forged = client.get("/api/x", headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.1"})
    assert forged.status_code == 429
    assert client.get("/api/x", headers={"X-Forwarded-For": "203.0.113.1, 198.51.100.9"}).status_code == 404


def test_expensive_routes_have_their_own_smaller_window(start_server) -> None:
    env = limited(50, CHESSSTATS_RATELIMIT_EXPENSIVE_MAX_REQUESTS="2")
    server = start_server("--no-jobs", env=env)
    settle(60, 300)
    client = server.client
    first = client.get("/api/tournaments/zzzzzzzz/games")
    assert first.status_code != 429 and first.headers["ratelimit-limit"] == "2"
    assert first.headers["ratelimit-remaining"] == "1" and 1 <= int(first.headers["ratelimit-reset"]) <= 300
    assert client.get("/api/tournaments/zzzzzzzz/games").status_code != 429
    third = client.get("/api/tournaments/yyyyyyyy/games?limit=5")
    assert third.status_code == 429 and third.headers["ratelimit-limit"] == "2"
    assert "2 per 300 s" in third.json()["error"]
    other = client.get("/api/no-such-route")  # the general window still has room
    assert other.status_code == 404 and other.headers["ratelimit-limit"] == "50"
    assert other.headers["ratelimit-remaining"] == "46"


def test_the_table_is_shared_through_its_file(tmp_path: Path) -> None:
    # two workers: each writes its own column and reads both
    a = SharedWindows(tmp_path / "t", 60, 300, column=0, columns_read=2)
    b = SharedWindows(tmp_path / "t", 60, 300, column=1, columns_read=2)
    assert a.shared and b.shared
    now = (time.time() // 300) * 300 + 1  # early in both windows
    assert a.hit("1.2.3.4", now, False)[0] == 1
    assert b.hit("1.2.3.4", now, False)[0] == 2
    assert a.hit("1.2.3.4", now, False)[0] == 3
    assert b.hit("5.6.7.8", now, True)[::2] == (1, 1)
    count, end, e_count, e_end = a.hit("5.6.7.8", now + 1, True)
    assert (count, e_count) == (2, 2) and end == now - 1 + 60 and e_end == now - 1 + 300
    assert a.hit("1.2.3.4", now + 60, False)[0] == 1  # the next window
    assert b.hit("1.2.3.4", now + 60, False)[0] == 2
    assert b.hit("5.6.7.8", now + 61, True)[::2] == (1, 3)  # the expensive window goes on
    # a third process (a restart) finds every count where the others left them
    c = SharedWindows(tmp_path / "t", 60, 300, column=0, columns_read=2)
    assert c.hit("1.2.3.4", now + 60, False)[0] == 3
    for table in (a, b, c):
        table.close()


def test_a_full_table_gives_way_instead_of_failing(tmp_path: Path) -> None:
    table = SharedWindows(tmp_path / "t", slots=16)
    now = time.time()
    for i in range(40):
        assert table.hit(f"10.0.0.{i}", now, False)[0] == 1
    assert table.takeovers > 0
    for i in range(40):  # a window later every slot is free again: no take-over
        table.hit(f"10.0.1.{i % 16}", now + 60, False)
    table.close()


def test_clients_and_routes() -> None:
    config = load_config(None, env={"CHESSSTATS_RATELIMIT_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1"})
    limiter = RateLimiter(config.ratelimit, None)
    assert limiter.client_address("10.1.2.3", ["203.0.113.5"]) == "203.0.113.5"
    assert limiter.client_address("10.1.2.3", ["203.0.113.5, 10.9.9.9"]) == "203.0.113.5"
    assert limiter.client_address("10.1.2.3", ["garbage"]) == "garbage"
    assert limiter.client_address("203.0.113.9", ["1.1.1.1"]) == "203.0.113.9"
    assert limiter.client_address("192.168.1.1", ["10.0.0.1"]) == "10.0.0.1"  # every hop trusted: leftmost
    net = "2001:db8:1:2::/64"
    assert limiter.client_key("2001:db8:1:2:aaaa::1") == limiter.client_key("2001:db8:1:2:bbbb::9") == net
    assert limiter.client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert route_template("api/tournaments/<tid:str>/games") == "/api/tournaments/*/games"
    assert is_expensive("/api/tournaments/*/games") and is_expensive("/api/players/*/*/games")
    assert not is_expensive("/api/tournaments/*/results") and not is_expensive("/api/players/*/games")
    assert limiter.expensive("api/players/<platform:str>/<username:str>/games")
    # a pattern's * is any one segment: the players' routes have a literal platform segment
    assert limiter.expensive("api/players/lichess/<username:str>/games")
    assert limiter.expensive("api/players/chesscom/<username:str>/games")
    assert not limiter.expensive("api/players/lichess/<username:str>/history")
    assert not limiter.expensive("api/players/lichess/top/<perf_type:str>")
    assert not limiter.expensive(None)
    limiter.close()


def test_configuration_keys_and_the_original_names() -> None:
    config = load_config(None, env={"RATE_LIMIT_WINDOW_MS": "900000", "RATE_LIMIT_MAX_REQUESTS": "250"})
    assert config.ratelimit.window_s == 900.0 and config.ratelimit.max_requests == 250
    config = load_config(None, env={"CHESSSTATS_RATELIMIT_EXPENSIVE_WINDOW_S": "120",
                                    "CHESSSTATS_RATELIMIT_ENABLED": "false"})
    assert config.ratelimit.expensive_window_s == 120.0 and config.ratelimit.enabled is False
    assert config.ratelimit.trusted_proxies == ["127.0.0.1/32", "::1/128"]


@pytest.mark.parametrize("env, fragment", [
    ({"RATE_LIMIT_MAX_REQUESTS": "abc"}, "RATE_LIMIT_MAX_REQUESTS: expected a whole number"),
    ({"RATE_LIMIT_MAX_REQUESTS": "0"}, "RATE_LIMIT_MAX_REQUESTS"),
    ({"RATE_LIMIT_WINDOW_MS": "1.5"}, "RATE_LIMIT_WINDOW_MS: expected a whole number of milliseconds"),
    ({"RATE_LIMIT_WINDOW_MS": "10"}, "RATE_LIMIT_WINDOW_MS"),
    ({"CHESSSTATS_RATELIMIT_MAX_REQUESTS": "-1"}, "ratelimit.max_requests"),
    ({"CHESSSTATS_RATELIMIT_WINDOW_S": "0"}, "ratelimit.window_s"),
    ({"CHESSSTATS_RATELIMIT_TRUSTED_PROXIES": "10.0.0.0/8, proxy.local"}, "'proxy.local' is not an IP address"),
    ({"CHESSSTATS_METRICS_ENABLED": "maybe"}, "metrics.enabled"),
])
def test_bad_values_name_the_variable_or_key(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, env=env)
    assert fragment in err.value.message


def test_a_bad_rate_limit_variable_stops_start_up(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHESSSTATS_", "RATE_LIMIT_"))}
    env.update({"PYTHONPATH": str(ROOT), "RATE_LIMIT_MAX_REQUESTS": "abc"})
    proc = subprocess.run([sys.executable, "-m", "chessstats", "serve", "--data-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "RATE_LIMIT_MAX_REQUESTS" in lines[0] and "'abc'" in lines[0]
