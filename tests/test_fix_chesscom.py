"""Chess.com players: failed months remembered and bounded per request, stored-player ids out of range,
the titled list paginated and cached a day, and the Chess.com rating-history answer.

Real server on a socket, the replay upstream (tests/replay.py) with its request counts. Cases no
recording has are GENERATED here with ``add_json`` (archive lists and months in the recorded shapes).
"""

from __future__ import annotations

import calendar
import json
import time
from pathlib import Path

import pytest

from tests.conftest import Server, add_json, err, ok
from tests.replay import ReplayUpstream

CC = "/chesscom/pub"
FIXTURES = Path(__file__).parent / "fixtures" / "chesscom"

pytestmark = pytest.mark.usefixtures("forget_added_routes")


def month_calls(upstream: ReplayUpstream, user: str) -> dict[str, int]:
    """Upstream requests for ``user``'s monthly archives, by path."""
    prefix = f"{CC}/player/{user}/games/"
    return {p: n for p, n in upstream.counts.items() if p.startswith(prefix) and p[len(prefix):][:1].isdigit()}


def recorded_games() -> list[dict]:
    return json.loads((FIXTURES / "player_fabianocaruana_games_2020_05.json").read_bytes())["games"]


# --- 1. a failed month is remembered; one request starts a bounded number of month fetches ------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_failed_months_are_remembered_and_a_request_fetches_at_most_6(start_server: object, upstream: ReplayUpstream,
                                                                      workers: str) -> None:
    """afgano29's recorded archive list names 68 months, none recorded: each answers 404. With two
    workers the memory is shared (the cache), so whichever worker answers the repeat skips them."""
    server = start_server("--no-jobs", "--workers", workers)  # type: ignore[operator]
    upstream.reset()
    months = json.loads((FIXTURES / "player_afgano29_games_archives.json").read_bytes())["archives"]
    labels = sorted((m.rsplit("/", 2)[-2] + "-" + m.rsplit("/", 1)[-1] for m in months), reverse=True)
    first = ok(server.client.get("/api/players/chesscom/afgano29/games?max=5"))
    calls = month_calls(upstream, "afgano29")
    assert len(calls) == 6 and set(calls.values()) == {1}, calls
    assert first["data"] == [] and first["failedMonths"] == labels[:6]
    assert first["notYetFetched"] == labels[6:]
    upstream.reset()
    second = ok(server.client.get("/api/players/chesscom/afgano29/games?max=5"))
    again = month_calls(upstream, "afgano29")
    assert not set(again) & set(calls), again  # no upstream call for a month that failed
    assert len(again) == 6  # the next six months of the range instead
    assert second["failedMonths"] == labels[:12] and second["notYetFetched"] == labels[12:]
    assert upstream.total() == 6  # the archive list is not asked again within 5 minutes
    seen = set(calls) | set(again)
    for n in (3, 4, 5):  # more repeats (with two workers, each answers some): never a month asked twice
        upstream.reset()
        body = ok(server.client.get("/api/players/chesscom/afgano29/games?max=5"))
        now = month_calls(upstream, "afgano29")
        assert len(now) == 6 and not set(now) & seen, now
        seen |= set(now)
        assert body["failedMonths"] == labels[:6 * n]


def test_a_5xx_month_is_remembered_briefly_then_fetched_again(start_server: object,
                                                              upstream: ReplayUpstream) -> None:
    srv = start_server(env={"CHESSSTATS_CACHE_FAILURE_BASE_S": "1"})  # type: ignore[operator]
    add_json(upstream, f"{CC}/player/flaky/games/archives",  # GENERATED, the recorded list's shape
             {"archives": [f"https://api.chess.com/pub/player/flaky/games/{m}" for m in ("2020/04", "2020/05")]})
    add_json(upstream, f"{CC}/player/flaky/games/2020/05", {"games": recorded_games()[:2]})
    add_json(upstream, f"{CC}/player/flaky/games/2020/04", {"games": recorded_games()[2:3]})
    upstream.set_fault(r"/player/flaky/games/2020/04$", "500")
    upstream.reset()
    body = ok(srv.client.get("/api/players/chesscom/flaky/games"))
    assert len(body["data"]) == 2 and body["failedMonths"] == ["2020-04"] and "notYetFetched" not in body
    failed_calls = upstream.counts[f"{CC}/player/flaky/games/2020/04"]
    assert failed_calls >= 1
    upstream.reset()
    again = ok(srv.client.get("/api/players/chesscom/flaky/games"))
    assert again["failedMonths"] == ["2020-04"] and upstream.total() == 0  # remembered: no upstream call
    upstream.clear_faults()
    time.sleep(1.3)  # past the 1 s remembered interval ([cache] failure_base_s)
    upstream.reset()
    healed = ok(srv.client.get("/api/players/chesscom/flaky/games"))
    assert healed["failedMonths"] == [] and len(healed["data"]) == 3
    assert upstream.counts == {f"{CC}/player/flaky/games/2020/04": 1}


