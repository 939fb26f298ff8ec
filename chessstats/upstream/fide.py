"""The community FIDE ratings API (``FIDE_API_URL``, default ``https://fide-api.vercel.app``).

Endpoint used: ``GET /top_players/?limit=N&history=false``, a list of
``{rank, name, fide_id, country, rating}`` whose values are all **strings** of scraped text
(``name`` is "Last, First"; ``country`` a 3-letter federation). The list carries no title and no
birth year. Rows without a numeric ``fide_id`` are skipped (counted); a rating that is not a
number becomes None. The service scrapes ratings.fide.com live and answers 502 when FIDE fails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
import msgspec

from chessstats.errors import UpstreamError
from chessstats.models.player import FidePlayer
from chessstats.upstream.http import build_client, check_response, map_upstream_errors

log = logging.getLogger(__name__)

UPSTREAM = "fide"


class _TopRow(msgspec.Struct, kw_only=True):
    rank: str | int | None = None
    name: str | None = None
    fide_id: str | int | None = None
    country: str | None = None
    rating: str | int | None = None


_top_decoder = msgspec.json.Decoder(list[_TopRow])


def _int(value: str | int | None) -> int | None:
    if isinstance(value, int):
        return value
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.isdigit() else None


@dataclass(slots=True)
class TopList:
    """The FIDE top list: ``players`` in rank order and how many rows were ``skipped``."""

    players: list[FidePlayer]
    skipped: int


class FideClient:
    """Client of the community FIDE API.

    **Parameters:**
    * **base_url** - ``FIDE_API_URL``.
    * **contact** - *(optional)* put into the User-Agent.
    * **timeout_s** - *(optional)* per-request timeout in seconds (the service scrapes FIDE
      live, so it is slow). Defaults to 30.
    * **transport** - *(optional)* an httpx transport (tests).
    """

    def __init__(self, base_url: str, *, contact: str = "", timeout_s: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = build_client(base_url, contact=contact, timeout_s=timeout_s, transport=transport)
        self.requests = 0
        self.healthy = True

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def fetch_top(self, limit: int = 100) -> TopList:
        """``GET /top_players/?limit=N&history=false``: the open top list.

        Raises:
            UpstreamError: a transport error, a non-2xx answer (the service's 502 when FIDE
                fails), a body that is not a list of rows.
            UpstreamRateLimited: a 429.
        """
        self.requests += 1
        try:
            with map_upstream_errors(UPSTREAM):
                resp = await self._client.get("/top_players/", params={"limit": limit, "history": "false"},
                                              headers={"Accept": "application/json"})
                check_response(resp, UPSTREAM)
                rows = _top_decoder.decode(resp.content)
        except UpstreamError:
            self.healthy = False
            raise
        self.healthy = True
        players, skipped = [], 0
        for row in rows:
            fide_id = _int(row.fide_id)
            if fide_id is None:
                skipped += 1
                continue
            name = row.name.strip() if row.name else None
            country = row.country.strip() if row.country else None
            players.append(FidePlayer(fide_id=fide_id, name=name or None, federation=country or None,
                                      ratings={"standard": _int(row.rating)}))
        if skipped:
            log.warning("fide top list: skipped %d rows without a numeric fide_id", skipped)
        return TopList(players, skipped)
