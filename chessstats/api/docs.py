"""``GET /api/openapi.json`` (the generated OpenAPI 3.1 document) and ``GET /docs`` (Swagger UI, offline).

Swagger UI's files come from the ``swagger-ui-py`` package (its ``swagger_ui/static`` folder, found
without importing the package, which would import Jinja2); no CDN is contacted, so the page works
on a box without internet access. Only the two files the page needs are served.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from functools import lru_cache
from pathlib import Path

from sanic import Blueprint, HTTPResponse, Request

from chessstats.api.envelope import JSON, add_cors, etag_matches
from chessstats.errors import NotFound
from chessstats.openapi import document_bytes

bp = Blueprint("docs")

#: The Swagger UI files served under ``/docs/static/`` and their media types.
STATIC_FILES = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8", "swagger-ui.css": "text/css; charset=utf-8"}

DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chessstats API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/api/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  validatorUrl: null, presets: [SwaggerUIBundle.presets.apis]});</script>
</body></html>
"""


def static_dir() -> Path | None:
    """The folder of Swagger UI's files (``swagger_ui/static``), from source or inside the frozen
    executable; None when the package is not installed."""
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root is not None:
        candidate = Path(frozen_root) / "swagger_ui" / "static"
        if candidate.is_dir():
            return candidate
    try:
        spec = importlib.util.find_spec("swagger_ui")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "static"
        if candidate.is_dir():
            return candidate
    return None


@lru_cache(maxsize=len(STATIC_FILES))
def _static(name: str) -> tuple[bytes, str] | None:
    folder = static_dir()
    if folder is None:
        return None
    body = (folder / name).read_bytes()
    return body, '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


@bp.route("/api/openapi.json", methods=["GET", "HEAD"])
async def openapi(request: Request) -> HTTPResponse:
    """The OpenAPI 3.1 document of every registered route (generated from the route table and models)."""
    headers: dict[str, str] = {"Cache-Control": "no-cache"}
    add_cors(request, headers)
    return HTTPResponse(document_bytes(request.app), headers=headers, content_type=JSON)


@bp.route("/docs", methods=["GET", "HEAD"])
async def docs(request: Request) -> HTTPResponse:
    """The API documentation: Swagger UI rendering ``/api/openapi.json``, with no external asset."""
    return HTTPResponse(DOCS_PAGE, content_type="text/html; charset=utf-8")


@bp.route("/docs/static/<name:str>", methods=["GET", "HEAD"])
async def docs_static(request: Request, name: str) -> HTTPResponse:
    """One of Swagger UI's files (``swagger-ui-bundle.js``, ``swagger-ui.css``)."""
    found = _static(name) if name in STATIC_FILES else None
    if found is None:
        raise NotFound(f"no such file: {name[:40]}")
    body, etag = found
    headers = {"ETag": etag, "Cache-Control": "public, max-age=86400"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return HTTPResponse(status=304, headers=headers)
    return HTTPResponse(body, headers=headers, content_type=STATIC_FILES[name])
