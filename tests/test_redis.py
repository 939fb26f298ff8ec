"""The Redis backend's parts on a real redis-server (``tests/redis_server.py``): the cache's faults,
the leased locks (kill -9 of a holder), the gate shared by several "hosts" (one ``RedisBackend``
each). Skipped when redis-server is not installed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from chessstats.cache_redis import RedisTTLCache, _redis_glob
from chessstats.errors import UpstreamBusy, UpstreamRateLimited
from chessstats.locks import Locks
from chessstats.payload import Payload, encode_fields
from chessstats.redisconn import LockUnavailable, RedisBackend, redacted
from chessstats.upstream.gate import GateSettings, Rate
from chessstats.upstream.gate_redis import RedisGate
from tests.conftest import ROOT
from tests.redis_server import RedisServer


def payload(data: object) -> Payload:
    return Payload(encode_fields(data), source="api", fetched_at=1_700_000_000.0)


@pytest.fixture
def hosts(redis: RedisServer) -> Iterator[list[RedisBackend]]:
    """Three backends on the test Redis (one per "host"), lease 1 s; closed after."""
    backends = [RedisBackend(redis.url, lease_s=1.0) for _ in range(3)]
    yield backends
    for backend in backends:
        backend.close()


# --- cache ---------------------------------------------------------------------------------------


def test_pattern_uses_scan_and_fnmatch_syntax(hosts: list[RedisBackend]) -> None:
    assert _redis_glob("tournament:*") == "tournament:*" and _redis_glob("a[!b]?") == "a[^b]?"
    cache = RedisTTLCache(hosts[0])
    for key in ("tournament:lichess:a", "tournament:lichess:b", "results:lichess:a:1:100", "tournament*x"):
        cache.set(key, payload(key), ttl_s=None, tag="t:x")
    assert cache.delete_pattern("tournament:lichess:[!b]") == 1
    assert cache.get("tournament:lichess:b") is not None and cache.get("tournament:lichess:a") is None
    # the tag set expires with its longest entry, and is permanent with a permanent one
    assert cache.client.ttl(hosts[0].key("tag:t:x")) == -1
    cache.set("k", payload(1), ttl_s=10, stale_s=20, tag="t:y")
    assert 25 <= cache.client.ttl(hosts[0].key("tag:t:y")) <= 30
    assert 25 <= cache.client.ttl(hosts[0].key("c:k")) <= 30  # ttl + stale window, kept by Redis


def test_a_lost_invalidation_empties_the_cache_before_it_is_used_again(hosts: list[RedisBackend],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = RedisTTLCache(hosts[0]), RedisTTLCache(hosts[1], memory_entries=0)
    a.set("old", payload("old"), ttl_s=None)
    a.set("other", payload("other"), ttl_s=None)

    def down(*args: object) -> None:
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(a.client, "delete", down)
    assert a.delete("old") is False  # never raises
    assert a.errors == 1 and not a.healthy and not a.usable
    assert a.get("old") is None  # bypassed meanwhile, not served from memory or Redis
    assert b.get("old") is not None  # the entry really is still in Redis
    monkeypatch.undo()
    a._down_until = 0.0  # the back-off is over
    assert a.get("old") is None and a.usable
    assert b.get("old") is None and b.get("other") is None  # the whole cache went


def test_redis_down_is_a_miss_and_cheap(redis: RedisServer) -> None:
    backend = RedisBackend(redis.url)
    cache = RedisTTLCache(backend)
    cache.set("k", payload(1), ttl_s=None)
    assert cache.get("k") is not None
    redis.kill()
    try:
        started = time.monotonic()
        misses = [cache.get(f"x{i}") for i in range(200)]
        elapsed = time.monotonic() - started
        cache.set("y", payload(2), ttl_s=10)
        assert misses == [None] * 200 and cache.errors >= 1 and cache.healthy is False
        assert elapsed < 2.5, elapsed  # one failed connection, then the back-off: not 200 timeouts
        assert cache.check() is False and cache.stats()["entries"] == 0
        lock = Locks("/nonexistent", backend).lock("fetch-001")
        with pytest.raises(LockUnavailable):
            lock.acquire()
    finally:
        redis.start()
    cache._probe_at = 0.0
    assert cache.check() is True and cache.healthy
    cache.set("z", payload(3), ttl_s=None)
    assert cache.get("z") is not None
    backend.close()


def test_redacted_url() -> None:
    assert redacted("redis://:s3cret@10.0.0.5:6379/0") == "redis://:***@10.0.0.5:6379/0"
    assert redacted("redis://user:pw@h/1") == "redis://user:***@h/1"
    assert redacted("unix:///run/redis.sock?db=2") == "unix:///run/redis.sock?db=2"


# --- locks ---------------------------------------------------------------------------------------


def test_lock_excludes_across_hosts_and_its_lease_is_renewed(hosts: list[RedisBackend]) -> None:
    a, b = hosts[0].lock("import-03"), hosts[1].lock("import-03")
    assert a.acquire() and a.acquire() and not b.acquire()
    time.sleep(2.5)  # 2.5 leases: renewed meanwhile by a's keeper thread
    assert a.held and not b.acquire()
    assert a.holder() is not None and a.holder().startswith(hosts[0].identity)  # type: ignore[union-attr]
    a.release()
    assert b.acquire() and not a.acquire()
    b.release()
    b.release()  # idempotent


def test_a_lost_lease_is_no_longer_held(hosts: list[RedisBackend]) -> None:
    a = hosts[0].lock("scheduler")
    assert a.acquire()
    hosts[0].client.delete(a.key)  # the lease ran out (a stalled process), someone else took it
    hosts[1].lock("scheduler").acquire()
    deadline = time.monotonic() + 3
    while a.held and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not a.held and a.lost


def test_kill9_of_a_holder_frees_the_lock_after_its_lease(redis: RedisServer, hosts: list[RedisBackend]) -> None:
    code = ("import sys, time; from chessstats.redisconn import RedisBackend\n"
            f"lock = RedisBackend({redis.url!r}, lease_s=1.0).lock('scheduler')\n"
            "assert lock.acquire(); print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
        mine = hosts[0].lock("scheduler")
        time.sleep(1.5)
        assert not mine.acquire()  # renewed by the living holder
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        while not mine.acquire():
            assert time.monotonic() - killed < 3, "the lease of a killed holder did not run out"
            time.sleep(0.05)
        assert time.monotonic() - killed <= 1.5
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# --- gate ----------------------------------------------------------------------------------------


def gate_settings(**kwargs: object) -> GateSettings:
    base: dict[str, object] = {"rate": Rate(1000, 1.0), "max_queue_wait_s": 2.0, "pause_after_429_s": 1.0,
                               "max_pause_s": 4.0, "breaker_failures": 3, "breaker_open_s": 0.5}
    base.update(kwargs)
    return GateSettings(**base)  # type: ignore[arg-type]


def test_gate_one_in_flight_and_strict_spacing_across_hosts(hosts: list[RedisBackend]) -> None:
    gates = [RedisGate("test", gate_settings(rate=Rate(10, 1.0)), h) for h in hosts]
    active, peak, sends = 0, 0, []

    async def one(gate: RedisGate) -> None:
        nonlocal active, peak
        async with gate.request(max_wait_s=5) as call:
            sends.append(time.monotonic())
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1
            call.status = 200

    async def run() -> None:
        await asyncio.gather(*(one(gates[i % 3]) for i in range(9)))

    asyncio.run(run())
    gaps = [b - a for a, b in zip(sends, sends[1:], strict=False)]
    assert peak == 1 and len(sends) == 9
    assert min(gaps) >= 0.09, gaps  # 10/1s across three hosts: 0.1 s apart (Redis's clock)
    assert gates[0].health()["status"] == "ok"


def test_gate_429_on_one_host_pauses_every_host(hosts: list[RedisBackend]) -> None:
    a, b = RedisGate("test", gate_settings(), hosts[0]), RedisGate("test", gate_settings(), hosts[1])

    async def hit_429() -> None:
        async with a.request() as call:
            call.status = 429
            raise UpstreamRateLimited("test: 429", "test", 0)

    with pytest.raises(UpstreamRateLimited):
        asyncio.run(hit_429())
    sent = []

    async def try_b() -> None:
        async with b.request():
            sent.append(1)

    with pytest.raises(UpstreamRateLimited) as info:
        asyncio.run(try_b())
    assert sent == [] and info.value.retry_after_s == 1 and b.health()["status"] == "paused"
    time.sleep(1.05)
    asyncio.run(try_b())
    assert sent == [1]


def test_gate_slot_of_a_dead_host_frees_after_its_lease(hosts: list[RedisBackend]) -> None:
    a = RedisGate("test", gate_settings(max_queue_wait_s=0.2), hosts[0])
    b = RedisGate("test", gate_settings(max_queue_wait_s=0.2), hosts[1])
    assert a._try_slot() == 0
    hosts[0].close()  # the host stops renewing (as after kill -9)

    async def try_b(wait: float) -> None:
        async with b.request(max_wait_s=wait) as call:
            call.status = 200

    with pytest.raises(UpstreamBusy):
        asyncio.run(try_b(0.2))
    asyncio.run(try_b(3.0))  # the lease (1 s) ran out


# --- inbound rate limits -------------------------------------------------------------------------


def test_rate_limits_count_across_hosts_in_redis_windows(hosts: list[RedisBackend]) -> None:
    from chessstats.config import RateLimitConfig
    from chessstats.ratelimit import Refusal
    from chessstats.ratelimit_redis import RedisRateLimiter

    config = RateLimitConfig(max_requests=5, window_s=3600, expensive_max_requests=2, expensive_window_s=3600)
    a, b = RedisRateLimiter(config, hosts[0]), RedisRateLimiter(config, hosts[1])
    verdicts = [type((a if i % 2 else b).admit("10.0.0.1", None, False)) is not Refusal for i in range(7)]
    assert verdicts == [True] * 5 + [False] * 2  # 5 in all, whichever host answered
    expensive = b.expensive("/api/tournaments/<tid:str>/games")
    verdict = b.admit("10.0.0.2", None, expensive)
    assert expensive and type(verdict) is not Refusal and b.client_of("10.0.0.2", None) == "10.0.0.2"
    lines = verdict.decode().split("\r\n")
    assert lines[:2] == ["ratelimit-limit: 2", "ratelimit-remaining: 1"], lines  # the expensive window's
    a.admit("10.0.0.2", None, expensive)
    refused = a.check("10.0.0.2", True)
    assert not refused.allowed and refused.limit == 2 and 1 <= refused.retry_after_s <= 3600  # type: ignore[operator]
    assert a.refused == 1 + sum(not v for i, v in enumerate(verdicts) if i % 2)
    keys = sorted(k.decode() for k in hosts[0].client.scan_iter(match="chessstats:rl:*"))
    assert len(keys) == 3 and all(0 < hosts[0].client.ttl(k) <= 3601 for k in keys), keys


def test_rate_limits_count_in_memory_while_redis_is_down(redis: RedisServer) -> None:
    from chessstats.config import RateLimitConfig
    from chessstats.ratelimit import Refusal
    from chessstats.ratelimit_redis import RedisRateLimiter

    limiter = RedisRateLimiter(RateLimitConfig(max_requests=3, window_s=3600), RedisBackend(redis.url))
    assert type(limiter.admit("10.0.0.1", None)) is not Refusal
    redis.kill()
    try:
        verdicts = [type(limiter.admit("10.0.0.9", None)) is not Refusal for _ in range(5)]  # never raises
        assert verdicts == [True] * 3 + [False] * 2 and limiter.redis_errors == 1
    finally:
        redis.start()
        limiter.close()
