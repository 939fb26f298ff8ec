"""The scheduler driven by an injectable clock, on a real SQLite file, against the replay upstream.

Time never passes by sleeping: the clock is moved and :meth:`Scheduler.step` is called.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from chessstats.config import load_config
from chessstats.errors import BadRequest, ConfigError, NotFound, UpstreamError
from chessstats.scheduler import control
from chessstats.scheduler.context import JobContext, open_context
from chessstats.scheduler.core import INTERRUPTED, Scheduler
from chessstats.scheduler.registry import REGISTRY, Job, check_jobs_config
from chessstats.store import jobs as runs
from chessstats.store import players as players_store
from chessstats.store import tournaments as tstore
from tests.replay import ReplayUpstream

T0 = datetime(2026, 11, 29, 10, 0, 30, tzinfo=UTC)


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, t: datetime = T0) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)


def make_config(tmp_path: Path, replay: ReplayUpstream, **env: str):
    base = {
        "CHESSSTATS_DATA_DIR": str(tmp_path / "data"), "LICHESS_API_URL": replay.lichess_url,
        "FIDE_API_URL": replay.url + "/fide", "CHESSSTATS_LICHESS_MAX_REQUESTS_PER_S": "1000",
        "CHESSSTATS_SCHEDULER_RETRY_BASE_S": "10",
    }
    return load_config(env={**base, **env})


@pytest.fixture
async def ctx(tmp_path: Path, upstream: ReplayUpstream) -> AsyncIterator[JobContext]:
    context = await open_context(make_config(tmp_path, upstream))
    yield context
    await context.close()


def only(jobs: dict[str, Job], ctx: JobContext, clock: Clock, **kw) -> Scheduler:
    """A scheduler over a custom registry (all enabled, default schedules)."""
    return Scheduler(ctx, ctx.config.data_dir, now=clock, registry=jobs, rng=random.Random(1), **kw)


async def all_runs(ctx: JobContext, job: str) -> list[runs.RunRow]:
    return await runs.runs_of(ctx.db, job, 1000)


def counting_job(name: str, schedule: str, calls: list[str], fail: int = 0) -> Job:
    async def func(ctx: JobContext) -> str:
        calls.append(name)
        if len(calls) <= fail:
            raise UpstreamError("lichess: HTTP 500", "lichess")
        return f"call {len(calls)}"
    return Job(name, schedule, func, "test job")


# --- ticks, catch-up, exactly once -----------------------------------------------------------

async def test_first_sight_then_one_run_per_tick(ctx: JobContext) -> None:
    calls: list[str] = []
    clock = Clock()
    sched = only({"every-minute": counting_job("every-minute", "* * * * *", calls)}, ctx, clock)
    assert await sched.try_acquire()
    await sched.step()  # first sight: counting starts now, nothing is due
    await sched.wait_idle()
    assert calls == []
    clock.advance(seconds=30)  # 10:01:00
    for _ in range(3):  # stepping again at the same instant queues nothing more
        await sched.step()
        await sched.wait_idle()
    assert calls == ["every-minute"]
    rows = await all_runs(ctx, "every-minute")
    assert [(r.state, r.trigger, r.scheduled_for) for r in rows] == [
        ("completed", "schedule", "2026-11-29T10:01:00.000Z")]
    assert rows[0].summary == "call 1" and rows[0].duration_ms is not None
    await sched.stop()


async def test_catch_up_runs_once_after_downtime(ctx: JobContext) -> None:
    calls: list[str] = []
    clock = Clock()
    jobs = {"half-hourly": counting_job("half-hourly", "*/30 * * * *", calls)}
    first = only(jobs, ctx, clock)
    await first.try_acquire()
    await first.step()
    await first.stop()
    clock.advance(hours=5)  # ten ticks pass while nobody runs
    second = only(jobs, ctx, clock)
    await second.try_acquire()
    await second.step()
    await second.wait_idle()
    rows = await all_runs(ctx, "half-hourly")
    assert [(r.trigger, r.scheduled_for) for r in rows] == [("catch-up", "2026-11-29T15:00:00.000Z")]
    assert calls == ["half-hourly"]
    clock.advance(minutes=30)
    await second.step()
    await second.wait_idle()
    assert [r.trigger for r in await all_runs(ctx, "half-hourly")] == ["catch-up", "schedule"]
    await second.stop()


async def test_one_lock_holder_per_data_dir(ctx: JobContext) -> None:
    clock = Clock()
    a = only({}, ctx, clock)
    b = only({}, ctx, clock)
    assert await a.try_acquire() is True
    assert await b.try_acquire() is False
    assert a.health()["lockHolder"] is True and b.health()["lockHolder"] is False
    await a.stop()  # released: the other takes over
    assert await b.try_acquire() is True
    await b.stop()


async def test_tick_enqueue_is_compare_and_set(ctx: JobContext) -> None:
    """Two schedulers that both think a tick is due queue it once (mark CAS + unique index)."""
    now = T0
    await runs.set_last_tick(ctx.db, "j", now, now)
    mark = (await runs.last_ticks(ctx.db))["j"]
    tick = now + timedelta(seconds=30)
    first = await runs.enqueue_tick(ctx.db, "j", previous=mark, tick=tick, now=tick, trigger="schedule", queue=True)
    second = await runs.enqueue_tick(ctx.db, "j", previous=mark, tick=tick, now=tick, trigger="schedule", queue=True)
    assert first is not None and second is None
    assert len(await all_runs(ctx, "j")) == 1


# --- failures, retries, recovery ------------------------------------------------------------

async def test_failed_run_retried_with_backoff_then_next_tick_still_runs(ctx: JobContext) -> None:
    calls: list[str] = []
    clock = Clock()
    sched = only({"flaky": counting_job("flaky", "0 * * * *", calls, fail=5)}, ctx, clock)
    await sched.try_acquire()
    await sched.step()
    clock.t = datetime(2026, 11, 29, 11, 0, 0, tzinfo=UTC)
    await sched.step()
    await sched.wait_idle()
    for _ in range(6):  # retries come due one after the other
        clock.advance(seconds=200)
        await sched.step()
        await sched.wait_idle()
    rows = await all_runs(ctx, "flaky")
    assert [(r.trigger, r.attempt, r.state) for r in rows] == [
        ("schedule", 1, "failed"), ("retry", 2, "failed"), ("retry", 3, "failed")]  # max_attempts = 3
    assert all(r.error == "UpstreamError: lichess: HTTP 500" for r in rows)
    # backoff: 10 s × 2**(attempt-1) × jitter 0.5..1.5 after the failure
    for failed, retry in zip(rows, rows[1:], strict=False):
        delay = (runs.parse_iso(retry.scheduled_for) - runs.parse_iso(failed.finished_at)).total_seconds()
        base = 10 * 2 ** (failed.attempt - 1)
        assert 0.5 * base <= delay <= 1.5 * base, delay
    clock.t = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)  # the next tick still happens
    await sched.step()
    await sched.wait_idle()
    scheduled = [r for r in await all_runs(ctx, "flaky") if r.trigger == "schedule"]
    assert [(r.scheduled_for, r.attempt, r.state) for r in scheduled] == [
        ("2026-11-29T11:00:00.000Z", 1, "failed"), ("2026-11-29T12:00:00.000Z", 1, "failed")]
    await sched.stop()


async def test_rate_limited_retry_waits_at_least_retry_after(ctx: JobContext, upstream: ReplayUpstream) -> None:
    upstream.set_fault(r"/player/top/", "429-retry", seconds=120, times=1)
    clock = Clock()
    sched = only({"rankings-updater": REGISTRY["rankings-updater"]}, ctx, clock)
    await sched.try_acquire()
    await runs.insert_run(ctx.db, "rankings-updater", trigger="manual", now=clock())
    await sched.step()
    await sched.wait_idle()
    failed, retry = await all_runs(ctx, "rankings-updater")
    assert failed.state == "failed" and "429" in (failed.error or "")
    assert (runs.parse_iso(retry.scheduled_for) - clock()).total_seconds() >= 120
    await sched.stop()


async def test_interrupted_active_run_marked_failed_and_retried(ctx: JobContext) -> None:
    run = await runs.insert_run(ctx.db, "cleanup", trigger="schedule", now=T0, state="active")
    clock = Clock(T0 + timedelta(minutes=1))
    sched = only({"cleanup": REGISTRY["cleanup"]}, ctx, clock)
    await sched.try_acquire()
    row = await runs.get_run(ctx.db, run.id)
    assert row is not None and (row.state, row.error) == ("failed", INTERRUPTED)
    retry = (await all_runs(ctx, "cleanup"))[-1]
    assert (retry.trigger, retry.attempt, retry.retry_of, retry.state) == ("retry", 2, run.id, "waiting")
    await sched.stop()


async def test_active_run_of_a_live_process_is_left_alone(ctx: JobContext) -> None:
    from chessstats.scheduler.lock import job_lock

    run = await runs.insert_run(ctx.db, "cleanup", trigger="manual", now=T0, state="active")
    held = job_lock(ctx.config.data_dir, "cleanup")
    assert held.acquire()  # e.g. `chessstats jobs run cleanup` in another process
    sched = only({"cleanup": REGISTRY["cleanup"]}, ctx, Clock())
    await sched.try_acquire()
    assert (await runs.get_run(ctx.db, run.id)).state == "active"  # type: ignore[union-attr]
    held.release()
    await sched.stop()


async def test_no_overlap_when_a_run_outlasts_its_interval(ctx: JobContext) -> None:
    release = asyncio.Event()
    running = 0
    max_running = 0

    async def slow(_: JobContext) -> str:
        nonlocal running, max_running
        running += 1
        max_running = max(max_running, running)
        await release.wait()
        running -= 1
        return "done"

    clock = Clock(datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC))
    sched = only({"slow": Job("slow", "* * * * * *", slow, "slow")}, ctx, clock)
    await sched.try_acquire()
    await sched.step()
    for _ in range(10):  # ten ticks while the first run is still going
        clock.advance(seconds=1)
        await sched.step()
        await asyncio.sleep(0)
    rows = await all_runs(ctx, "slow")
    assert [r.state for r in rows] == ["active", "waiting"]  # one behind the active one, no more
    release.set()
    await sched.wait_idle()
    await sched.step()
    await sched.wait_idle()
    rows = await all_runs(ctx, "slow")
    assert max_running == 1
    assert [r.state for r in rows] == ["completed", "completed"]
    assert rows[1].started_at >= rows[0].finished_at  # type: ignore[operator]
    await sched.stop()


async def test_stop_records_unfinished_run_as_interrupted(ctx: JobContext, tmp_path: Path,
                                                          upstream: ReplayUpstream) -> None:
    ctx.config = make_config(tmp_path, upstream, CHESSSTATS_SCHEDULER_STOP_TIMEOUT_S="0.2")

    async def forever(_: JobContext) -> str:
        await asyncio.sleep(3600)
        return "never"

    sched = only({"forever": Job("forever", "0 0 1 1 *", forever, "x")}, ctx, Clock())
    await sched.try_acquire()
    await runs.insert_run(ctx.db, "forever", trigger="manual", now=T0)
    await sched.step()
    await asyncio.sleep(0.05)
    await sched.stop()
    rows = await all_runs(ctx, "forever")
    assert (rows[0].state, rows[0].error) == ("failed", "interrupted: shutdown before it finished")
    assert rows[1].trigger == "retry" and rows[1].state == "waiting"


# --- control ---------------------------------------------------------------------------------

async def test_control_requests_and_errors(ctx: JobContext) -> None:
    with pytest.raises(NotFound):
        await control.request_run(ctx.db, ctx.config, "nope", T0)
    run = await control.request_run(ctx.db, ctx.config, "cleanup", T0)
    assert (run.state, run.trigger) == ("waiting", "manual")
    with pytest.raises(BadRequest, match="only a failed run"):
        await control.retry_run(ctx.db, ctx.config, run.id, T0)
    with pytest.raises(NotFound):
        await control.retry_run(ctx.db, ctx.config, 999_999, T0)
    table = {j["name"]: j for j in await control.job_table(ctx.db, ctx.config, T0)}
    assert table["titled-tuesday"]["enabled"] is True
    assert table["cleanup"]["nextRun"] == "2026-12-06T02:00:00Z"
    assert table["cleanup"]["lastRun"].state == "waiting"


def test_unknown_job_in_config_is_a_config_error(tmp_path: Path, replay: ReplayUpstream) -> None:
    config = make_config(tmp_path, replay, CHESSSTATS_JOBS_NOPE_SCHEDULE="* * * * *")
    with pytest.raises(ConfigError, match="jobs.nope: unknown job"):
        check_jobs_config(config)
    with pytest.raises(ConfigError, match="jobs.tournament-monitor.schedule"):
        make_config(tmp_path, replay, CHESSSTATS_JOBS_TOURNAMENT_MONITOR_SCHEDULE="every minute")
    config = make_config(tmp_path, replay, TOURNAMENT_MONITOR_INTERVAL="5", TOURNAMENT_DISCOVERY_INTERVAL="15")
    assert config.jobs["tournament-monitor"].schedule == "*/5 * * * *"
    assert config.jobs["tournament-discovery"].schedule == "*/15 * * * *"
    assert config.scheduler.snapshot_retention_days == 30


# --- each job's effect -------------------------------------------------------------------------

async def run_job(ctx: JobContext, name: str) -> runs.RunRow:
    sched = only({name: REGISTRY[name]}, ctx, Clock())
    await sched.try_acquire()
    run = await runs.insert_run(ctx.db, name, trigger="manual", now=T0)
    await sched.start_due(T0)
    await sched.wait_idle()
    await sched.stop()
    row = await runs.get_run(ctx.db, run.id)
    assert row is not None
    return row


async def test_tournament_discovery_stores_and_cancels(ctx: JobContext) -> None:
    from chessstats.upstream.lichess import _Arena, arena_to_model

    gone = arena_to_model(_Arena(id="gone0001", fullName="Vanished", status=10, startsAt=1_800_000_000_000), "x")
    swiss = arena_to_model(_Arena(id="swiss001", system="swiss", status=10), "x")
    await tstore.upsert_tournaments(ctx.db, [(gone, None), (swiss, None)], "2026-11-29T00:00:00Z")
    row = await run_job(ctx, "tournament-discovery")
    assert row.state == "completed", row.error
    upcoming, _ = await tstore.list_tournaments(ctx.db, status="upcoming", platform="lichess", offset=0, limit=500)
    ongoing, _ = await tstore.list_tournaments(ctx.db, status="ongoing", platform="lichess", offset=0, limit=500)
    assert len(upcoming) > 10 and len(ongoing) > 10
    stored = await tstore.get_tournament(ctx.db, "lichess", "gone0001")
    assert stored is not None and stored.tournament.status == "cancelled"  # kept, not deleted
    assert (await tstore.get_tournament(ctx.db, "lichess", "swiss001")).tournament.status == "upcoming"  # type: ignore[union-attr]
    assert "cancelled 1" in (row.summary or "")


async def test_tournament_monitor_refreshes_imports_and_cancels(ctx: JobContext, upstream: ReplayUpstream) -> None:
    import json

    from chessstats.upstream.lichess import _Arena, arena_to_model

    live = json.loads(upstream.files["tournament_may24lta.json"])
    for k in ("isFinished", "podium", "isRecentlyFinished"):
        live.pop(k, None)
    live.update(id="live0001", isStarted=True, nbPlayers=77)
    upstream.add("/lichess/api/tournament/live0001", json.dumps(live).encode(), "application/json")
    upstream.add("/lichess/api/tournament/live0001/results",
                 upstream.files["tournament_hallow23_results_nb3.ndjson"], "application/x-ndjson")
    from tests.replay import generate_arena

    for path, (body, ctype) in generate_arena("fin00001", 12, 30).items():  # GENERATED finished arena
        upstream.add(path, body, ctype)
    rows = [arena_to_model(_Arena(id=i, status=20, nbPlayers=1), "x") for i in ("live0001", "fin00001", "nope0001")]
    await tstore.upsert_tournaments(ctx.db, [(t, None) for t in rows], "2026-11-29T00:00:00Z")
    row = await run_job(ctx, "tournament-monitor")
    assert row.state == "completed", row.error
    assert row.summary == "refreshed 1 tournaments, imported 1 finished, cancelled 1"
    live_row = await tstore.get_tournament(ctx.db, "lichess", "live0001")
    assert live_row is not None and live_row.tournament.nb_players == 77 and live_row.imported_at is None
    assert ctx.cache.get("tournament:lichess:live0001").expires_at is not None  # type: ignore[union-attr]
    assert ctx.cache.get("results:lichess:live0001:1:100") is not None
    assert await ctx.imports.run_due() == 1  # the import the monitor queued (a server runs it in the background)
    await ctx.tournaments.get("fin00001")
    finished = await tstore.get_tournament(ctx.db, "lichess", "fin00001")
    assert finished is not None and finished.imported_at is not None and finished.tournament.status == "finished"
    assert await ctx.db.fetchval("SELECT count(*) FROM games WHERE tournament_id = ?", (finished.pk,)) == 30
    assert ctx.cache.get("tournament:lichess:fin00001").expires_at is None  # type: ignore[union-attr]  # permanent
    assert (await tstore.get_tournament(ctx.db, "lichess", "nope0001")).tournament.status == "cancelled"  # type: ignore[union-attr]


async def test_tournament_monitor_fails_when_every_refresh_fails(ctx: JobContext, upstream: ReplayUpstream) -> None:
    from chessstats.upstream.lichess import _Arena, arena_to_model

    await tstore.upsert_tournaments(ctx.db, [(arena_to_model(_Arena(id="live0002", status=20), "x"), None)],
                                    "2026-11-29T00:00:00Z")
    upstream.set_fault(r"/tournament/live0002", "500")
    row = await run_job(ctx, "tournament-monitor")
    assert row.state == "failed" and "every refresh failed" in (row.error or "")


async def test_rankings_updater_caches_and_snapshots(ctx: JobContext) -> None:
    row = await run_job(ctx, "rankings-updater")
    assert row.state == "completed", row.error
    assert await players_store.count_snapshots(ctx.db, "lichess") == 4
    payload = ctx.cache.get("players:lichess:top:rapid:100")
    assert payload is not None
    data = msgspec.json.decode(b"{" + payload.fields + b"}")["data"]
    assert data[0] == {"rank": 1, "username": "CoolChessSchool", "title": None, "rating": 2838, "progress": 29,
                       "fideId": None, "federation": None}


async def test_rankings_updater_partial_failure_fails_the_run(ctx: JobContext, upstream: ReplayUpstream) -> None:
    upstream.set_fault(r"/player/top/100/blitz", "html500")
    row = await run_job(ctx, "rankings-updater")
    assert row.state == "failed" and "blitz" in (row.error or "")
    assert await players_store.count_snapshots(ctx.db, "lichess") == 3  # the others were stored


async def test_fide_ratings_into_players(ctx: JobContext) -> None:
    row = await run_job(ctx, "fide-ratings")
    assert row.state == "completed", row.error
    assert row.summary == "stored 100 FIDE players (100 new, 0 updated), skipped 0 rows without a FIDE ID"
    carlsen = await players_store.get_account(ctx.db, "fide", "1503014")
    assert carlsen is not None
    assert (carlsen["player_name"], carlsen["player_federation"], carlsen["ratings"]) == (
        "Carlsen, Magnus", "NOR", {"standard": {"rating": 2823}})
    assert ctx.cache.get("players:fide:top:100") is not None
    again = await run_job(ctx, "fide-ratings")  # idempotent: upserts
    assert again.state == "completed" and "(0 new, 100 updated)" in (again.summary or "")
    assert await ctx.db.fetchval("SELECT count(*) FROM players WHERE fide_id IS NOT NULL") == 100


async def test_fide_ratings_bad_upstream(ctx: JobContext, upstream: ReplayUpstream) -> None:
    upstream.add("/fide/top_players/", b'[{"rank":"1","name":"X","fide_id":"n/a","country":"NOR","rating":"-"}]',
                 "application/json")
    upstream.set_fault(r"/a_top.php", "500", times=1)  # the official site's table fails too
    try:
        row = await run_job(ctx, "fide-ratings")
    finally:
        upstream.routes.pop("/fide/top_players/")
    assert row.state == "failed" and "empty" in (row.error or "")
    upstream.set_fault(r"/fide/", "badjson")
    assert (await run_job(ctx, "fide-ratings")).error.startswith("UpstreamError: fide: unparsable")  # type: ignore[union-attr]


async def test_lichess_top_players_ratings_per_perf(ctx: JobContext, upstream: ReplayUpstream) -> None:
    import json

    top = json.loads(upstream.files["player.json"])
    row = await run_job(ctx, "lichess-top-players")
    assert row.state == "completed", row.error
    names = {u["username"].lower() for perf in ("bullet", "blitz", "rapid", "classical") for u in top[perf]}
    assert row.summary == (f"stored {len(names)} Lichess players from 4 leaderboards ({len(names)} new, 0 updated); "
                           "refreshed 0 stored profiles, skipped 0")
    ediz = await players_store.get_account(ctx.db, "lichess", "EDIZ_GUREL")
    assert ediz is not None and ediz["username"] == "Ediz_Gurel" and ediz["title"] == "GM"
    assert ediz["ratings"]["bullet"] == {"rating": 3326, "progress": 22}


async def test_titled_tuesday_is_registered_enabled(ctx: JobContext) -> None:
    sched = only(REGISTRY, ctx, Clock())
    assert sched.jobs["titled-tuesday"].enabled is True and sched.jobs["titled-tuesday"].disabled_reason is None
    # its run is tested end to end against the replay in tests/test_chesscom_api.py


async def test_cleanup_deletes_old_snapshots_and_reports_sizes(ctx: JobContext) -> None:
    now = datetime.now(UTC)
    await players_store.insert_snapshot(ctx.db, "lichess", "blitz", now - timedelta(days=40), b"[]")
    await players_store.insert_snapshot(ctx.db, "lichess", "blitz", now - timedelta(days=29), b"[]")
    from chessstats.payload import Payload

    ctx.cache.set("short", Payload(b'"data":1', source="api", fetched_at=0), 0.01)
    await asyncio.sleep(0.05)
    row = await run_job(ctx, "cleanup")
    assert row.state == "completed", row.error
    assert row.summary is not None and row.summary.startswith(
        "deleted 1 snapshots older than 30 days, culled 1 cache entries; database ")
    assert " KiB -> " in row.summary and ", cache " in row.summary
    assert await players_store.count_snapshots(ctx.db) == 1
