"""The Lichess client against the replay upstream: headers sent, one request at a time, 429 pause."""

from __future__ import annotations

import asyncio
import time

import pytest

from chessstats.errors import NotFound, UpstreamError, UpstreamRateLimited
from chessstats.upstream.lichess import LichessClient
from tests.replay import ReplayUpstream


def client(upstream: ReplayUpstream, **kwargs: object) -> LichessClient:
    return LichessClient(upstream.lichess_url, max_requests_per_s=1000, **kwargs)  # type: ignore[arg-type]


def test_user_agent_and_token_are_sent(upstream: ReplayUpstream) -> None:
    async def run() -> None:
        lichess = client(upstream, token="lip_secret", contact="ops@example.org")
        try:
            await lichess.fetch_arena("sH24g2zH")
        finally:
            await lichess.aclose()
    asyncio.run(run())
    headers = upstream.last_headers["/lichess/api/tournament/sH24g2zH"]
    assert headers["Authorization"] == "Bearer lip_secret"
    assert headers["User-Agent"].startswith("chessstats/") and "ops@example.org" in headers["User-Agent"]


def test_requests_never_overlap(upstream: ReplayUpstream) -> None:
    upstream.set_fault(r"/tournament/sH24g2zH$", "slow", seconds=0.4)

    async def run() -> float:
        lichess = client(upstream)
        try:
            started = time.perf_counter()
            await asyncio.gather(*(lichess.fetch_arena("sH24g2zH") for _ in range(3)))
            return time.perf_counter() - started
        finally:
            await lichess.aclose()
    assert asyncio.run(run()) >= 1.2  # three 0.4 s answers, one after another


def test_429_pauses_the_client(upstream: ReplayUpstream) -> None:
    upstream.set_fault(r"/tournament/sH24g2zH$", "429-retry", seconds=30, times=1)

    async def run() -> None:
        lichess = client(upstream)
        try:
            with pytest.raises(UpstreamRateLimited) as first:
                await lichess.fetch_arena("sH24g2zH")
            assert first.value.retry_after_s == 30
            with pytest.raises(UpstreamRateLimited) as second:
                await lichess.fetch_arena("sH24g2zH")
            assert 1 <= second.value.retry_after_s <= 30
        finally:
            await lichess.aclose()
    asyncio.run(run())
    assert upstream.total() == 1


def test_error_tree_keeps_the_cause(upstream: ReplayUpstream) -> None:
    async def run() -> None:
        lichess = client(upstream)
        try:
            with pytest.raises(NotFound):
                await lichess.fetch_tournament("zzzzzzzz")
            upstream.set_fault(r"/tournament/sH24g2zH$", "badjson")
            with pytest.raises(UpstreamError) as err:
                await lichess.fetch_arena("sH24g2zH")
            assert err.value.__cause__ is not None and err.value.upstream == "lichess"
            upstream.clear_faults()
            upstream.set_fault(r"/tournament/sH24g2zH$", "html404")
            with pytest.raises(UpstreamError, match="HTML"):
                await lichess.fetch_arena("sH24g2zH")
        finally:
            await lichess.aclose()
    asyncio.run(run())
