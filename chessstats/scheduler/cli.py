"""``chessstats jobs list`` and ``chessstats jobs run NAME``.

``jobs run`` runs one job in the foreground (no retry), recorded as a ``manual`` run, while
holding the job's run lock: if the job is running elsewhere (a server's scheduler), it refuses.
Exit status: 0 completed, 1 failed or refused, 2 unknown job or bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from chessstats.config import Config
from chessstats.scheduler.context import open_context, utc_now
from chessstats.scheduler.registry import REGISTRY, check_jobs_config


def jobs_command(config: Config, args: argparse.Namespace) -> int:
    """Dispatch ``jobs list`` / ``jobs run NAME``; returns the exit status.

    Raises:
        ConfigError: a ``[jobs.<name>]`` names no registered job (exit 2 in the CLI).
    """
    check_jobs_config(config)
    if args.jobs_command == "list":
        return asyncio.run(_list(config))
    return asyncio.run(_run(config, args.name))


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


async def _list(config: Config) -> int:
    from chessstats.scheduler.control import job_table

    ctx = await open_context(config)
    try:
        table = await job_table(ctx.db, config, utc_now())
    finally:
        await ctx.close()
    rows = [("NAME", "SCHEDULE", "ENABLED", "NEXT RUN", "LAST RUN", "STATE", "SUMMARY / ERROR")]
    for job in table:
        last = job["lastRun"]
        rows.append((
            job["name"], job["schedule"], "yes" if job["enabled"] else "no",
            _cell(job["nextRun"]), _cell(last.finished_at or last.started_at or last.queued_at) if last else "-",
            last.state if last else "-",
            ((last.error or last.summary or "") if last else "") or (job["disabledReason"] or ""),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:6], widths, strict=True)) + "  " + r[6])
    print(f"time zone: {config.scheduler.timezone}; background jobs "
          f"{'on' if config.scheduler.enabled else 'off'}")
    return 0


async def _run(config: Config, name: str) -> int:
    from chessstats.scheduler.core import execute_claimed
    from chessstats.scheduler.lock import job_lock
    from chessstats.store import jobs as runs

    job = REGISTRY.get(name)
    if job is None:
        print(f"chessstats: no job named {name!r}; jobs: {', '.join(REGISTRY)}", file=sys.stderr)
        return 2
    if job.unavailable:
        print(f"chessstats: job {name} cannot run: {job.unavailable}", file=sys.stderr)
        return 1
    from chessstats.resources import DataDir, redis_backend

    backend = redis_backend(config)  # [cache] url on Redis: the job lock is shared by every host
    lock = job_lock(config.data_dir, name, DataDir(config.data_dir).locks(backend))
    try:
        taken = lock.acquire()
    except OSError as exc:
        print(f"chessstats: the lock of job {name} cannot be taken: {exc}", file=sys.stderr)
        taken = None
    if not taken:
        if taken is not None:
            print(f"chessstats: job {name} is running in another process; try again when it ends", file=sys.stderr)
        if backend is not None:
            backend.close()
        return 1
    try:
        ctx = await open_context(config)
        try:
            run = await runs.insert_run(ctx.db, name, trigger="manual", now=utc_now(), state="active")
            ok = await execute_claimed(None, run, job, ctx)
            done = await runs.get_run(ctx.db, run.id)
            # imports the job queued run here (a server runs them in its background)
            imports = await ctx.imports.run_due()
            if imports:
                print(f"ran {imports} queued tournament import{'s' if imports > 1 else ''}")
        finally:
            await ctx.close()
    finally:
        lock.release()
        if backend is not None:
            backend.close()
    assert done is not None
    outcome = done.summary if ok else done.error
    print(f"{name}: run {done.id} {done.state} in {done.duration_ms} ms: {outcome}")
    return 0 if ok else 1
