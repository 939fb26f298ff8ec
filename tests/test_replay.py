"""Tests of the local replay upstream (tests/replay.py). Plain sync clients only; no chessstats import."""
from __future__ import annotations

import email.utils
import http.client
import io
import json
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import chess.pgn
import pytest

from tests.replay import FAULT_KINDS, ReplayUpstream, generate_arena

LICHESS = Path(__file__).parent / "fixtures" / "lichess"
JSON, NDJSON, PGN = "application/json", "application/x-ndjson", "application/x-chess-pgn"


@pytest.fixture(scope="module")
def server():
    with ReplayUpstream() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _clean(server):
    server.reset()
    server.clear_faults()
    yield


def request(server, path, method="GET", headers=None, body=None):
    """Return (status, headers, body) using http.client."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def raw_chunks(server, path, headers=""):
    """GET over a raw socket. Return (status line, head, list of chunk payloads, saw the 0-chunk)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
        data = b""
        while part := sock.recv(65536):
            data += part
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    chunks = []
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return head.split(b"\r\n")[0], head, chunks, True
        chunks.append(rest[:size])
        rest = rest[size + 2 :]
    return head.split(b"\r\n")[0], head, chunks, False


ROUTES = [
    ("/lichess/api/tournament", "", "tournament_current.json", JSON),
    ("/lichess/api/tournament/sH24g2zH", "", "tournament_sH24g2zH.json", JSON),
    ("/lichess/api/tournament/may24lta", "", "tournament_may24lta.json", JSON),
    ("/lichess/api/tournament/sH24g2zH/results?sheet=true", "", "tournament_sH24g2zH_results_sheet.ndjson", NDJSON),
    ("/lichess/api/tournament/hallow23/results", "", "tournament_hallow23_results_nb3.ndjson", NDJSON),
    ("/lichess/api/tournament/may25bta/results", "", "tournament_may25bta_results_nb1_sheet.ndjson", NDJSON),
    ("/lichess/api/tournament/sH24g2zH/games", "", "tournament_sH24g2zH_games.pgn", PGN),
    ("/lichess/api/tournament/sH24g2zH/games", NDJSON, "tournament_sH24g2zH_games.pgn", PGN),
    ("/lichess/api/tournament/may25bta/games", "", "tournament_may25bta_games_first.pgn", PGN),
    ("/lichess/api/tournament/may25bta/games", NDJSON, "tournament_may25bta_games_first.ndjson", NDJSON),
    ("/lichess/api/swiss/YxwjQGYu", "", "swiss_YxwjQGYu.json", JSON),
    ("/lichess/api/swiss/YxwjQGYu/results", NDJSON, "swiss_YxwjQGYu_results_nb1.ndjson", NDJSON),
    ("/lichess/api/swiss/YxwjQGYu/games", PGN, "swiss_YxwjQGYu_games_first.pgn", PGN),
    ("/lichess/api/swiss/YxwjQGYu/games", NDJSON, "swiss_YxwjQGYu_games_first.ndjson", NDJSON),
    ("/lichess/api/swiss/ADAHHiMX/results", "", "swiss_ADAHHiMX_results_nb3.ndjson", NDJSON),
    ("/lichess/api/swiss/a2vcYLBJ/games", NDJSON, "swiss_a2vcYLBJ_games.pgn", PGN),
    ("/lichess/api/team/lichess-swiss/swiss", "", "team_lichess-swiss_swiss_max1.ndjson", NDJSON),
    ("/lichess/api/player", "", "player.json", JSON),
    ("/lichess/api/player/top/1/bullet", "", "player_top_1_bullet.json", JSON),
    ("/lichess/api/user/thibault", "", "user_thibault.json", JSON),
    ("/lichess/api/user/ediz_gurel/rating-history", "", "user_Ediz_Gurel_rating-history.json", JSON),
    ("/lichess/game/export/q7ZvsdUF", JSON, "game_export_q7ZvsdUF.json", JSON),
    ("/lichess/game/export/q7ZvsdUF", "", "game_export_q7ZvsdUF.pgn", PGN),
    ("/lichess/game/export/4pSpQGR7", "", "game_export_4pSpQGR7.json", JSON),
]


