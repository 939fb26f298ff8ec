"""The upstream gate alone: several ``UpstreamGate`` objects on one directory stand in for the worker
processes of a host (each has its own file descriptors, so their flocks exclude each other like
processes do); one test uses a real second process."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chessstats.errors import NotFound, UpstreamBusy, UpstreamError, UpstreamRateLimited
from chessstats.upstream import gate as gate_module
from chessstats.upstream.gate import GateSettings, Rate, UpstreamGate, parse_rate


def settings(**kwargs: object) -> GateSettings:
    base: dict[str, object] = {"rate": Rate(1000, 1.0), "max_queue_wait_s": 2.0, "pause_after_429_s": 1.0,
                               "max_pause_s": 4.0, "breaker_failures": 3, "breaker_open_s": 0.5}
    base.update(kwargs)
    return GateSettings(**base)  # type: ignore[arg-type]


def gates(tmp_path: Path, n: int, **kwargs: object) -> list[UpstreamGate]:
    return [UpstreamGate("test", settings(**kwargs), tmp_path / "gate") for _ in range(n)]


async def ok(gate: UpstreamGate, hold_s: float = 0.0, sends: list[float] | None = None, **kw: object) -> None:
    async with gate.request(**kw) as call:  # type: ignore[arg-type]
        if sends is not None:
            sends.append(time.monotonic())
        call.status = 200
        await asyncio.sleep(hold_s)


async def fail(gate: UpstreamGate, exc: Exception) -> None:
    async with gate.request():
        raise exc


@pytest.mark.parametrize("text, count, window", [
    ("2/1s", 2, 1), ("10/60s", 10, 60), ("10 per 60 s", 10, 60), ("30/min", 30, 60), ("2/s", 2, 1),
    ("1.5/1s", 1.5, 1), ("100/h", 100, 3600), ("5/10", 5, 10),
])
def test_parse_rate(text: str, count: float, window: float) -> None:
    rate = parse_rate(text)
    assert (rate.count, rate.window_s) == (count, window)
    assert rate.interval_s == window / count


@pytest.mark.parametrize("text", ["", "fast", "2", "0/1s", "2/0s", "2/1 fortnight", "-1/1s", "2//1s"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def test_one_in_flight_across_workers(tmp_path: Path) -> None:
    workers = gates(tmp_path, 4)
    active, peak = 0, 0

    async def one(gate: UpstreamGate) -> None:
        nonlocal active, peak
        async with gate.request(max_wait_s=5):
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.05)
            active -= 1

    async def run() -> float:
        start = time.monotonic()
        await asyncio.gather(*(one(workers[i % 4]) for i in range(8)))
        return time.monotonic() - start

    elapsed = asyncio.run(run())
    assert peak == 1 and elapsed >= 8 * 0.05
    assert sum(g.requests for g in workers) == 8


def test_two_in_flight_allowed_and_queue_bound(tmp_path: Path) -> None:
    a, b, c = gates(tmp_path, 3, max_in_flight=2)

    async def run() -> tuple[float, UpstreamBusy]:
        holders = [asyncio.create_task(ok(a, 0.6)), asyncio.create_task(ok(b, 0.6))]
        await asyncio.sleep(0.1)
        start = time.monotonic()
        with pytest.raises(UpstreamBusy) as busy:
            await ok(c, max_wait_s=0.2)
        refused_after = time.monotonic() - start
        await asyncio.gather(*holders)
        await ok(c, max_wait_s=0)  # a slot is free again
        return refused_after, busy.value

    refused_after, busy = asyncio.run(run())
    assert 0.15 <= refused_after < 0.5 and busy.retry_after_s >= 1 and busy.status == 503
    assert c.stats()["refusedBusy"] == 1 and c.requests == 1


def test_a_dead_holder_frees_its_slot(tmp_path: Path) -> None:
    """A real second process holds the only slot; when it is killed the kernel frees it."""
    (tmp_path / "gate").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(tmp_path / 'gate' / 'test.slot0')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        (gate,) = gates(tmp_path, 1)
        with pytest.raises(UpstreamBusy):
            asyncio.run(ok(gate, max_wait_s=0.1))
        holder.kill()
        holder.wait()
        asyncio.run(ok(gate, max_wait_s=1))
    finally:
        holder.kill()
        holder.wait()


def test_rate_spacing_has_no_burst_and_a_refusal_takes_no_slot(tmp_path: Path) -> None:
    workers = gates(tmp_path, 3, rate=Rate(10, 1.0), max_queue_wait_s=5.0)
    sends: list[float] = []

    async def run() -> None:
        await asyncio.gather(*(ok(workers[i % 3], sends=sends) for i in range(6)))

    asyncio.run(run())
    sends.sort()
    gaps = [b - a for a, b in zip(sends, sends[1:], strict=False)]
    assert min(gaps) >= 0.1 - 0.01, gaps  # strictly spaced: 10/s is one every 0.1 s, never two at once

    a, b = gates(tmp_path / "other", 2, rate=Rate(1, 0.5))

    async def refused() -> float:
        await ok(a)
        start = time.monotonic()
        with pytest.raises(UpstreamBusy) as busy:
            await ok(b, max_wait_s=0.1)  # the next slot is 0.5 s away: refused at once
        assert time.monotonic() - start < 0.1 and busy.value.retry_after_s == 1
        await ok(b, max_wait_s=2)  # the refusal took no slot: this one leaves 0.5 s after the first
        return time.monotonic() - start

    assert 0.3 <= asyncio.run(refused()) < 0.7


def test_rate_below_one_a_second(tmp_path: Path) -> None:
    a, b = gates(tmp_path, 2, rate=parse_rate("10/60s"))

    async def run() -> UpstreamBusy:
        await ok(a)
        with pytest.raises(UpstreamBusy) as busy:
            await ok(b)
        return busy.value

    busy = asyncio.run(run())
    assert 5 <= busy.retry_after_s <= 6 and "10/60s" in busy.message


def test_429_pauses_every_worker_and_survives_a_restart(tmp_path: Path) -> None:
    a, b = gates(tmp_path, 2)
    ran: list[str] = []

    async def run() -> None:
        with pytest.raises(UpstreamRateLimited):
            await fail(a, UpstreamRateLimited("429", "test", 2))
        with pytest.raises(UpstreamRateLimited) as paused:
            async with b.request():
                ran.append("b")  # never: refused before the block
        assert paused.value.retry_after_s == 2
        restarted = UpstreamGate("test", settings(), tmp_path / "gate")
        with pytest.raises(UpstreamRateLimited) as again:
            await ok(restarted)
        assert 1 <= again.value.retry_after_s <= 2
        assert restarted.health()["status"] == "paused" and restarted.health()["pausedForS"] > 0

    asyncio.run(run())
    assert ran == [] and a.stats()["responses429"] == 1 and a.stats()["pauseSeconds"] == 2
    assert b.stats()["refusedPaused"] == 1 and b.requests == 0


def test_repeated_429_doubles_the_pause_up_to_the_ceiling(tmp_path: Path) -> None:
    a, b = gates(tmp_path, 2, pause_after_429_s=0.2, max_pause_s=0.5)
    state_path = tmp_path / "gate" / "test.state"

    def paused_for() -> float:
        return a.health()["pausedForS"]

    async def run() -> list[float]:
        pauses = []
        for gate in (a, b, a, b):
            with pytest.raises(UpstreamRateLimited):
                await fail(gate, UpstreamRateLimited("429", "test", 0))  # 0: no Retry-After
            pauses.append(gate._mem.last_pause_s)
            await asyncio.sleep(gate._mem.last_pause_s + 0.05)
        await ok(a)  # a success resets the pause
        with pytest.raises(UpstreamRateLimited):
            await fail(b, UpstreamRateLimited("429", "test", 0))
        pauses.append(b._mem.last_pause_s)
        return pauses

    assert asyncio.run(run()) == [0.2, 0.4, 0.5, 0.5, 0.2]
    assert state_path.stat().st_size == gate_module._RECORD_SIZE and paused_for() > 0


def test_concurrent_429s_of_one_episode_do_not_double(tmp_path: Path) -> None:
    a, b = gates(tmp_path, 2, max_in_flight=2, pause_after_429_s=1.0)

    async def hit(gate: UpstreamGate) -> None:
        async with gate.request():
            await asyncio.sleep(0.1)
            raise UpstreamRateLimited("429", "test", 0)

    async def run() -> None:
        results = await asyncio.gather(hit(a), hit(b), return_exceptions=True)
        assert all(isinstance(r, UpstreamRateLimited) for r in results)

    asyncio.run(run())
    assert a._peek().last_pause_s == 1.0


def test_deadline_covers_the_whole_call(tmp_path: Path) -> None:
    (gate,) = gates(tmp_path, 1, timeout_s=0.3, stream_timeout_s=0.6)

    async def run(stream: bool) -> float:
        start = time.monotonic()
        with pytest.raises(UpstreamError, match="timed out") as err:
            await ok(gate, hold_s=5, stream=stream)
        assert isinstance(err.value.__cause__, TimeoutError)
        return time.monotonic() - start

    assert 0.3 <= asyncio.run(run(False)) < 0.5
    assert 0.6 <= asyncio.run(run(True)) < 0.8
    assert gate.stats()["timeouts"] == 2 and gate._peek().failures == 2


def test_breaker_opens_then_lets_one_probe_through(tmp_path: Path) -> None:
    a, b, c = gates(tmp_path, 3, breaker_failures=3, breaker_open_s=0.4, max_pause_s=5.0)
    ran: list[str] = []

    async def probe(gate: UpstreamGate, name: str, error: Exception | None) -> None:
        async with gate.request(max_wait_s=0):
            ran.append(name)
            await asyncio.sleep(0.2)
            if error is not None:
                raise error

    async def run() -> None:
        with pytest.raises(NotFound):
            await fail(a, NotFound("404 is an answer, not a failure"))
        for gate, exc in ((a, UpstreamError("500", "test")), (b, UpstreamError("html 502", "test")),
                          (c, UpstreamError("cut stream", "test"))):
            with pytest.raises(UpstreamError):
                await fail(gate, exc)
        assert a.health()["status"] == "open"
        for gate in (a, b, c):
            with pytest.raises(UpstreamBusy, match="failing") as busy:
                await probe(gate, "refused", None)
            assert busy.value.retry_after_s == 1
        await asyncio.sleep(0.45)
        # half-open: two workers at once, exactly one probe goes out; it fails and the breaker re-opens
        results = await asyncio.gather(probe(a, "probe1", UpstreamError("500", "test")), probe(b, "second", None),
                                       return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["UpstreamBusy", "UpstreamError"]
        state = c._peek()
        assert state.open_s == 0.8 and state.open_until > time.time() + 0.5  # doubled
        await asyncio.sleep(0.85)
        await probe(c, "probe2", None)
        assert c.health() | {"pausedForS": 0, "lastOutcomeAgoS": 0} == {
            "status": "ok", "pausedForS": 0, "breaker": "closed", "failures": 0, "openForS": 0, "lastOutcomeAgoS": 0}

    asyncio.run(run())
    assert ran in (["probe1", "probe2"], ["second", "probe2"])
    assert sum(g.stats()["breakerOpens"] for g in (a, b, c)) == 2
    assert sum(g.stats()["refusedOpen"] for g in (a, b, c)) == 4


def test_state_file_unusable_carries_on_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    gate = UpstreamGate("test", settings(), blocker / "gate")  # mkdir fails: nothing on disk
    asyncio.run(ok(gate))
    with pytest.raises(UpstreamRateLimited):
        asyncio.run(fail(gate, UpstreamRateLimited("429", "test", 3)))
    with pytest.raises(UpstreamRateLimited):  # the pause holds in memory
        asyncio.run(ok(gate))
    assert gate.health()["status"] == "paused"

    (disk,) = gates(tmp_path, 1)
    asyncio.run(ok(disk))  # the file exists now

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gate_module.os, "pwrite", full)
    caplog.set_level("WARNING")
    for _ in range(3):
        asyncio.run(ok(disk))
    with pytest.raises(UpstreamRateLimited):
        asyncio.run(fail(disk, UpstreamRateLimited("429", "test", 3)))
    with pytest.raises(UpstreamRateLimited):
        asyncio.run(ok(disk))
    assert sum("cannot write the state file" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_damaged_state_record_starts_over(tmp_path: Path) -> None:
    (gate,) = gates(tmp_path, 1)
    asyncio.run(ok(gate))
    path = tmp_path / "gate" / "test.state"
    path.write_bytes(os.urandom(gate_module._RECORD_SIZE))
    other = UpstreamGate("test", settings(), tmp_path / "gate")
    asyncio.run(ok(other))
    assert path.stat().st_size == gate_module._RECORD_SIZE and other.health()["status"] == "ok"


def test_stats_and_health_shape(tmp_path: Path) -> None:
    (gate,) = gates(tmp_path, 1)
    assert gate.health()["status"] == "unknown" and gate.healthy is None
    asyncio.run(ok(gate))
    with pytest.raises(UpstreamError):
        asyncio.run(fail(gate, UpstreamError("500", "test")))
    stats = gate.stats()
    assert stats["calls"] == 2 and stats["callsByStatus"] == {"2xx": 1, "none": 1}
    assert gate.health()["status"] == "degraded" and gate.healthy is False
    assert set(stats) >= {"responses429", "pauseSeconds", "refusedBusy", "refusedOpen", "breakerOpens", "timeouts",
                          "pausedForS", "breaker"}


def test_retry_after_seconds_or_http_date() -> None:
    import email.utils

    from chessstats.upstream.http import parse_retry_after

    now = time.time()
    assert parse_retry_after("120") == 120 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 29 <= parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) <= 30  # type: ignore[operator]
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past: no wait


def test_call_runs_a_coroutine_function_through_the_gate(tmp_path: Path) -> None:
    (gate,) = gates(tmp_path, 1)

    async def work(x: int, *, y: int) -> int:
        await asyncio.sleep(0)
        return x + y

    assert asyncio.run(gate.call(work, 1, y=2, max_wait_s=5)) == 3 and gate.requests == 1
