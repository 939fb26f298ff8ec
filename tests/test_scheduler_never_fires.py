"""A cron schedule that never fires (``0 0 31 2 *``): refused at start, and survived if it gets in anyway."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from chessstats.cli import main
from chessstats.config import ConfigError, load_config
from chessstats.scheduler import control
from chessstats.scheduler.context import JobContext, open_context
from chessstats.scheduler.core import Scheduler
from chessstats.scheduler.registry import REGISTRY, Job, effective
from chessstats.store import jobs as runs
from tests.conftest import ROOT
from tests.replay import ReplayUpstream
from tests.test_scheduler_unit import T0, Clock, counting_job, make_config

NEVER = "0 0 31 2 *"


@pytest.mark.parametrize("schedule", [NEVER, "0 0 30 2 *", "0 12 31 4 *", "0 0 31 2 * 0"])
def test_config_refuses_a_schedule_that_never_fires(tmp_path: Path, schedule: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"CHESSSTATS_JOBS_CLEANUP_SCHEDULE": schedule})
    assert err.value.message.startswith(f"CHESSSTATS_JOBS_CLEANUP_SCHEDULE={schedule}: cron expression ")
    assert err.value.message.endswith("(sets jobs.cleanup.schedule)") and "never fires" in err.value.message
    path = tmp_path / "c.toml"
    path.write_text(f'[jobs.fide-ratings]\nschedule = "{schedule}"\n')
    with pytest.raises(ConfigError, match=r"^jobs\.fide-ratings\.schedule: .*never fires"):
        load_config(path, env={})


def test_rare_schedules_are_accepted() -> None:
    config = load_config(None, env={"CHESSSTATS_JOBS_CLEANUP_SCHEDULE": "0 0 29 2 *",  # leap days
                                    "CHESSSTATS_JOBS_FIDE_RATINGS_SCHEDULE": "0 0 31 2 1"})  # or Mondays
    assert config.jobs["cleanup"].schedule == "0 0 29 2 *"


@pytest.mark.parametrize("argv", [["config", "check"], ["jobs", "list"], ["serve", "--port", "0"]])
def test_cli_exits_2_with_one_line_naming_the_key(tmp_path: Path, argv: list[str]) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "CHESSSTATS_JOBS_CLEANUP_SCHEDULE": NEVER,
           "CHESSSTATS_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-m", "chessstats", *argv], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chessstats: configuration error: CHESSSTATS_JOBS_CLEANUP_SCHEDULE=")
    assert lines[0].endswith("(sets jobs.cleanup.schedule)")
    assert "never fires" in lines[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists()


def test_effective_reports_a_job_whose_schedule_cannot_be_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    job = REGISTRY["cleanup"]
    monkeypatch.setitem(REGISTRY, "cleanup", Job(job.name, NEVER, job.func, job.description))
    eff = effective(load_config(None, env={}))
    assert not eff["cleanup"].enabled and "cannot be used" in (eff["cleanup"].disabled_reason or "")
    assert eff["cleanup"].schedule_error and eff["fide-ratings"].enabled


async def test_scheduler_runs_the_other_jobs(tmp_path: Path, upstream: ReplayUpstream,
                                             caplog: pytest.LogCaptureFixture) -> None:
    ctx: JobContext = await open_context(make_config(tmp_path, upstream))
    try:
        calls: list[str] = []
        registry = {"never": counting_job("never", NEVER, calls), "ok": counting_job("ok", "* * * * *", calls)}
        clock = Clock(T0)
        sched = Scheduler(ctx, ctx.config.data_dir, now=clock, registry=registry, rng=random.Random(1))
        assert "job never is not scheduled" in caplog.text
        await sched.step()
        clock.advance(minutes=1)
        await sched.step()
        await sched.wait_idle()
        assert calls == ["ok"]
        assert [r.state for r in await runs.runs_of(ctx.db, "ok", 10)] == ["completed"]
        # A schedule that breaks after start (next tick not computable) is dropped, the others go on.
        sched.jobs["never"] = type(sched.jobs["ok"])(registry["never"], NEVER, True, None)
        clock.advance(minutes=1)
        await sched.step()
        await sched.wait_idle()
        assert calls == ["ok", "ok"] and "job never is no longer scheduled" in caplog.text
    finally:
        await ctx.close()


async def test_job_table_and_jobs_list_report_it(tmp_path: Path, upstream: ReplayUpstream,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    job = REGISTRY["cleanup"]
    monkeypatch.setitem(REGISTRY, "cleanup", Job(job.name, NEVER, job.func, job.description))
    config = make_config(tmp_path, upstream)
    ctx = await open_context(config)
    try:
        overview = await control.overview(ctx.db, config, T0)  # what GET /api/admin/jobs answers
    finally:
        await ctx.close()
    table = {j["name"]: j for j in overview["jobs"]}
    assert table["cleanup"]["nextRun"] is None and table["cleanup"]["enabled"] is False
    assert "cannot be used" in table["cleanup"]["disabledReason"]
    assert table["fide-ratings"]["nextRun"] is not None


def test_jobs_list_cli_reports_it(tmp_path: Path, replay: ReplayUpstream, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    job = REGISTRY["cleanup"]
    monkeypatch.setitem(REGISTRY, "cleanup", Job(job.name, NEVER, job.func, job.description))
    monkeypatch.setenv("LICHESS_API_URL", replay.lichess_url)
    assert main(["jobs", "list", "--init", "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("cleanup"))
    assert NEVER in line and "cannot be used" in line
    assert any(line.startswith("fide-ratings") for line in out.splitlines())