@pytest.mark.parametrize("path,accept,name,ctype", ROUTES)
def test_routes_serve_recorded_bytes(server, path, accept, name, ctype):
    status, headers, body = request(server, path, headers={"Accept": accept} if accept else {})
    assert status == 200
    assert headers["Content-Type"] == ctype
    assert body == (LICHESS / name).read_bytes()
    chunked = headers.get("Transfer-Encoding") == "chunked"
    assert chunked == (ctype != JSON)


def test_sidecar_headers_are_replayed(server):
    _, headers, _ = request(server, "/lichess/api/tournament/hallow23/results")
    assert headers["Content-Disposition"].endswith("_hallow23_halloween-arena-2023.ndjson")
    assert len(headers.get_all("Server")) == 1


def test_games_export_by_ids(server):
    for accept, name in ((NDJSON, "games_export_ids_TJxUmbWK.ndjson"), ("", "games_export_ids_TJxUmbWK.pgn")):
        status, _, body = request(server, "/lichess/api/games/export/_ids", "POST",
                                  {"Accept": accept} if accept else {}, b"TJxUmbWK")
        assert (status, body) == (200, (LICHESS / name).read_bytes())


def test_nb_keeps_first_lines(server):
    lines = (LICHESS / "tournament_sH24g2zH_results_sheet.ndjson").read_bytes().splitlines(keepends=True)
    _, _, body = request(server, "/lichess/api/tournament/sH24g2zH/results?nb=3&sheet=true")
    assert body == b"".join(lines[:3])
    _, _, body = request(server, "/lichess/api/swiss/ADAHHiMX/results?nb=1")
    assert body.count(b"\n") == 1 and json.loads(body)["rank"] == 1


def test_chunk_boundaries_split_records(server):
    status, _, chunks, terminated = raw_chunks(server, "/lichess/api/tournament/sH24g2zH/results")
    assert status.endswith(b"200 OK") and terminated
    assert b"".join(chunks) == (LICHESS / "tournament_sH24g2zH_results_sheet.ndjson").read_bytes()
    assert len(chunks) > 10 and all(len(c) <= 700 for c in chunks)
    assert any(not c.endswith(b"\n") for c in chunks[:-1])  # some record spans two chunks


@pytest.mark.parametrize("path", [
    "/lichess/api/tournament/nosuchid", "/lichess/api/tournament/nosuchid/results",
    "/lichess/api/swiss/nosuchid/games", "/lichess/api/nope", "/lichess/game/export/zzzzzzzz",
    "/chesscom/elsewhere", "/fide/player_info/", "/elsewhere",
])
def test_not_found_shape(server, path):
    status, headers, body = request(server, path)
    assert (status, headers["Content-Type"], json.loads(body)) == (404, JSON, {"error": "Not found"})


def test_counts_reset_and_last_headers(server):
    for _ in range(3):
        request(server, "/lichess/api/tournament?x=1", headers={"user-agent": "chessstats-test/1"})
    request(server, "/lichess/api/player", headers={"Authorization": "Bearer t"})
    assert server.counts == {"/lichess/api/tournament": 3, "/lichess/api/player": 1}
    assert server.total() == 4
    assert server.last_headers["/lichess/api/tournament"]["User-Agent"] == "chessstats-test/1"
    assert server.last_headers["/lichess/api/player"].get("authorization") == "Bearer t"
    _, _, body = request(server, "/_replay/counts")
    assert json.loads(body) == {"total": 4, "paths": server.counts}
    server.reset()
    assert server.total() == 0 and server.counts == {} and server.last_headers == {}


def test_add_overrides_route(server):
    server.add("/lichess/api/tournament/sH24g2zH", b'{"id":"x"}', JSON)
    server.add("/lichess/api/tournament/new1/results", b'{"rank":1}\n{"rank":2}\n', NDJSON)
    try:
        assert request(server, "/lichess/api/tournament/sH24g2zH")[2] == b'{"id":"x"}'
        assert request(server, "/lichess/api/tournament/new1/results?nb=1")[2] == b'{"rank":1}\n'
    finally:
        server.routes.clear()


ERRORS = [
    ("429", {}, 429, JSON, None),
    ("429-retry", {"seconds": 7}, 429, JSON, "7"),
    ("500", {}, 500, JSON, None),
    ("html404", {}, 404, "text/html", None),
    ("html403", {}, 403, "text/html", None),
    ("html500", {}, 502, "text/html", None),
    ("html500", {"status": 500}, 500, "text/html", None),
]


