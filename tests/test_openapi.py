"""``GET /api/openapi.json`` and ``GET /docs`` on the real server: the document is valid OpenAPI 3.1
(openapi-spec-validator), holds every registered route, and recorded answers of the server validate
against their schemas (jsonschema, Draft 2020-12)."""

from __future__ import annotations

import re

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from chessstats.app import create_app
from chessstats.config import load_config
from chessstats.openapi import app_routes, build_document, openapi_path
from tests.conftest import Server, imported
from tests.replay import ReplayUpstream

TEAM_BATTLE = "sH24g2zH"


@pytest.fixture
def doc(server: Server) -> dict:
    resp = server.client.get("/api/openapi.json")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    return resp.json()


def test_the_document_is_valid_openapi_3_1(doc: dict) -> None:
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on an invalid document


def test_every_registered_route_is_in_the_document(doc: dict) -> None:
    app = create_app(load_config(env={}), name="openapi_test")
    routes = app_routes(app)
    assert len(routes) >= 15
    for path, methods, _handler in routes:
        operations = doc["paths"][openapi_path(path)]
        for method in methods - {"OPTIONS"}:
            assert method.lower() in operations, (path, method)
    # and nothing that is not a route
    assert set(doc["paths"]) == {openapi_path(p) for p, _, _ in routes}


def test_a_route_added_later_appears_with_a_fallback() -> None:
    async def handler() -> None:
        """Rating history of a player."""

    doc = build_document([("api/players/<platform:str>/<username:str>/history", frozenset({"GET", "HEAD"}), handler)])
    op = doc["paths"]["/api/players/{platform}/{username}/history"]["get"]
    assert op["summary"] == "Rating history of a player."
    assert [p["name"] for p in op["parameters"]] == ["platform", "username"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["required"][0] == "success"
    validate(doc)


def _schema(doc: dict, path: str, method: str, status: int) -> dict:
    response = doc["paths"][path][method]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    return {**schema, "components": doc["components"]}  # so that "#/components/..." refs resolve


def _check(doc: dict, template: str, resp: httpx.Response, method: str = "get") -> None:
    responses = doc["paths"][template][method]["responses"]
    assert str(resp.status_code) in responses, (template, resp.status_code)
    jsonschema.Draft202012Validator(_schema(doc, template, method, resp.status_code)).validate(resp.json())


def test_recorded_answers_validate_against_their_schemas(doc: dict, server: Server, upstream: ReplayUpstream) -> None:
    c = server.client
    _check(doc, "/api/tournaments/{tid}", c.get(f"/api/tournaments/{TEAM_BATTLE}"))
    imported(server, TEAM_BATTLE)
    _check(doc, "/api/tournaments/{tid}", c.get(f"/api/tournaments/{TEAM_BATTLE}"))
    _check(doc, "/api/tournaments/{tid}/results", c.get(f"/api/tournaments/{TEAM_BATTLE}/results?limit=50"))
    games = c.get(f"/api/tournaments/{TEAM_BATTLE}/games?limit=20")
    assert len(games.json()["data"]) == 20
    _check(doc, "/api/tournaments/{tid}/games", games)
    _check(doc, "/api/tournaments", c.get("/api/tournaments?limit=5"))
    _check(doc, "/api/tournaments/batch", c.get(f"/api/tournaments/batch?ids={TEAM_BATTLE},zzzzzzzz"))
    _check(doc, "/health", c.get("/health"))
    _check(doc, "/api/tournaments/{tid}/games", c.get(f"/api/tournaments/{TEAM_BATTLE}/games?limit=0"))  # 400
    _check(doc, "/api/tournaments/{tid}", c.get("/api/tournaments/nosuchid"))  # 404
    _check(doc, "/api/admin/cache/stats", server.admin("GET", "/api/admin/cache/stats"))
    _check(doc, "/api/admin/cache/stats", c.get("/api/admin/cache/stats"))  # 401
    _check(doc, "/api/admin/jobs", server.admin("GET", "/api/admin/jobs"))
    _check(doc, "/api/admin/jobs/{name}/run", server.admin("POST", "/api/admin/jobs/cleanup/run"), "post")
    pgn = c.get(f"/api/tournaments/{TEAM_BATTLE}/games?limit=2&format=pgn")
    assert "application/x-chess-pgn" in doc["paths"]["/api/tournaments/{tid}/games"]["get"]["responses"]["200"][
        "content"]
    assert pgn.headers["content-type"].startswith("application/x-chess-pgn")


def test_a_wrong_answer_would_fail_validation(doc: dict) -> None:
    schema = _schema(doc, "/api/tournaments/{tid}", "get", 200)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(
            {"success": True, "data": {"id": 1}, "cached": False, "source": "api", "stale": False,
             "fetchedAt": "2026-01-01T00:00:00Z"})


def test_docs_page_renders_the_document_with_local_assets_only(server: Server) -> None:
    page = server.client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/docs/static/") for a in assets)
    assert "http://" not in page.text and "https://" not in page.text
    for asset in assets:
        resp = server.client.get(asset)
        assert resp.status_code == 200 and len(resp.content) > 10_000, asset
        again = server.client.get(asset, headers={"If-None-Match": resp.headers["etag"]})
        assert again.status_code == 304
    assert "SwaggerUIBundle" in server.client.get("/docs/static/swagger-ui-bundle.js").text
    assert server.client.get("/docs/static/../../../etc/passwd").status_code == 404
    assert server.client.get("/docs/static/index.html").status_code == 404