def test_a_long_history_is_read_over_several_requests(server: Server, upstream: ReplayUpstream) -> None:
    games = recorded_games()
    months = [f"2019/{m:02d}" for m in range(5, 13)]  # 8 months, one game each (GENERATED)
    add_json(upstream, f"{CC}/player/longtimer/games/archives",
             {"archives": [f"https://api.chess.com/pub/player/longtimer/games/{m}" for m in months]})
    for i, m in enumerate(months):
        add_json(upstream, f"{CC}/player/longtimer/games/{m}", {"games": [games[i]]})
    first = ok(server.client.get("/api/players/chesscom/longtimer/games?max=300"))
    assert len(first["data"]) == 6 and first["notYetFetched"] == ["2019-06", "2019-05"]
    assert len(month_calls(upstream, "longtimer")) == 6
    upstream.reset()
    second = ok(server.client.get("/api/players/chesscom/longtimer/games?max=300"))
    assert len(second["data"]) == 8 and "notYetFetched" not in second and second["failedMonths"] == []
    assert month_calls(upstream, "longtimer") == {f"{CC}/player/longtimer/games/2019/06": 1,
                                                  f"{CC}/player/longtimer/games/2019/05": 1}


# --- 2. stored-player ids out of range are 400, unknown ones 404 --------------------------------------


@pytest.mark.parametrize("pid", ["99999999999999999999999999", "9223372036854775808", "-1", "0"])
def test_a_player_id_out_of_range_is_400(server: Server, upstream: ReplayUpstream, pid: str) -> None:
    body = err(server.client.get(f"/api/players/{pid}"), 400, "bad_request")
    assert "player id" in body["error"]
    link = server.admin("POST", f"/api/admin/players/{pid}/links",
                        json={"platform": "chesscom", "account": "FabianoCaruana"})
    assert "player id" in err(link, 400, "bad_request")["error"]
    assert upstream.total() == 0  # refused before the account is fetched


def test_an_unknown_player_id_in_range_is_404(server: Server, upstream: ReplayUpstream) -> None:
    err(server.client.get("/api/players/9223372036854775807"), 404, "not_found")
    err(server.client.get("/api/players/123456"), 404, "not_found")
    link = server.admin("POST", "/api/admin/players/9223372036854775807/links",
                        json={"platform": "chesscom", "account": "FabianoCaruana"})
    err(link, 404, "not_found")


# --- 3. the titled list is paginated and cached a day -----------------------------------------------