@pytest.mark.parametrize("kind,opts,status,ctype,retry_after", ERRORS)
def test_error_faults(server, kind, opts, status, ctype, retry_after):
    server.set_fault(r"/tournament/", kind, **opts)
    got, headers, body = request(server, "/lichess/api/tournament/sH24g2zH")
    assert got == status and headers["Content-Type"].startswith(ctype)
    assert headers.get("Retry-After") == retry_after
    if kind.startswith("429"):
        assert json.loads(body) == {"error": "Too many requests"}
    if kind == "html404":
        assert b"Page not found" in body
    if kind == "html500":
        assert f"<title>{status} ".encode() in body
    assert request(server, "/lichess/api/player")[0] == 200  # non-matching paths are unaffected


def test_fault_times_and_clear(server):
    server.set_fault(r"^/lichess/api/player$", "429", times=2)
    assert [request(server, "/lichess/api/player")[0] for _ in range(3)] == [429, 429, 200]
    server.set_fault("player", "500")
    assert request(server, "/lichess/api/player")[0] == 500
    server.clear_faults()
    assert request(server, "/lichess/api/player")[0] == 200
    for kind, opts in (("nope", {}), ("html500", {"status": 999})):
        with pytest.raises(ValueError):
            server.set_fault("x", kind, **opts)


def test_slow_fault(server):
    server.set_fault("player", "slow", seconds=0.3)
    start = time.monotonic()
    status, _, body = request(server, "/lichess/api/player")
    assert time.monotonic() - start >= 0.3
    assert (status, body) == (200, (LICHESS / "player.json").read_bytes())


def test_429_date_fault(server):
    server.set_fault("player", "429-date", seconds=30)
    status, headers, _ = request(server, "/lichess/api/player")
    when = email.utils.parsedate_to_datetime(headers["Retry-After"])
    assert status == 429 and 28 <= when.timestamp() - time.time() <= 31


def test_trickle_fault(server):
    server.add("/lichess/api/tournament/tiny", b'{"id":"tiny"}', JSON)
    server.set_fault("tiny", "trickle", interval=0.05)
    try:
        start = time.monotonic()
        status, _, body = request(server, "/lichess/api/tournament/tiny")
        assert (status, body) == (200, b'{"id":"tiny"}') and time.monotonic() - start >= 12 * 0.05
    finally:
        server.routes.clear()


def test_badjson_fault(server):
    server.set_fault("sH24g2zH", "badjson")
    status, headers, body = request(server, "/lichess/api/tournament/sH24g2zH")
    assert (status, headers["Content-Type"]) == (200, JSON)
    with pytest.raises(ValueError):
        json.loads(body)


def test_truncate_fault_ndjson(server):
    recorded = (LICHESS / "tournament_sH24g2zH_results_sheet.ndjson").read_bytes()
    server.set_fault("results", "truncate")
    _, _, chunks, terminated = raw_chunks(server, "/lichess/api/tournament/sH24g2zH/results")
    assert terminated  # the chunked body ends cleanly ...
    body = request(server, "/lichess/api/tournament/sH24g2zH/results")[2]  # ... so http.client reads it
    assert b"".join(chunks) == body and len(body) < len(recorded) and recorded.startswith(body)
    lines = body.split(b"\n")
    assert all(json.loads(line) for line in lines[:-1])
    with pytest.raises(ValueError):
        json.loads(lines[-1])
    assert len(lines) == recorded.count(b"\n")  # only the last record is damaged


def test_truncate_fault_pgn(server):
    recorded = (LICHESS / "tournament_sH24g2zH_games.pgn").read_bytes()
    server.set_fault("games", "truncate")
    body = request(server, "/lichess/api/tournament/sH24g2zH/games")[2]
    assert recorded.startswith(body) and len(body) < len(recorded)
    assert body.count(b"[Event ") == recorded.count(b"[Event ") and not body.endswith(b"\n\n\n")


def test_drop_fault(server):
    server.set_fault("results", "drop")
    _, _, chunks, terminated = raw_chunks(server, "/lichess/api/tournament/sH24g2zH/results")
    assert not terminated and 0 < len(b"".join(chunks)) < 26725
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/lichess/api/tournament/sH24g2zH/results")
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()


def test_every_fault_kind_is_tested():
    tested = {k for k, *_ in ERRORS} | {"slow", "badjson", "truncate", "drop", "trickle", "429-date"}
    assert tested == set(FAULT_KINDS)


