"""Contract fixes found by a fresh-user tester: admin token bytes, HEAD on every GET route, compressed
docs, queued re-import records, since/until, unauthenticated admin routes — against the real server."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable

import httpx

from chessstats.app import create_app
from chessstats.config import load_config
from tests.conftest import ADMIN_TOKEN, Server, imported
from tests.test_request_limits import envelope, exchange

StartServer = Callable[..., Server]

#: A sample value for each path parameter name of the route table.
SAMPLES = {"tid": "sH24g2zH", "fid": "1503014", "pid": "1", "username": "DrNykterstein", "title": "GM",
           "time_class": "blitz", "perf_type": "blitz", "name": "swagger-ui.css"}


def test_admin_token_with_bytes_that_are_not_utf8_is_401(server: Server) -> None:
    for path in (b"/api/admin/jobs", b"/api/admin/cache/stats"):
        head = b"GET " + path + b" HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer \xff\xfe\r\n\r\n"
        status, headers, body = exchange(server.port, head)
        assert status == 401, body
        envelope(body, "unauthorized")
    assert "Traceback" not in server.log()


def test_every_get_route_answers_head(server: Server) -> None:
    app = create_app(load_config(env={}), name="route_table_probe")
    routes = [route for route in app.router.routes if "GET" in route.methods]
    assert len(routes) > 20
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for route in routes:
        path = "/" + re.sub(r"<(\w+)(?::\w+)?>", lambda m: SAMPLES[m.group(1)], route.path)
        resp = server.client.head(path, headers=auth)
        assert resp.status_code != 405, (path, resp.status_code)
        assert resp.content == b"", path
        if "/admin/" in path:
            assert resp.status_code == 200, (path, resp.status_code)
            assert server.client.head(path).status_code == 401, path


def test_openapi_document_and_swagger_files_are_gzipped_with_an_etag(server: Server) -> None:
    for path in ("/api/openapi.json", "/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"):
        plain = server.client.get(path, headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200 and "content-encoding" not in plain.headers, path
        etag = plain.headers["etag"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', etag), etag
        assert "Accept-Encoding" in plain.headers["vary"]
        with httpx.stream("GET", server.url + path, headers={"Accept-Encoding": "gzip"}) as packed:
            raw = b"".join(packed.iter_raw())
            assert packed.headers["content-encoding"] == "gzip", path
            assert packed.headers["etag"] == etag[:-1] + '-gzip"'
            assert int(packed.headers["content-length"]) == len(raw) < len(plain.content) / 2
        assert gzip.decompress(raw) == plain.content
        refused = server.client.get(path, headers={"Accept-Encoding": "gzip;q=0, identity"})
        assert "content-encoding" not in refused.headers and refused.content == plain.content
        for tag in (etag, etag[:-1] + '-gzip"'):
            again = server.client.get(path, headers={"If-None-Match": tag, "Accept-Encoding": "gzip"})
            assert again.status_code == 304 and again.content == b"", (path, tag)
    assert json.loads(server.client.get("/api/openapi.json").content)["openapi"].startswith("3.1")


def test_a_queued_reimport_carries_nothing_of_the_previous_run(server: Server) -> None:
    imported(server, "sH24g2zH")
    answer = server.admin("POST", "/api/admin/tournaments/sH24g2zH/reimport")
    assert answer.status_code == 202, answer.text
    run = answer.json()["data"]
    assert run["state"] == "queued" and run["trigger"] == "reimport", run
    assert run["startedAt"] is None and run["finishedAt"] is None and run["durationMs"] is None, run
    assert run["summary"] is None and run["error"] is None and run["pendingGames"] == 0, run
    assert set(run["check"].values()) == {None}, run
    again = imported(server, "sH24g2zH")  # the re-import runs and completes
    assert again["data"]["importState"] == "complete"


def test_a_chesscom_tournament_id_over_200_characters_is_too_long(server: Server) -> None:
    answer = server.client.get("/api/tournaments/" + "a" * 201, params={"platform": "chesscom"})
    assert answer.status_code == 400
    message = envelope(answer.content, "bad_request")["error"]
    assert "too long: 201 characters, at most 200" in message and "a" * 41 not in message, message
    wrong = server.client.get("/api/tournaments/a.b", params={"platform": "chesscom"})
    assert "letters, digits, - and _ only" in wrong.json()["error"]


def test_upstream_not_found_messages_cut_the_echoed_id(server: Server) -> None:
    for path in ("/api/tournaments/" + "b" * 200, "/api/tournaments/" + "b" * 200 + "/results"):
        answer = server.client.get(path, params={"platform": "chesscom"})
        assert answer.status_code == 404, (path, answer.text)
        message = envelope(answer.content, "not_found")["error"]
        assert "b" * 40 + "…" in message and "b" * 41 not in message, message


def test_admin_paths_answer_401_before_404_or_405_without_the_token(server: Server) -> None:
    for method, path, with_token in (("POST", "/api/admin/nope", 404), ("GET", "/api/admin", 404),
                                     ("GET", "/api/admin/nope/deeper", 404), ("DELETE", "/api/admin/jobs", 405),
                                     ("GET", "/api/admin/cache/clear", 405)):
        anonymous = server.client.request(method, path)
        assert anonymous.status_code == 401, (method, path, anonymous.status_code)
        envelope(anonymous.content, "unauthorized")
        wrong = server.client.request(method, path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401, (method, path)
        assert server.admin(method, path).status_code == with_token, (method, path)
    assert server.client.get("/api/nope").status_code == 404  # public paths: 404 as before
    assert server.client.get("/api/administrator").status_code == 404
