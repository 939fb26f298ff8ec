"""``GET /api/openapi.json`` (the generated OpenAPI 3.1 document) and ``GET /docs`` (Swagger UI, offline).

Swagger UI's files come from the ``swagger-ui-py`` package (its ``swagger_ui/static`` folder, found
without importing the package, which would import Jinja2); no CDN is contacted, so the page works
on a box without internet access. Only the two files the page needs are served.

The document and the files do not change while the process runs: each is encoded, hashed (a strong
``ETag``) and gzipped once (:class:`Representation`), then served with ``If-None-Match`` → 304 and
gzip when the client accepts it (``gzip;q=0`` refuses it), as the JSON routes are.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import sys
from functools import lru_cache
from pathlib import Path

from sanic import Blueprint, HTTPResponse, Request

from chessstats.api.envelope import GZIP_MIN_BYTES, JSON, add_cors, add_limits, etag_matches, gzip_etag, wants_gzip
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


class Representation:
    """A body that does not change while the process runs, encoded once: ``body``, its strong ``etag``
    (BLAKE2b of the bytes) and its gzip body (level 6, computed once; None under ``GZIP_MIN_BYTES``)."""

    __slots__ = ("body", "etag", "gzip_body")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
        self.gzip_body = gzip.compress(body, compresslevel=6, mtime=0) if len(body) > GZIP_MIN_BYTES else None

    def respond(self, request: Request, content_type: str, headers: dict[str, str]) -> HTTPResponse:
        """The response to ``request``: 304 when ``If-None-Match`` names the ETag (of either body), else
        the gzip body when accepted (ETag ``"…-gzip"``), else the body; ``Vary: Accept-Encoding`` when
        a gzip body exists."""
        add_limits(request, headers)
        use_gzip = self.gzip_body is not None and wants_gzip(request.headers.get("accept-encoding", ""))
        headers["ETag"] = gzip_etag(self.etag) if use_gzip else self.etag
        if self.gzip_body is not None:
            headers["Vary"] = f"{headers['Vary']}, Accept-Encoding" if "Vary" in headers else "Accept-Encoding"
        if etag_matches(request.headers.get("if-none-match"), self.etag, gzip_etag(self.etag)):
            return HTTPResponse(status=304, headers=headers)
        if use_gzip:
            headers["Content-Encoding"] = "gzip"
            return HTTPResponse(self.gzip_body, headers=headers, content_type=content_type)
        return HTTPResponse(self.body, headers=headers, content_type=content_type)


@lru_cache(maxsize=len(STATIC_FILES))
def _static(name: str) -> Representation | None:
    folder = static_dir()
    if folder is None:
        return None
    return Representation((folder / name).read_bytes())


def _document(request: Request) -> Representation:
    """The OpenAPI document of the app (built once, kept on ``app.ctx.openapi_representation``)."""
    ctx = request.app.ctx
    found = getattr(ctx, "openapi_representation", None)
    if found is None:
        found = ctx.openapi_representation = Representation(document_bytes(request.app))
    return found  # type: ignore[no-any-return]


@bp.route("/api/openapi.json", methods=["GET", "HEAD"])
async def openapi(request: Request) -> HTTPResponse:
    """The OpenAPI 3.1 document of every registered route (generated from the route table and models),
    with an ETag (``no-cache``: revalidated on each use, 304 when unchanged) and gzip when accepted."""
    headers: dict[str, str] = {"Cache-Control": "no-cache"}
    add_cors(request, headers)
    return _document(request).respond(request, JSON, headers)


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
    return found.respond(request, STATIC_FILES[name], {"Cache-Control": "public, max-age=86400"})
