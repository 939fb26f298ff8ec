"""The OpenAPI 3.1 document of the running application, generated so that it cannot drift from the code.

Paths and methods come from Sanic's route table (every registered route is in the document, a
route added later included); the shapes come from the msgspec models through
``msgspec.json.schema_components``. :data:`OPERATIONS` adds what a route table cannot say (a
summary, query parameters, the model of ``data``) per path template; a route without an entry
still appears, with its handler's docstring as the summary and a generic envelope as its answer.
Built once per application (``app.ctx.openapi``) on first request.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from chessstats import __version__
from chessstats.models import Game, Pagination, Standing, Tournament
from chessstats.models.job import JobRun

REF = "#/components/schemas/{name}"
_PARAM_RE = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)(?::[^>]*)?>")

#: Methods a route answers that get no operation of their own.
_SKIPPED_METHODS = {"OPTIONS"}


@dataclass(frozen=True, slots=True)
class Operation:
    """What the route table cannot tell about one route (all optional).

    * ``summary``: one line; default: the first line of the handler's docstring.
    * ``data``: the type of the envelope's ``data`` (a msgspec model, ``list[Model]``, ``dict``…);
      ``None`` with ``envelope=False`` means the body is described by ``schema``.
    * ``extra``: additional top-level envelope fields, ``{name: JSON schema}`` (``pagination`` …).
    * ``query``: query parameters, ``{name: (JSON schema, description)}``.
    * ``schema``: a whole body schema (routes without the envelope, such as ``/health``).
    * ``content_type``: the success media type; ``alt``: other media types of the success.
    * ``tags``: OpenAPI tags; ``admin``: needs the bearer token; ``success``: the success status.
    """

    summary: str | None = None
    data: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    query: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    schema: dict[str, Any] | None = None
    envelope: bool = True
    content_type: str = "application/json"
    alt: dict[str, dict[str, Any]] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    admin: bool = False
    success: int = 200
    errors: tuple[int, ...] = (400, 404, 502, 503)


def _int(lo: int, hi: int, default: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": lo, "maximum": hi}
    if default is not None:
        schema["default"] = default
    return schema


def _enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


_PAGINATION = {"pagination": {"$ref": REF.format(name="Pagination")}}
_PAGE = {"page": (_int(1, 100_000, 1), "page number, from 1")}
_PLATFORM_Q = {"platform": (_enum("lichess", "chesscom", "fide"), "the tournament's platform (default lichess)")}
_IMPORT_STATE = {"importState": {"anyOf": [_enum("queued", "importing", "complete", "failed"), {"type": "null"}]}}

_HEALTH_CHECK = {"type": "object", "properties": {"status": {"type": "string"}}, "additionalProperties": True}
HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "version"],
    "properties": {
        "status": _enum("ok", "degraded", "error"),
        "version": {"type": "string"},
        "uptimeS": {"type": "number"},
        "checks": {"type": "object", "additionalProperties": _HEALTH_CHECK},
        "cache": {"anyOf": [{"type": "object"}, {"type": "null"}]},
        "jobs": {"anyOf": [{"type": "object"}, {"type": "null"}]},
    },
}

#: Per path template (as in the document: ``/api/tournaments/{tid}``): what the route table lacks.
OPERATIONS: dict[str, Operation] = {
    "/api/tournaments": Operation(
        "Tournament summaries, newest first", list[Tournament], _PAGINATION,
        {"status": (_enum("upcoming", "ongoing", "finished", "cancelled"), "only tournaments in this status"),
         **_PLATFORM_Q, **_PAGE, "limit": (_int(1, 100, 20), "tournaments per page")}, tags=("tournaments",)),
    "/api/tournaments/batch": Operation(
        "Several tournaments, in the order asked", list[Tournament],
        {"count": {"type": "integer"}, "notFound": {"type": "array", "items": {"type": "string"}},
         "notYetKnown": {"type": "array", "items": {"type": "string"}}},
        {"ids": ({"type": "string"}, "comma-separated tournament ids (at most 50)"), **_PLATFORM_Q},
        tags=("tournaments",)),
    "/api/tournaments/{tid}": Operation(
        "One tournament, with its first standings when known", Tournament, {}, _PLATFORM_Q, tags=("tournaments",)),
    "/api/tournaments/{tid}/results": Operation(
        "A tournament's standings in rank order", list[Standing], {**_PAGINATION, **_IMPORT_STATE},
        {**_PLATFORM_Q, **_PAGE, "limit": (_int(1, 500, 100), "rows per page")}, tags=("tournaments",)),
    "/api/tournaments/{tid}/games": Operation(
        "A tournament's games, newest first (PGN with ?format=pgn)", list[Game], {**_PAGINATION, **_IMPORT_STATE},
        {**_PLATFORM_Q, **_PAGE, "limit": (_int(1, 200, 50), "games per page"),
         "format": (_enum("json", "pgn"), "pgn: the same page as PGN text")},
        alt={"application/x-chess-pgn": {"type": "string"}}, tags=("tournaments",)),
    "/health": Operation("Health of every part of the service", schema=HEALTH_SCHEMA, envelope=False,
                         tags=("operations",), errors=(503,)),
    "/api/openapi.json": Operation("This document", schema={"type": "object"}, envelope=False,
                                   tags=("operations",), errors=()),
    "/docs": Operation("The API documentation, rendered (HTML)", schema={"type": "string"}, envelope=False,
                       content_type="text/html", tags=("operations",), errors=()),
    "/": Operation("The status page (HTML)", schema={"type": "string"}, envelope=False,
                   content_type="text/html", tags=("operations",), errors=()),
    "/api/admin/cache/clear": Operation("Empty the cache", dict, admin=True, tags=("admin",), errors=(401,)),
    "/api/admin/cache/invalidate": Operation("Drop cache entries by key or pattern", dict, admin=True,
                                             tags=("admin",), errors=(400, 401)),
    "/api/admin/cache/stats": Operation("Cache statistics (entries, size, hits, misses, evictions)", dict,
                                        admin=True, tags=("admin",), errors=(401,)),
    "/api/admin/jobs": Operation("Job runs grouped by state, and the registered jobs", dict, admin=True,
                                 tags=("admin",), errors=(401,)),
    "/api/admin/jobs/{run_id}/retry": Operation("Queue a failed job run again", JobRun, admin=True, success=202,
                                                tags=("admin",), errors=(400, 401, 404)),
    "/api/admin/jobs/{name}/run": Operation("Run a scheduled job now", JobRun, admin=True, success=202,
                                            tags=("admin",), errors=(400, 401, 404)),
    "/api/admin/tournaments/{tid}/reimport": Operation("Re-import a finished tournament", JobRun, admin=True,
                                                       success=202, tags=("admin",), errors=(400, 401, 404)),
}

#: The models whose schemas are components (others are added when an operation names them).
MODELS: tuple[Any, ...] = (Tournament, Standing, Game, Pagination, JobRun)

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["success", "error", "code"],
    "properties": {"success": {"const": False}, "error": {"type": "string"}, "code": {"type": "string"}},
}
_ERROR_DESCRIPTIONS = {400: "bad request", 401: "admin token missing or wrong", 404: "not found",
                       405: "method not allowed", 410: "gone", 413: "body too large", 429: "rate limited",
                       502: "upstream failed", 503: "busy, rate limited or storage unavailable"}


def openapi_path(sanic_path: str) -> str:
    """``api/tournaments/<tid:str>`` (Sanic) → ``/api/tournaments/{tid}`` (OpenAPI)."""
    return "/" + _PARAM_RE.sub(r"{\1}", sanic_path.strip("/"))


def _summary(handler: Any) -> str:
    doc = inspect.getdoc(handler) or ""
    line = doc.strip().split("\n\n")[0].replace("\n", " ").strip()
    return line[:200] or handler.__name__.replace("_", " ")


def _envelope(data_schema: dict[str, Any], extra: dict[str, Any], *, full: bool) -> dict[str, Any]:
    props: dict[str, Any] = {"success": {"const": True}, "data": data_schema}
    required = ["success", "data"]
    if full:  # the cached-payload envelope (public reads); admin actions answer success and data only
        props |= {"cached": {"type": "boolean"}, "source": _enum("cache", "database", "api"),
                  "stale": {"type": "boolean"}, "fetchedAt": {"type": "string", "format": "date-time"}}
        required += ["cached", "source", "stale", "fetchedAt"]
    props |= extra
    return {"type": "object", "required": required, "properties": props}


def build_document(routes: list[tuple[str, frozenset[str], Any]], *, server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``: ``(sanic path, methods, handler)`` triples (Sanic's
    ``app.router.routes``). Every route and method (but OPTIONS) has an operation."""
    types: list[Any] = list(MODELS)
    for op in OPERATIONS.values():
        if op.data is not None and op.data not in types:
            types.append(op.data)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    by_type = dict(zip(map(repr, types), schemas, strict=True))
    components["Error"] = _ERROR_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for sanic_path, methods, handler in sorted(routes, key=lambda r: r[0]):
        path = openapi_path(sanic_path)
        op = OPERATIONS.get(path, Operation())
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{([^}]+)}", path)
        ]
        params += [{"name": name, "in": "query", "required": False, "schema": schema, "description": text}
                    for name, (schema, text) in op.query.items()]
        if op.schema is not None:
            body = op.schema
        else:
            data = by_type.get(repr(op.data), {}) if op.data is not None else {}
            body = _envelope(data, op.extra, full=not op.admin and not path.startswith("/api/admin"))
        content = {op.content_type: {"schema": body}, **{k: {"schema": v} for k, v in op.alt.items()}}
        for method in sorted(methods - _SKIPPED_METHODS):
            success: dict[str, Any] = {"description": "success"}
            if method != "HEAD":
                success["content"] = content
            responses: dict[str, Any] = {str(op.success): success}
            if op.envelope and method == "GET":
                responses["304"] = {"description": "not modified (If-None-Match matched the ETag)"}
            for status in op.errors:
                responses[str(status)] = {"description": _ERROR_DESCRIPTIONS.get(status, "error")}
                if method != "HEAD" and op.envelope:
                    responses[str(status)]["content"] = {"application/json": {"schema": {"$ref": REF.format(
                        name="Error")}}}
            if method != "HEAD":  # any other error (405, 413, 429, a response timeout) has the same envelope
                responses["default"] = {"description": "error", "content": {"application/json": {
                    "schema": {"$ref": REF.format(name="Error")}}}}
            operation: dict[str, Any] = {
                "operationId": f"{method.lower()}_{handler.__name__}",
                "summary": op.summary or _summary(handler),
                "responses": responses,
            }
            if op.tags:
                operation["tags"] = list(op.tags)
            if params:
                operation["parameters"] = params
            if op.admin or path.startswith("/api/admin"):
                operation["security"] = [{"adminToken": []}]
            paths.setdefault(path, {})[method.lower()] = operation
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "chessstats", "version": __version__,
                 "description": "Self-hosted chess statistics: Lichess, Chess.com and FIDE data as a JSON API. "
                                "See docs/API.md for the contract."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}}},
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


def app_routes(app: Any) -> list[tuple[str, frozenset[str], Any]]:
    """``(path, methods, handler)`` of every route registered on a Sanic ``app``."""
    return [(route.path, frozenset(route.methods), route.handler) for route in app.router.routes]


def document_bytes(app: Any) -> bytes:
    """The encoded document of ``app`` (built once, kept on ``app.ctx.openapi``)."""
    cached = getattr(app.ctx, "openapi", None)
    if cached is None:
        cached = msgspec.json.encode(build_document(app_routes(app)))
        app.ctx.openapi = cached
    return cached  # type: ignore[no-any-return]
