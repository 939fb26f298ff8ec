"""The player calls of the upstream clients against the replay (recorded bodies; a few GENERATED
ones registered with ``add()``, named so), and the value-cleaning helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from chessstats.models.player import FidePlayer
from chessstats.upstream import lichess_players as lp
from chessstats.upstream.fide import FideClient
from chessstats.upstream.fide_site import parse_top_list
from chessstats.upstream.lichess import LichessClient
from tests.replay import FIXTURES, JSON, ReplayUpstream


@pytest.fixture(autouse=True)
def _forget_added_routes(replay: ReplayUpstream) -> Iterator[None]:
    before = set(replay.routes)
    yield
    for path in set(replay.routes) - before:
        replay.routes.pop(path, None)


def lichess_call(upstream: ReplayUpstream, call):  # type: ignore[no-untyped-def]
    async def run():  # type: ignore[no-untyped-def]
        client = LichessClient(upstream.lichess_url, max_requests_per_s=1000)
        try:
            return await call(client)
        finally:
            await client.aclose()
    return asyncio.run(run())


def test_recorded_leaderboard_shapes(upstream: ReplayUpstream) -> None:
    top1 = lichess_call(upstream, lambda c: lp.fetch_leaderboard(c, "bullet", 1))  # production, nb=1
    assert [(e.rank, e.username, e.title, e.rating, e.progress) for e in top1] == [(1, "Ediz_Gurel", "GM", 3342, 20)]
    localdev = (FIXTURES / "lichess/LOCALDEV_player_top_3_blitz.json").read_bytes()  # recorded on a lila dev instance
    upstream.add("/lichess/api/player/top/3/blitz", localdev, JSON)
    top3 = lichess_call(upstream, lambda c: lp.fetch_leaderboard(c, "blitz", 3))
    assert [(e.username, e.title, e.rating) for e in top3] == [("Lola", "WFM", 2466), ("Ana", "IM", 2428),
                                                               ("Yulia", "IM", 2418)]


def test_users_by_ids_production_shape(upstream: ReplayUpstream) -> None:
    users = lichess_call(upstream, lambda c: lp.fetch_users(c, ["thibault", "maia1", "maia5", "nobody_zz"]))
    assert sorted(u.username for u in users) == ["maia1", "maia5", "thibault"]
    assert upstream.last_headers["/lichess/api/users"]["Content-Type"] == "text/plain"
    thibault = next(u for u in users if u.id == "thibault")
    assert thibault.status == "active" and thibault.name == "Thibault Duplessis"
    assert thibault.ratings["ultraBullet"] == {"rating": 1688, "games": 3, "rd": 359, "provisional": True}
    assert "storm" not in thibault.ratings and thibault.ratings["puzzle"]["rating"] == 2012
    with pytest.raises(ValueError):
        lichess_call(upstream, lambda c: lp.fetch_users(c, ["u"] * 301))


def test_localdev_rating_history_zero_based_months(upstream: ReplayUpstream) -> None:
    upstream.add("/lichess/api/user/mary/rating-history",
                 (FIXTURES / "lichess/LOCALDEV_user_mary_rating-history.json").read_bytes(), JSON)  # lila dev instance
    series = lichess_call(upstream, lambda c: lp.fetch_rating_history(c, "mary"))
    by_perf = {s["perfType"]: s["points"] for s in series}
    assert by_perf["ultraBullet"] == []
    assert by_perf["bullet"][0] == {"date": "2026-04-20", "rating": 1430}  # [2026,3,20,1430]: month 3 is April
    assert by_perf["bullet"][-1] == {"date": "2026-07-01", "rating": 1006}


def test_history_dates() -> None:
    assert lp.history_date([2024, 2, 31, 1500]) == "2024-03-31"  # GENERATED: 31 March, zero-based month 2
    assert lp.history_date([2024, 0, 1, 1500]) == "2024-01-01"
    assert lp.history_date([2024, 1, 30, 1500]) is None  # 30 February: not a date
    assert lp.history_date([2024, 12, 1, 1500]) is None  # month 12 does not exist zero-based
    assert lp.fide_history_point(2015081568) == ("2015-08-01", 1568)
    assert lp.fide_history_point("2025121832") == ("2025-12-01", 1832)
    assert lp.fide_history_point(2015131568) is None


def test_fide_value_cleaning() -> None:
    assert [lp.fide_rating(v) for v in (0, "0", "", None, " 2757 ", 2757, "n/a", True)] == [
        None, None, None, None, 2757, 2757, None, None]
    assert [lp.fide_id(v) for v in ("90000006", 90000006, " 35009192 ", "0", "abc", None)] == [
        90000006, 90000006, 35009192, None, None, None]


def test_lichess_fide_mirror_recordings(upstream: ReplayUpstream) -> None:
    erigaisi = lichess_call(upstream, lambda c: lp.fetch_fide_player(c, 35009192))
    assert erigaisi == FidePlayer(fide_id=35009192, name="Erigaisi Arjun", federation="IND", title="GM",
                                  birth_year=2003, ratings={"standard": 2757, "rapid": 2745, "blitz": 2766},
                                  sex="M", inactive=None, source="lichess")
    found = lichess_call(upstream, lambda c: lp.search_fide(c, "Erigaisi"))
    assert [(p.fide_id, p.title) for p in found] == [(35009192, "GM"), (35009060, None)]


def test_official_top_list_fragment() -> None:
    top = parse_top_list((FIXTURES / "fide/ratings.fide.com_a_top_open.html").read_text())
    assert top.skipped == 0 and len(top.players) >= 100
    first = top.players[0]
    assert (first.fide_id, first.name, first.federation, first.birth_year, first.ratings) == (
        1503014, "Carlsen, Magnus", "NOR", 1990, {"standard": 2823})
    assert parse_top_list("<table class='other'><tr><td>1</td></tr></table>").players == []
    # GENERATED: a row without a profile link, and one with an empty rating
    html = ("<table class='top_recors_table'><tr><td>1</td><td>No Link</td><td>NOR</td><td>2800</td></tr>"
            "<tr><td>2</td><td><a href=/profile/42>A, B</a></td><td>FID</td><td></td><td></td></tr></table>")
    parsed = parse_top_list(html)
    assert parsed.skipped == 1 and parsed.players[0].ratings == {"standard": None}
    assert parsed.players[0].birth_year is None and parsed.players[0].fide_id == 42


def test_community_api_player_info_generated(upstream: ReplayUpstream, tmp_path: Path) -> None:
    # GENERATED: the community fide-api /player_info/ shape (no recording exists)
    upstream.add("/fide/player_info/", b'{"fide_id":"1503014","fide_title":"Grandmaster","federation":"Norway",'
                 b'"birth_year":1990,"sex":"Male","name":"Carlsen, Magnus","classical_rating":2823,'
                 b'"rapid_rating":null,"blitz_rating":"0"}', JSON)

    async def run() -> FidePlayer:
        client = FideClient(upstream.url + "/fide")
        try:
            return await client.fetch_player(1503014)
        finally:
            await client.aclose()
    player = asyncio.run(run())
    assert (player.title, player.federation, player.source) == ("Grandmaster", "Norway", "fide")
    assert player.ratings == {"standard": 2823, "rapid": None, "blitz": None}
