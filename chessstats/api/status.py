"""``GET /``: the status page, one small server-rendered HTML page (no script, no external asset).

It shows what ``/health`` knows, for a person: version, uptime, the health of each part, the
background jobs with their last and next runs, the cache hit rate, and each upstream's calls,
failures, 429s and pauses over the last hour (this worker's counters). It reloads itself every
30 seconds (``<meta http-equiv="refresh">``).
"""

from __future__ import annotations

import html
import logging
from typing import Any

from sanic import Blueprint, HTTPResponse, Request

from chessstats import __version__
from chessstats.api.ops import UPSTREAMS, health_report
from chessstats.scheduler import control
from chessstats.scheduler.context import utc_now

log = logging.getLogger(__name__)
bp = Blueprint("status")

#: Seconds between two reloads of the page.
REFRESH_S = 30

_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 24px;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:20px;margin:0}header span{opacity:.8}
main{padding:16px 24px;display:grid;gap:16px;grid-template-columns:repeat(auto-fit,minmax(340px,1fr))}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:12px 16px}
h2{font-size:16px;margin:0 0 8px}table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:4px 6px;border-bottom:1px solid #eef0f3;vertical-align:top;font-size:14px}
th{color:#5b6475;font-weight:600}.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600}
.ok,.completed{background:#d9f5e3;color:#13653a}
.degraded,.paused,.open,.pending,.unknown,.waiting,.active{background:#fff1cc;color:#7a5300}
code{white-space:nowrap}
.error,.failed,.corrupt{background:#fde0e0;color:#8f1d1d}.disabled,.stopping{background:#eceff3;color:#4a5260}
.big{font-size:28px;font-weight:700}footer{padding:0 24px 16px;color:#5b6475;font-size:13px}
"""


def _e(value: object) -> str:
    return html.escape("-" if value is None else str(value))


def _badge(status: object) -> str:
    text = _e(status)
    return f'<span class="badge {text}">{text}</span>'


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {s} s" if minutes else f"{s} s"


def _detail(name: str, check: dict[str, Any]) -> str:
    if name == "database":
        quick = check.get("quickCheck") or {}
        parts = [f"query {check.get('latencyMs', '-')} ms", f"quick_check {quick.get('status', '-')}"]
        if quick.get("checkedAt"):
            parts.append(f"at {quick['checkedAt']}")
        if check.get("error"):
            parts.append(str(check["error"]))
        return ", ".join(parts)
    if name == "storage":
        free = check.get("freeBytes")
        text = f"{free / 2**30:.1f} GiB free" if isinstance(free, int) else "free space unknown"
        return text + (f", {check['error']}" if check.get("error") else "")
    if name == "cache":
        return f"{check.get('entries', '-')} entries" + (f", {check['error']}" if check.get("error") else "")
    if name == "scheduler":
        if check.get("status") == "disabled":
            return "background jobs off in this process"
        return f"time zone {check.get('timezone')}, lock holder: {'yes' if check.get('lockHolder') else 'no'}"
    if name in UPSTREAMS:
        if check.get("reason"):
            return str(check["reason"])
        bits = [f"breaker {check.get('breaker', '-')}"]
        if check.get("pausedForS"):
            bits.append(f"paused {check['pausedForS']:.0f} s more")
        if check.get("failures"):
            bits.append(f"{check['failures']} failures in a row")
        return ", ".join(bits)
    if name == "imports":
        return f"{check.get('completed', 0)} completed, {check.get('failed', 0)} failed (this worker)"
    return ""


def render(report: dict[str, Any], jobs: list[dict[str, Any]] | None, window: tuple[float, dict[str, Any]] | None,
           jobs_error: str | None = None) -> str:
    """The status page's HTML for a health report, the job table and the upstream window (pure)."""
    checks: dict[str, dict[str, Any]] = report.get("checks") or {}
    cache = report.get("cache") or {}
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{_badge(check.get('status'))}</td><td>{_e(_detail(name, check))}</td></tr>"
        for name, check in checks.items() if isinstance(check, dict) and "status" in check
    )
    hit_rate = cache.get("hitRate")
    cache_html = (
        f'<p class="big" id="hit-rate">{_e(f"{hit_rate * 100:.1f} %" if hit_rate is not None else "-")}</p>'
        f"<table><tr><th>hits</th><td>{_e(cache.get('hits'))}</td><th>misses</th><td>{_e(cache.get('misses'))}</td></tr>"
        f"<tr><th>entries</th><td>{_e(cache.get('entries'))}</td><th>size</th>"
        f"<td>{_e(round(cache.get('sizeBytes', 0) / 2**20, 1))} MiB</td></tr>"
        f"<tr><th>evictions</th><td>{_e(cache.get('evictions'))}</td><th>errors</th><td>{_e(cache.get('errors'))}</td>"
        "</tr></table>"
    )
    if jobs is None:
        jobs_html = f"<p>{_e(jobs_error or 'jobs unavailable')}</p>"
    else:
        job_rows = ""
        for job in jobs:
            last = job.get("lastRun")
            last_at = (last.finished_at or last.started_at or last.queued_at) if last else None
            state = last.state if last else None
            next_run = job["nextRun"] if job["enabled"] else job.get("disabledReason") or "disabled"
            job_rows += (f"<tr><td>{_e(job['name'])}</td><td><code>{_e(job['schedule'])}</code></td>"
                         f"<td>{_e(last_at)} {_badge(state) if state else ''}</td>"
                         f"<td>{_e(next_run)}</td></tr>")
        jobs_html = ("<table><tr><th>job</th><th>schedule</th><th>last run</th><th>next run</th></tr>"
                     f"{job_rows}</table>")
    up_rows = ""
    covered = 0.0
    if window is not None:
        covered, counters = window
        for name in UPSTREAMS:
            c = counters.get(name)
            check = checks.get(name, {})
            if c is None:
                up_rows += f"<tr><td>{_e(name)}</td><td colspan=4>{_badge(check.get('status', 'disabled'))}</td></tr>"
                continue
            up_rows += (f"<tr><td>{_e(name)}</td><td>{_e(int(c['calls']))}</td><td>{_e(int(c['errors']))}</td>"
                        f"<td>{_e(int(c['responses429']))}</td><td>{_e(_duration(c['pauseSeconds']))}</td></tr>")
    upstream_html = (f"<p>last {_e(_duration(covered))} (this worker)</p><table><tr><th>upstream</th><th>calls</th>"
                     f"<th>failed</th><th>429s</th><th>paused</th></tr>{up_rows}</table>")
    status = report.get("status", "error")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chessstats: {_e(status)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_S}"><style>{_STYLE}</style></head>
<body><header><h1>chessstats</h1><span id="overall">{_badge(status)}</span>
<span id="version">version {_e(report.get('version', __version__))}</span>
<span id="uptime">up {_e(_duration(report.get('uptimeS')))}</span></header>
<main>
<section id="health"><h2>Health</h2><table><tr><th>part</th><th>status</th><th>detail</th></tr>{rows}</table></section>
<section id="cache"><h2>Cache hit rate</h2>{cache_html}</section>
<section id="jobs"><h2>Background jobs</h2>{jobs_html}</section>
<section id="upstreams"><h2>Upstreams</h2>{upstream_html}</section>
</main>
<footer>Machine-readable: <a href="/health">/health</a> · API: <a href="/docs">/docs</a>,
<a href="/api/openapi.json">/api/openapi.json</a> · reloads every {REFRESH_S} s</footer>
</body></html>
"""


@bp.route("/", methods=["GET", "HEAD"])
async def status_page(request: Request) -> HTTPResponse:
    """The status page (HTML): version, uptime, health of each part, jobs, cache hit rate, upstream calls."""
    ctx = request.app.ctx
    try:
        report, _ = await health_report(request)
    except Exception as exc:  # the page must render, whatever broke
        log.exception("status page: health failed")
        report = {"status": "error", "version": __version__, "checks": {}, "error": type(exc).__name__}
    jobs, jobs_error = None, None
    try:
        jobs = await control.job_table(ctx.db, ctx.config, utc_now())
    except Exception as exc:
        jobs_error = f"jobs unavailable: {type(exc).__name__}"
    monitor = getattr(ctx, "health_monitor", None)
    window = monitor.upstream_window() if monitor is not None else None
    page = render(report, jobs, window, jobs_error)  # 200 even when unhealthy: /health is the machine's signal
    return HTTPResponse(page, content_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})
