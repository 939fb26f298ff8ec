"""Lichess leaderboards, through the shared :class:`~chessstats.upstream.lichess.LichessClient`
(its upstream gate: in-flight slot, rate, 429 pause, deadline, breaker; and its error mapping).

Endpoint: ``GET /player/top/{nb}/{perfType}`` (``Accept: application/vnd.lichess.v3+json``),
answering ``{"users": [{id, username, title?, patron?, perfs: {<perf>: {rating, progress}}}]}``.
``nb`` is at most 100 per Lichess's spec, and there is no leaderboard for correspondence.
"""

from __future__ import annotations

import msgspec

from chessstats.upstream.lichess import LichessClient

#: Lichess's media type for leaderboards.
LEADERBOARD_MEDIA_TYPE = "application/vnd.lichess.v3+json"
#: The largest ``nb`` Lichess documents.
MAX_NB = 100


class _Perf(msgspec.Struct, kw_only=True):
    rating: int | None = None
    progress: int | None = None


class _TopUser(msgspec.Struct, kw_only=True):
    id: str | None = None
    username: str
    title: str | None = None
    perfs: dict[str, _Perf] = {}


class _Top(msgspec.Struct, kw_only=True):
    users: list[_TopUser] = []


_top_decoder = msgspec.json.Decoder(_Top)


class LeaderboardEntry(msgspec.Struct, rename="camel", kw_only=True):
    """``{rank, username, title, rating, progress, fideId, federation}`` (API.md LeaderboardEntry);
    rank counts from 1; fields the upstream does not have are null."""

    rank: int
    username: str
    title: str | None = None
    rating: int | None = None
    progress: int | None = None
    fide_id: int | None = None
    federation: str | None = None


async def fetch_leaderboard(client: LichessClient, perf_type: str, nb: int = MAX_NB, *,
                            max_wait_s: float | None = None) -> list[LeaderboardEntry]:
    """``GET /player/top/{nb}/{perfType}``: the top ``nb`` (1..100) players of a perf, in rank order.

    Args:
        max_wait_s: seconds to wait for a turn at the gate; None for its ``max_queue_wait_s``.

    Raises:
        ValueError: ``nb`` out of 1..100.
        NotFound / UpstreamError / UpstreamRateLimited / UpstreamBusy: as every Lichess request
            (an undecodable body is an UpstreamError counted by the gate's breaker).
    """
    if not 1 <= nb <= MAX_NB:
        raise ValueError(f"nb must be 1..{MAX_NB}, got {nb}")
    async with client._request(f"/player/top/{nb}/{perf_type}", accept=LEADERBOARD_MEDIA_TYPE,
                               max_wait_s=max_wait_s) as resp:
        top = _top_decoder.decode(await resp.aread())
    out = []
    for rank, user in enumerate(top.users, 1):
        perf = user.perfs.get(perf_type)
        out.append(LeaderboardEntry(rank=rank, username=user.username, title=user.title,
                                    rating=perf.rating if perf else None, progress=perf.progress if perf else None))
    return out
