"""``POST /api/admin/tournaments/{id}/reimport``: fetch a finished tournament again and replace it."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request

from chessstats.api.admin import require_token
from chessstats.api.envelope import data_response
from chessstats.api.params import tournament_id
from chessstats.errors import BadRequest, NotFound

bp = Blueprint("imports_admin", url_prefix="/api/admin/tournaments")
bp.on_request(require_token)


@bp.post("/<tid:str>/reimport")
async def reimport(request: Request, tid: str) -> HTTPResponse:
    """Queue a re-import of a stored, finished tournament: 202 with its import record (a JobRun with
    ``job: "tournament-import"``). The import replaces standings and games in one transaction.

    Errors: 404 when the tournament is not stored, 400 when it is not finished.
    """
    tid = tournament_id(tid, "lichess")
    service = request.app.ctx.tournaments
    record = await service.reimport(tid, "lichess")
    if record is None:
        raise NotFound(f"tournament {tid!r} is not stored: ask for it first (GET /api/tournaments/{tid})")
    if record is False:
        raise BadRequest(f"tournament {tid!r} is not finished: only a finished tournament is imported")
    return data_response(request, record.to_wire(), status=202)