def test_titled_list_is_paginated_and_cached_a_day(server: Server, upstream: ReplayUpstream) -> None:
    recorded = json.loads((FIXTURES / "titled_GM.json").read_bytes())["players"]
    resp = server.client.get("/api/players/chesscom/titled/GM?page=2&limit=5")
    body = ok(resp)
    assert body["data"] == {"title": "GM", "count": len(recorded), "players": recorded[5:10]}
    assert body["pagination"] == {"page": 2, "limit": 5, "total": len(recorded),
                                  "totalPages": (len(recorded) + 4) // 5}
    assert int(resp.headers["cache-control"].rsplit("=", 1)[-1]) > 86_400 - 120
    assert upstream.counts == {f"{CC}/titled/GM": 1}
    upstream.reset()
    default = server.client.get("/api/players/chesscom/titled/gm")
    first = ok(default)
    assert default.headers["x-cache"] == "HIT" and upstream.total() == 0  # every page from one entry
    assert first["data"]["players"] == recorded[:100] and first["pagination"]["limit"] == 100
    last = ok(server.client.get(f"/api/players/chesscom/titled/GM?page={(len(recorded) + 4) // 5}&limit=5"))
    assert last["data"]["players"] == recorded[-(len(recorded) % 5 or 5):]
    beyond = ok(server.client.get("/api/players/chesscom/titled/GM?page=1000&limit=5"))
    assert beyond["data"]["players"] == [] and beyond["pagination"]["total"] == len(recorded)
    for bad in ("page=0", "limit=0", "limit=501", "page=x", "page=100001"):
        err(server.client.get(f"/api/players/chesscom/titled/GM?{bad}"), 400, "bad_request")


# --- 4. a Chess.com rating history, built from the monthly archives ---------------------------------


def test_chesscom_history_from_the_monthly_archives(server: Server, upstream: ReplayUpstream) -> None:
    recorded = recorded_games()
    may_points: dict[str, dict[str, tuple[int, int]]] = {}
    for g in recorded:  # the recorded month, read independently: the day's last game per time class
        side = next(s for s in (g["white"], g["black"]) if s["username"].lower() == "fabianocaruana")
        day = time.strftime("%Y-%m-%d", time.gmtime(g["end_time"]))
        best = may_points.setdefault(g["time_class"], {}).get(day)
        if best is None or best[0] <= g["end_time"]:
            may_points[g["time_class"]][day] = (g["end_time"], side["rating"])
    # GENERATED April: two blitz games the same day (the later one counts), a Chess960 daily game, and a
    # game of two other players (no point)
    base = recorded[0]
    april = []
    for end, rating, tc, rules, me in ((1587900000, 2990, "blitz", "chess", True),
                                       (1587903600, 3001, "blitz", "chess", True),
                                       (1587000000, 2100, "daily", "chess960", True),
                                       (1587950000, 1500, "blitz", "chess", False)):
        g = json.loads(json.dumps(base))
        g.update(end_time=end, time_class=tc, rules=rules, uuid=f"GENERATED-{end}")
        g["white"] = {**g["white"], "username": "FabianoCaruana" if me else "someone", "rating": rating}
        g["black"] = {**g["black"], "username": "other", "rating": 1000}
        april.append(g)
    listed = [f"https://api.chess.com/pub/player/fabianocaruana/games/{m}" for m in ("2020/04", "2020/05")]
    add_json(upstream, f"{CC}/player/fabianocaruana/games/archives", {"archives": listed})
    add_json(upstream, f"{CC}/player/fabianocaruana/games/2020/04", {"games": april})
    resp = server.client.get("/api/players/chesscom/FabianoCaruana/history")
    body = ok(resp)
    assert resp.headers["x-cache"] == "MISS" and body["failedMonths"] == [] and "notYetFetched" not in body
    series = {s["perfType"]: s["points"] for s in body["data"]}
    assert [s["perfType"] for s in body["data"]] == ["blitz", "rapid", "daily960"]
    assert series["blitz"] == [{"date": "2020-04-26", "rating": 3001}] + \
        [{"date": d, "rating": r} for d, (_, r) in sorted(may_points["blitz"].items())]
    assert series["rapid"] == [{"date": d, "rating": r} for d, (_, r) in sorted(may_points["rapid"].items())]
    assert series["rapid"][0] == {"date": "2020-05-05", "rating": 2773}
    assert series["daily960"] == [{"date": "2020-04-16", "rating": 2100}]
    assert upstream.counts[f"{CC}/player/fabianocaruana/games/2020/05"] == 1
    upstream.reset()
    assert ok(server.client.get("/api/players/chesscom/fabianocaruana/history"))["data"] == body["data"]
    assert upstream.total() == 0  # past months stored, the archive list checked at most every 5 minutes


def generated_account(upstream: ReplayUpstream, name: str, side: str, months: list[str]) -> None:
    """A GENERATED Chess.com account ``name`` in the replay: an archive list of ``months``
    (``YYYY/MM``) and one recorded game a month, played by ``name`` as ``side`` on the 15th."""
    user = name.lower()
    games = recorded_games()
    add_json(upstream, f"{CC}/player/{user}/games/archives",
             {"archives": [f"https://api.chess.com/pub/player/{user}/games/{m}" for m in months]})
    for i, m in enumerate(months):
        g = json.loads(json.dumps(games[i]))
        g[side]["username"] = name
        g["end_time"] = calendar.timegm(time.strptime(f"{m}/15", "%Y/%m/%d"))
        add_json(upstream, f"{CC}/player/{user}/games/{m}", {"games": [g]})


def test_chesscom_history_is_bounded_per_request_and_404_for_an_unknown_user(server: Server,
                                                                            upstream: ReplayUpstream) -> None:
    generated_account(upstream, "LongTimer", "white", [f"2019/{m:02d}" for m in range(5, 13)])  # 8 months
    first = ok(server.client.get("/api/players/chesscom/longtimer/history"))
    assert first["notYetFetched"] == ["2019-06", "2019-05"] and len(month_calls(upstream, "longtimer")) == 6
    assert sum(len(s["points"]) for s in first["data"]) == 6
    upstream.reset()
    second = ok(server.client.get("/api/players/chesscom/longtimer/history"))
    assert "notYetFetched" not in second and sum(len(s["points"]) for s in second["data"]) == 8
    assert len(month_calls(upstream, "longtimer")) == 2
    err(server.client.get("/api/players/chesscom/nonexistent_user_xyz_123/history"), 404, "not_found")
    err(server.client.get("/api/players/chesscom/bad.name/history"), 400, "bad_request")


def test_chesscom_history_serves_stored_months_past_the_budget(server: Server, upstream: ReplayUpstream) -> None:
    generated_account(upstream, "Historian", "black", [f"2019/{m:02d}" for m in range(3, 12)])  # 9 months
    until = calendar.timegm(time.strptime("2019/04/30", "%Y/%m/%d")) * 1000
    ok(server.client.get(f"/api/players/chesscom/historian/games?until={until}"))  # stores March and April
    assert set(month_calls(upstream, "historian")) == {f"{CC}/player/historian/games/2019/03",
                                                       f"{CC}/player/historian/games/2019/04"}
    upstream.reset()
    body = ok(server.client.get("/api/players/chesscom/historian/history"))
    assert body["notYetFetched"] == ["2019-05"]  # the six newest fetched; May still needs a request
    dates = [p["date"] for s in body["data"] for p in s["points"]]
    assert "2019-04-15" in dates and "2019-03-15" in dates and len(dates) == 8  # stored months served
    assert len(month_calls(upstream, "historian")) == 6
