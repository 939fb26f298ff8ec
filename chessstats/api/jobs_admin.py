"""``/api/admin/jobs`` routes (bearer token, as every admin route): the runs, a retry, a run now.

The token is checked by :func:`chessstats.api.admin.guard` before any body is read (the POST
routes stream: they take no body, and Sanic discards one of at most ``server.max_body_bytes``).
"""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request

from chessstats.api.admin import guard
from chessstats.api.envelope import data_response
from chessstats.errors import BadRequest
from chessstats.scheduler import control
from chessstats.scheduler.context import utc_now

bp = Blueprint("jobs_admin", url_prefix="/api/admin/jobs")
bp.on_request(guard)


def _wake(request: Request) -> None:
    scheduler = getattr(request.app.ctx, "scheduler", None)
    if scheduler is not None:
        scheduler.wake()


@bp.route("/", methods=["GET", "HEAD"])
async def jobs_overview(request: Request) -> HTTPResponse:
    """Runs grouped ``active/waiting/completed/failed`` (last 20 of the latter two) with counts,
    and the registered jobs with schedule, enabled (and why not), next run and time zone."""
    ctx = request.app.ctx
    return data_response(request, await control.overview(ctx.db, ctx.config, utc_now()))


@bp.post("/<run_id>/retry", stream=True)
async def jobs_retry(request: Request, run_id: str) -> HTTPResponse:
    """Queue a failed run again; 202 with the new JobRun. 404 unknown id, 400 not failed."""
    if not run_id.isdigit() or len(run_id) > 18:
        raise BadRequest(f"job run id must be a positive integer, got {run_id[:40]!r}")
    ctx = request.app.ctx
    run = await control.retry_run(ctx.db, ctx.config, int(run_id), utc_now())
    _wake(request)
    return data_response(request, control.to_wire(run), status=202)


@bp.post("/<name>/run", stream=True)
async def jobs_run(request: Request, name: str) -> HTTPResponse:
    """Queue a ``manual`` run of a job now; 202 with the JobRun. 404 unknown job."""
    ctx = request.app.ctx
    run = await control.request_run(ctx.db, ctx.config, name, utc_now())
    _wake(request)
    return data_response(request, control.to_wire(run), status=202)
