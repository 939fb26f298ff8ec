"""Background calls at the gate alone (file state and Redis state): they give way to a waiting
interactive call of another "worker", never take the last of several slots, use at most
``background_share`` of the rate, and obey the 429 pause; the refusal after waiting for a slot says so.
Several gate objects on one directory (or one Redis) stand in for worker processes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from chessstats.errors import UpstreamBusy, UpstreamRateLimited
from chessstats.upstream.gate import GateSettings, Rate, UpstreamGate, background_calls, in_background
from chessstats.upstream.gate_redis import RedisGate
from tests.redis_server import RedisServer


def settings(**kwargs: object) -> GateSettings:
    base: dict[str, object] = {"rate": Rate(1000, 1.0), "max_queue_wait_s": 2.0, "pause_after_429_s": 1.0,
                               "max_pause_s": 4.0, "breaker_failures": 3, "breaker_open_s": 0.5}
    base.update(kwargs)
    return GateSettings(**base)  # type: ignore[arg-type]


@pytest.fixture(params=["files", "redis"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """``make(n, **settings)``: n gates sharing one state (a gate dir, or the test Redis)."""
    made: list[UpstreamGate] = []
    backends: list[object] = []

    def build(n: int, **kwargs: object) -> list[UpstreamGate]:
        if request.param == "files":
            out = [UpstreamGate("test", settings(**kwargs), tmp_path / "gate") for _ in range(n)]
        else:
            from chessstats.redisconn import RedisBackend

            server: RedisServer = request.getfixturevalue("redis")
            server.flush()
            out = []
            for _ in range(n):
                backend = RedisBackend(server.url, lease_s=2.0)
                backends.append(backend)
                out.append(RedisGate("test", settings(**kwargs), backend))
        made.extend(out)
        return out

    yield build
    for gate in made:
        gate.close()
    for backend in backends:
        backend.close()  # type: ignore[attr-defined]


async def hold(gate: UpstreamGate, order: list[str], name: str, hold_s: float = 0.0, **kw: object) -> None:
    async with gate.request(**kw) as call:  # type: ignore[arg-type]
        order.append(name)
        call.status = 200
        await asyncio.sleep(hold_s)


def test_background_context_reaches_created_tasks() -> None:
    async def run() -> tuple[bool, bool, bool]:
        with background_calls():
            inside = await asyncio.create_task(asyncio.sleep(0, in_background()))
        return in_background(), inside, True

    assert asyncio.run(run()) == (False, True, True)


def test_background_gives_way_to_an_interactive_call_of_another_worker(make: object) -> None:
    bg_gate, user_gate = make(2, max_in_flight=1)  # type: ignore[operator]
    order: list[str] = []

    async def run() -> None:
        first = asyncio.create_task(hold(bg_gate, order, "bg1", 0.3, background=True))
        await asyncio.sleep(0.1)  # bg1 holds the only slot
        queued = [asyncio.create_task(hold(bg_gate, order, f"bg{i}", background=True)) for i in range(2, 8)]
        await asyncio.sleep(0.05)
        user = asyncio.create_task(hold(user_gate, order, "user"))  # waits for bg1, announces itself
        await asyncio.gather(first, user, *queued)

    asyncio.run(run())
    assert order[:2] == ["bg1", "user"], order  # the queued background calls let the user's call go first
    assert user_gate.stats()["backgroundCalls"] == 0 and bg_gate.stats()["backgroundCalls"] == 7


def test_background_never_takes_the_last_slot(make: object) -> None:
    a, b, user = make(3, max_in_flight=2)  # type: ignore[operator]
    order: list[str] = []

    async def run() -> None:
        first = asyncio.create_task(hold(a, order, "bg1", 0.4, background=True))
        await asyncio.sleep(0.1)
        with pytest.raises(UpstreamBusy, match="background"):  # slot 1 is the interactive calls' own
            await hold(b, order, "bg2", background=True, max_wait_s=0.2)
        await hold(user, order, "user", max_wait_s=0)  # a user's call gets it at once
        await first

    asyncio.run(run())
    assert order == ["bg1", "user"]


def test_background_uses_at_most_its_share_of_the_rate(make: object) -> None:
    a, b = make(2, rate=Rate(20, 1.0), background_share=0.5)  # type: ignore[operator]
    sends: list[float] = []

    async def one(gate: UpstreamGate) -> None:
        async with gate.request(background=True) as call:
            sends.append(gate._clock())
            call.status = 200

    async def run() -> None:
        await asyncio.gather(*(one((a, b)[i % 2]) for i in range(5)))

    asyncio.run(run())
    sends.sort()
    gaps = [y - x for x, y in zip(sends, sends[1:], strict=False)]
    assert min(gaps) >= 0.075, gaps  # half of 20/s: one every 0.1 s (the full rate would allow 0.05 s)


def test_background_is_refused_during_a_pause(make: object) -> None:
    a, b = make(2)  # type: ignore[operator]

    async def run() -> None:
        with pytest.raises(UpstreamRateLimited):
            async with a.request() as call:
                call.status = 429
                raise UpstreamRateLimited("429", "test", 5)
        with pytest.raises(UpstreamRateLimited), background_calls():
            await hold(b, [], "bg")

    asyncio.run(run())
    assert b.stats()["calls"] == 0


def test_refusal_after_waiting_for_a_slot_says_so(tmp_path: Path) -> None:
    holder, user = (UpstreamGate("test", settings(rate=Rate(1, 1.0)), tmp_path / "gate") for _ in range(2))

    async def run() -> UpstreamBusy:
        first = asyncio.create_task(hold(holder, [], "first", 0.5))
        await asyncio.sleep(0.05)
        with pytest.raises(UpstreamBusy) as busy:
            await hold(user, [], "user", max_wait_s=0.8)  # the slot frees after ~0.45 s, the next send is 0.5 s later
        await first
        return busy.value

    message = asyncio.run(run()).message
    assert "for a request in flight to finish" in message and "left of the 0.8 s wait bound" in message, message
