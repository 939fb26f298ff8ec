"""The community FIDE ratings API (``FIDE_API_URL``, default ``https://fide-api.vercel.app``).

Endpoints used: ``GET /player_history/?fide_id=N`` (monthly rows, newest first, ``date``
``YYYY-MM``, missing values 0: the fallback of Lichess's FIDE ratings),
``GET /player_info/?fide_id=N&history=false`` (a profile: the fallback of Lichess's
FIDE mirror; ``fide_title`` a long name such as "Grandmaster", ``federation`` a country name,
ratings int or null) and ``GET /top_players/?limit=N&history=false``, a list of
``{rank, name, fide_id, country, rating}`` whose values are all **strings** of scraped text
(``name`` is "Last, First"; ``country`` a 3-letter federation). The list carries no title and no
birth year. Rows without a numeric ``fide_id`` are skipped (counted); a rating that is not a
number becomes None. The service scrapes ratings.fide.com live and answers 502 when FIDE fails.

Every request goes through the upstream's :class:`~chessstats.upstream.gate.UpstreamGate`
(``client.gate``; build the client with :func:`open_fide` to share it across workers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import msgspec

from chessstats.errors import UpstreamError
from chessstats.models.player import FidePlayer
from chessstats.redisconn import RedisBackend
from chessstats.upstream.gate import GateSettings, UpstreamGate, open_gate
from chessstats.upstream.http import GatedClient, build_client, gated_stream

if TYPE_CHECKING:
    from chessstats.config import Config

log = logging.getLogger(__name__)

UPSTREAM = "fide"
#: The community API's default base and the official FIDE rating site.
DEFAULT_URL = "https://fide-api.vercel.app"
OFFICIAL_SITE = "https://ratings.fide.com"


class _TopRow(msgspec.Struct, kw_only=True):
    rank: str | int | None = None
    name: str | None = None
    fide_id: str | int | None = None
    country: str | None = None
    rating: str | int | None = None


_top_decoder = msgspec.json.Decoder(list[_TopRow])


class _Info(msgspec.Struct, kw_only=True):
    fide_id: str | int | None = None
    name: str | None = None
    fide_title: str | None = None
    federation: str | None = None
    birth_year: int | str | None = None
    sex: str | None = None
    classical_rating: int | str | None = None
    rapid_rating: int | str | None = None
    blitz_rating: int | str | None = None


_info_decoder = msgspec.json.Decoder(_Info)


class _Period(msgspec.Struct, kw_only=True):
    date: str | None = None
    classical_rating: int | str | None = None
    rapid_rating: int | str | None = None
    blitz_rating: int | str | None = None


_history_decoder = msgspec.json.Decoder(list[_Period])


def _rating(value: str | int | None) -> int | None:
    """A rating from scraped text: 0, "0", "" and non-numbers are None."""
    return _int(value) or None


def _text(value: str | None) -> str | None:
    return value.strip() or None if value else None


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


class FideClient(GatedClient):
    """Client of the community FIDE API; every request goes through :attr:`gate`.

    **Parameters:**
    * **base_url** - ``FIDE_API_URL``.
    * **contact** - *(optional)* put into the User-Agent.
    * **timeout_s** - *(optional)* connect/read timeout in seconds (the service scrapes FIDE
      live, so it is slow). Defaults to 30.
    * **transport** - *(optional)* an httpx transport (tests).
    * **gate** - *(optional)* the shared gate; None builds one local to this process.
    * **site_url** - *(optional)* the official FIDE rating site (its top-list table is the last
      fallback, :mod:`chessstats.upstream.fide_site`). Defaults to ``https://ratings.fide.com``.
    """

    def __init__(self, base_url: str, *, contact: str = "", timeout_s: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None, gate: UpstreamGate | None = None,
                 site_url: str = OFFICIAL_SITE) -> None:
        self._client = build_client(base_url, contact=contact, timeout_s=timeout_s, transport=transport)
        self.site_url = site_url.rstrip("/")
        self.gate = gate or UpstreamGate(UPSTREAM, GateSettings(timeout_s=timeout_s, max_in_flight=2))

    async def fetch_top(self, limit: int = 100, *, max_wait_s: float | None = None) -> TopList:
        """``GET /top_players/?limit=N&history=false``: the open top list.

        Args:
            limit: rows asked for.
            max_wait_s: seconds to wait for a turn at the gate; None for its ``max_queue_wait_s``.

        Raises:
            UpstreamError: a transport error, a non-2xx answer (the service's 502 when FIDE
                fails), a body that is not a list of rows, the deadline (``timeout_s``) passed.
            UpstreamRateLimited: a 429, or paused after one.
            UpstreamBusy: no turn within the wait bound, or the breaker is open.
        """
        async with gated_stream(self.gate, self._client, "/top_players/",
                                params={"limit": limit, "history": "false"}, max_wait_s=max_wait_s) as resp:
            rows = _top_decoder.decode(await resp.aread())
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

    async def fetch_player(self, fide_id: int, *, max_wait_s: float | None = None) -> FidePlayer:
        """``GET /player_info/?fide_id=N&history=false``: one profile (``0``/empty ratings are None;
        the title is FIDE's long name, kept verbatim; the federation a country name).

        Raises:
            NotFound: a 404 with a JSON body. UpstreamError (and subclasses): as :meth:`fetch_top`.
        """
        return await _fetch_player(self, fide_id, max_wait_s)

    async def fetch_history(self, fide_id: int, *, max_wait_s: float | None = None) -> list[dict[str, object]]:
        """``GET /player_history/?fide_id=N``: ``[{"perfType": standard|rapid|blitz, "points": [{"date":
        "YYYY-MM-01", "rating"}]}]``, points oldest first; the service's months without a rating (its
        ``0``) are left out.

        Raises:
            NotFound, UpstreamError (and subclasses): as :meth:`fetch_player`.
        """
        async with gated_stream(self.gate, self._client, "/player_history/", params={"fide_id": fide_id},
                                max_wait_s=max_wait_s) as resp:
            periods = _history_decoder.decode(await resp.aread())
        series: dict[str, list[dict[str, object]]] = {"standard": [], "rapid": [], "blitz": []}
        for row in periods:
            month = (row.date or "").strip()
            if len(month) != 7 or month[4] != "-" or not (month[:4] + month[5:]).isdigit():
                continue
            for perf, value in (("standard", row.classical_rating), ("rapid", row.rapid_rating),
                                ("blitz", row.blitz_rating)):
                rating = _rating(value)
                if rating is not None:
                    series[perf].append({"date": f"{month}-01", "rating": rating})
        return [{"perfType": perf, "points": sorted(points, key=lambda p: str(p["date"]))}
                for perf, points in series.items()]


async def _fetch_player(client: FideClient, fide_id: int, max_wait_s: float | None) -> FidePlayer:
    async with gated_stream(client.gate, client._client, "/player_info/",
                            params={"fide_id": fide_id, "history": "false"}, max_wait_s=max_wait_s) as resp:
        info = _info_decoder.decode(await resp.aread())
    answered = _int(info.fide_id)
    if answered is not None and answered != fide_id:
        raise UpstreamError(f"{UPSTREAM}: player_info for {fide_id} answered {answered}", UPSTREAM)
    return FidePlayer(fide_id=fide_id, name=_text(info.name), federation=_text(info.federation),
                      title=_text(info.fide_title), birth_year=_rating(info.birth_year), sex=_text(info.sex),
                      ratings={"standard": _rating(info.classical_rating), "rapid": _rating(info.rapid_rating),
                               "blitz": _rating(info.blitz_rating)}, source=UPSTREAM)


def open_fide(config: Config, data_dir: str | Path | None,
              transport: httpx.AsyncBaseTransport | None = None,
              redis: RedisBackend | None = None) -> FideClient:
    """The FIDE client of ``config`` (``[fide]``, ``[upstream] contact``) whose gate shares its slots
    and state with every process using ``<data_dir>/gate`` (None: this process only).

    Raises:
        ValueError: ``fide.rate`` does not parse (the config loader checks it first).
    """
    table = config.fide
    site = config.players.fide_site_url or (
        OFFICIAL_SITE if table.url.rstrip("/") == DEFAULT_URL else table.url.rstrip("/") + "/site")
    return FideClient(table.url, contact=config.upstream.contact, timeout_s=table.timeout_s, transport=transport,
                      gate=open_gate(UPSTREAM, table, data_dir, redis), site_url=site)
