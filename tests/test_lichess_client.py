"""The Lichess client against the replay upstream: headers sent, one request at a time, 429 pause,
the gate's errors (HTML 403, deadline), ids that differ by case."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from chessstats.config import load_config
from chessstats.errors import NotFound, UpstreamBlocked, UpstreamError, UpstreamRateLimited
from chessstats.upstream.lichess import LichessClient, open_lichess
from chessstats.upstream.lichess_players import fetch_leaderboard
from tests.replay import JSON, ReplayUpstream


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


def shared(upstream: ReplayUpstream, data_dir: Path, **env: str) -> LichessClient:
    config = load_config(None, env={"LICHESS_API_URL": upstream.lichess_url, "CHESSSTATS_LICHESS_RATE": "1000/1s",
                                    **env})
    return open_lichess(config, data_dir)


def test_open_lichess_shares_the_gate_state(upstream: ReplayUpstream, tmp_path: Path) -> None:
    upstream.set_fault(r"/tournament/sH24g2zH$", "429-date", seconds=20, times=1)

    async def run() -> None:
        first, second = shared(upstream, tmp_path), shared(upstream, tmp_path)
        try:
            with pytest.raises(UpstreamRateLimited) as limited:
                await first.fetch_arena("sH24g2zH")
            assert 18 <= limited.value.retry_after_s <= 20  # Retry-After as an HTTP date
            with pytest.raises(UpstreamRateLimited):
                await fetch_leaderboard(second, "bullet", 10)  # another "worker", another endpoint
            assert first.healthy is False and second.gate.health()["status"] == "paused"
        finally:
            await first.aclose()
            await second.aclose()
    asyncio.run(run())
    assert upstream.total() == 1 and (tmp_path / "gate" / "lichess.state").exists()


def test_html_403_is_upstream_blocked(upstream: ReplayUpstream) -> None:
    upstream.set_fault(r"/tournament/sH24g2zH$", "html403")

    async def run() -> None:
        lichess = client(upstream)
        try:
            with pytest.raises(UpstreamBlocked, match="contact") as err:
                await lichess.fetch_arena("sH24g2zH")
            assert err.value.code == "upstream_blocked" and "CHESSSTATS_CONTACT" in err.value.message
        finally:
            await lichess.aclose()
    asyncio.run(run())


def test_trickling_body_ends_at_the_total_deadline(upstream: ReplayUpstream, tmp_path: Path) -> None:
    upstream.set_fault(r"/tournament/sH24g2zH$", "trickle", interval=0.1)

    async def run() -> float:
        lichess = shared(upstream, tmp_path, CHESSSTATS_LICHESS_TIMEOUT_S="0.8")
        try:
            started = time.perf_counter()
            with pytest.raises(UpstreamError, match="timed out"):
                await lichess.fetch_arena("sH24g2zH")
            return time.perf_counter() - started
        finally:
            await lichess.aclose()
    assert 0.8 <= asyncio.run(run()) < 1.5


def test_ids_differing_only_by_case_are_accepted(upstream: ReplayUpstream) -> None:
    body = (Path(__file__).parent / "fixtures" / "lichess" / "tournament_sH24g2zH.json").read_bytes()
    upstream.add("/lichess/api/tournament/sh24g2zh", body, JSON)
    upstream.add("/lichess/api/tournament/other123", body, JSON)

    async def run() -> None:
        lichess = client(upstream)
        try:
            tournament, _ = await lichess.fetch_arena("sh24g2zh")
            assert tournament.id == "sH24g2zH"  # the upstream's id
            with pytest.raises(NotFound):
                await lichess.fetch_arena("other123")
        finally:
            await lichess.aclose()
    try:
        asyncio.run(run())
    finally:
        upstream.routes.clear()
