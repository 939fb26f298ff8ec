"""The limiter's request path inlined into the route wrappers (``RateLimiter.inline_source``): it counts
exactly as ``RateLimiter.admit`` does, in the same shared table, across workers, and gives way to
``admit`` whenever it cannot decide (a new peer, a slot taken over, the limit reached)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from chessstats.config import load_config
from chessstats.ratelimit import RateLimiter, Refusal, SharedWindows
from chessstats.ratelimit_redis import RedisRateLimiter
from chessstats.redisconn import RedisBackend
from tests.test_ratelimit import assert_both_workers_answered, fresh_get, limited, remaining, settle, take_over


def inlined(limiter: RateLimiter) -> tuple[Any, list[int]]:
    """``guard(peer, now)``: the inlined request path as a function (its verdict), and the list of the
    peers' calls that fell back to ``admit`` (one entry per fallback). ``peer`` is an address, or
    ``(address, *X-Forwarded-For values)`` (as the route wrappers pass it)."""
    fallbacks: list[int] = []

    def admit(peer: Any, now: float) -> Any:
        fallbacks.append(1)
        if type(peer) is str:
            return limiter.admit(peer, None, False, now)
        return limiter.admit(peer[0], list(peer[1:]), False, now)

    source = limiter.inline_source("peer", "now", "return raw", "return _rl_admit(peer, now)")
    assert source is not None
    scope = limiter.fast
    scope["_rl_admit"] = admit
    exec("def guard(peer, now):\n" + "".join("    " + line + "\n" for line in source.splitlines()), scope)  # noqa: S102
    return scope.pop("guard"), fallbacks


def test_the_inlined_path_counts_across_two_workers_as_admit_does(tmp_path: Path) -> None:
    config = load_config(None, env={"CHESSSTATS_RATELIMIT_MAX_REQUESTS": "5"})
    a = RateLimiter(config.ratelimit, tmp_path / "t", column=0, workers=2)
    b = RateLimiter(config.ratelimit, tmp_path / "t", column=1, workers=2)
    (guard_a, fell_a), (guard_b, fell_b) = inlined(a), inlined(b)
    settle(60)
    now = time.time()
    answers = [(guard_a if i % 2 == 0 else guard_b)("192.0.2.1", now) for i in range(7)]
    assert [remaining(x) for x in answers] == [b"4", b"3", b"2", b"1", b"0", b"0", b"0"]
    assert [type(x) is Refusal for x in answers] == [False] * 5 + [True] * 2
    # each worker's first request located the client (admit); the next three were counted inline;
    # at the limit admit decides (and counts the refusals)
    assert (len(fell_a), len(fell_b)) == (2, 2)
    c = SharedWindows(tmp_path / "t", 60, 300, column=1, columns_read=2)
    assert c.hit("192.0.2.1", now, False)[0] == 8  # 7 counted in the two workers' columns, and this one
    # a new window (or a new second of it) goes through admit, which starts the count again
    assert remaining(guard_a("192.0.2.1", now + 60)) == b"4" and len(fell_a) == 3
    assert remaining(guard_a("192.0.2.1", now + 60)) == b"3" and len(fell_a) == 3
    for x in (a, b):
        x.close()
    c.close()


def test_the_inlined_path_never_counts_into_a_slot_taken_over(tmp_path: Path) -> None:
    config = load_config(None, env={"CHESSSTATS_RATELIMIT_MAX_REQUESTS": "50"})
    limiter = RateLimiter(config.ratelimit, tmp_path / "t")
    guard, fell = inlined(limiter)
    settle(60)
    now = time.time()
    assert [remaining(guard("192.0.2.1", now)) for _ in range(3)] == [b"49", b"48", b"47"] and len(fell) == 1
    # another process gives that slot to another client: counts zeroed, its key, its tag, its count
    other, t = take_over(limiter, "192.0.2.1", now)
    assert remaining(guard("192.0.2.1", now)) == b"49" and len(fell) == 2  # admit: another slot, a fresh count
    assert list(other._words[t + 2:t + 4]) == [int(now // 60), 1]  # nothing counted into the other client's
    assert remaining(guard("192.0.2.1", now)) == b"48" and len(fell) == 2  # inline again, in the new slot
    limiter.close()
    other.close()


def test_the_inlined_path_counts_forwarded_clients_apart(tmp_path: Path) -> None:
    config = load_config(None, env={"CHESSSTATS_RATELIMIT_MAX_REQUESTS": "3"})  # 127.0.0.1 is a trusted proxy
    limiter = RateLimiter(config.ratelimit, tmp_path / "t")
    guard, fell = inlined(limiter)
    settle(60)
    now = time.time()
    a, b = ("127.0.0.1", "203.0.113.5"), ("127.0.0.1", "203.0.113.6")
    assert [remaining(guard(a, now)) for _ in range(3)] == [b"2", b"1", b"0"]
    assert type(guard(a, now)) is Refusal
    assert remaining(guard(b, now)) == b"2" and remaining(guard("127.0.0.1", now)) == b"2"  # each its own count
    # a client that forges the start of the chain is the address the proxy appended: a's count
    assert type(guard(("127.0.0.1", "198.51.100.7, 203.0.113.5"), now)) is Refusal
    # the same header from an untrusted peer is that peer's request
    assert remaining(guard(("192.0.2.50", "203.0.113.6"), now)) == b"2"
    assert len(fell) == 6  # a: first and refused; b, the proxy, the forged chain, the untrusted peer: first
    limiter.close()


def test_a_limiter_counting_elsewhere_is_not_inlined() -> None:
    config = load_config(None, env={})
    limiter = RedisRateLimiter(config.ratelimit, RedisBackend("redis://127.0.0.1:1/0"))  # never connected
    try:
        assert limiter.inline_source("peer", "now", "return raw", "return None") is None
    finally:
        limiter.close()


def test_a_route_keeps_the_limit_across_two_workers(start_server) -> None:
    # a real route (the wrappers' inlined path, not a 404's on_error): every answer's remaining count
    # goes down by one whichever worker answers, and the 31st request is refused
    server = start_server("--workers", "2", "--no-jobs", env=limited(30))
    settle(60)
    seen = []
    for _ in range(31):
        with httpx.Client(timeout=30) as client:  # a new connection: the kernel spreads them over the workers
            seen.append(client.get(server.url + "/api/tournaments?limit=5"))
    assert [r.status_code for r in seen] == [200] * 30 + [429], [r.text[:200] for r in seen if r.status_code != 200]
    assert [int(r.headers["ratelimit-remaining"]) for r in seen] == [*range(29, -1, -1), 0]
    assert all(r.headers["ratelimit-limit"] == "30" for r in seen) and "retry-after" in seen[-1].headers
    # behind the trusted proxy (127.0.0.1 by default) each forwarded client has its own count
    behind = [fresh_get(server.url + "/api/tournaments?limit=5", headers={"X-Forwarded-For": ip})
              for ip in ("203.0.113.5", "203.0.113.5", "203.0.113.6", "198.51.100.7, 203.0.113.5")]
    assert [int(r.headers["ratelimit-remaining"]) for r in behind] == [29, 28, 29, 27]
    assert_both_workers_answered(server)