def test_control_endpoints(server):
    post = lambda path, obj=None: request(server, path, "POST", {"Content-Type": JSON},  # noqa: E731
                                          json.dumps(obj).encode() if obj is not None else None)
    request(server, "/lichess/api/player")
    assert json.loads(request(server, "/_replay/counts")[2])["total"] == 1
    assert post("/_replay/reset")[0] == 200 and server.total() == 0
    assert post("/_replay/fault", {"path": "player", "kind": "429-retry", "seconds": 5, "times": 1})[0] == 200
    assert request(server, "/lichess/api/player")[1]["Retry-After"] == "5"
    assert request(server, "/lichess/api/player")[0] == 200
    post("/_replay/fault", {"path": "player", "kind": "500"})
    assert post("/_replay/clear-faults")[0] == 200 and request(server, "/lichess/api/player")[0] == 200
    assert post("/_replay/fault", {"path": "x", "kind": "bogus"})[0] == 400
    status, _, body = post("/_replay/generate", {"id": "gen2", "nbPlayers": 12, "nbGames": 30})
    assert status == 200 and len(json.loads(body)["paths"]) == 3
    try:
        _, _, body = request(server, "/lichess/api/tournament/gen2/results")
        assert body.count(b"\n") == 12
        assert request(server, "/lichess/api/tournament/gen2/games")[2].count(b"[Event ") == 30
    finally:
        server.routes.clear()


def test_generated_arena():
    data = generate_arena("bigArena", nb_players=250, nb_games=1500, seed=1)
    info_body, info_type = data["/lichess/api/tournament/bigArena"]
    info = json.loads(info_body)
    recorded = json.loads((LICHESS / "tournament_sH24g2zH.json").read_bytes())
    assert info_type == JSON and list(info) == list(recorded)
    assert (info["id"], info["nbPlayers"], info["stats"]["games"], info["isFinished"]) == ("bigArena", 250, 1500, True)

    results, results_type = data["/lichess/api/tournament/bigArena/results"]
    rows = [json.loads(line) for line in results.splitlines()]
    assert results_type == NDJSON and len(rows) == 250
    assert [r["rank"] for r in rows] == list(range(1, 251))
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert len({r["username"] for r in rows}) == 250 and info["podium"][0]["name"] == rows[0]["username"]

    pgn, pgn_type = data["/lichess/api/tournament/bigArena/games"]
    assert pgn_type == PGN and pgn.count(b"\n[Event ") + pgn.startswith(b"[Event ") == 1500
    assert pgn.endswith(b"\n\n\n") and pgn.count(b"[GameId ") == 1500
    text = io.StringIO(pgn.decode())
    sites = set()
    for _ in range(1500):
        game = chess.pgn.read_headers(text)
        sites.add(game["Site"])
        assert game["Site"].endswith(game["GameId"])
    assert len(sites) == 1500
    # SAN stays legal, including games reused after the 1463 recorded ones.
    blocks = pgn.decode().split("\n\n\n")
    for i in (0, 1, 2, 3, 1463, 1464):
        game = chess.pgn.read_game(io.StringIO(blocks[i]))
        assert not game.errors and game.headers["Result"] in ("1-0", "0-1", "1/2-1/2")
        assert game.end().board().move_stack or game.headers["Termination"] != "Normal"
    assert generate_arena("bigArena", 250, 1500, seed=1) == data  # deterministic
    with pytest.raises(ValueError):
        generate_arena("tiny", 1, 10)


def test_keep_alive_and_100_concurrent_connections(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        socks = set()
        for path in ("/lichess/api/tournament/sH24g2zH/results", "/lichess/api/player", "/nope"):
            conn.request("GET", path)
            conn.getresponse().read()
            socks.add(conn.sock)
        assert len(socks) == 1 and None not in socks  # one connection served all three
    finally:
        conn.close()

    def one(_):
        return request(server, "/lichess/api/tournament/sH24g2zH/results")[0]

    with ThreadPoolExecutor(100) as pool:
        assert list(pool.map(one, range(100))) == [200] * 100
    assert server.counts["/lichess/api/tournament/sH24g2zH/results"] == 101


def test_cli_prints_url_and_serves():
    script = Path(__file__).parent / "replay.py"
    proc = subprocess.Popen([sys.executable, str(script), "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("REPLAY_URL=http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/lichess/api/tournament/may24lta")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, (LICHESS / "tournament_may24lta.json").read_bytes())
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
