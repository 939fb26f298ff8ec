"""``scripts/bench``: chessstats measured side by side with the machine's own ceiling.

Every load figure is taken against a ceiling in the same run (a bare Sanic app serving a
pre-encoded body of exactly the product's body size, same worker count, access log off), in
alternating runs (ceiling, product, ceiling, product, ...), and is reported as a ratio
product/ceiling per pair plus the median of those ratios. See ``docs/bench.md``.

Run it through ``scripts/bench`` (which picks or creates the venv and installs wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-token"
CLK_TCK = os.sysconf("SC_CLK_TCK")
RECORDED_ID = "sH24g2zH"  # the recorded finished team battle (191 standings, 1463 games)
CONNECTIONS = 32
#: Standings per page of the database-served standings row (the leaderboard page size).
DB_STANDINGS_LIMIT = 100

#: Inbound rate limits on, at limits wrk never reaches (every request is counted, none refused).
NO_REFUSALS = {"CHESSSTATS_RATELIMIT_ENABLED": "true", "CHESSSTATS_RATELIMIT_MAX_REQUESTS": "1000000000",
               "CHESSSTATS_RATELIMIT_EXPENSIVE_MAX_REQUESTS": "1000000000"}
#: The overhead row's wrk slices, seconds: each variant's time in a round is taken in slices this
#: long, in turn with the other variants' (:func:`overhead_probe`).
OVERHEAD_SLICE_S = 1.0
#: The overhead row's servers: limiter and metrics off / on, one at a time and both; ``control`` is a
#: second ``off`` server, whose ratio to ``off`` is what the row reads for two identical servers.
OVERHEAD_VARIANTS = {
    "off": {"CHESSSTATS_RATELIMIT_ENABLED": "false", "CHESSSTATS_METRICS_ENABLED": "false"},
    "control": {"CHESSSTATS_RATELIMIT_ENABLED": "false", "CHESSSTATS_METRICS_ENABLED": "false"},
    "limiter": {**NO_REFUSALS, "CHESSSTATS_METRICS_ENABLED": "false"},
    "metrics": {"CHESSSTATS_RATELIMIT_ENABLED": "false", "CHESSSTATS_METRICS_ENABLED": "true"},
    "both": {**NO_REFUSALS, "CHESSSTATS_METRICS_ENABLED": "true"},
}

TARGETS = {
    "limiter_ratio": 0.95,  # cached GET req/s with the inbound limiter >= 95 % of without

    "cached_ratio": 0.95,  # cached GET req/s >= 95 % of the ceiling (median of pairs), with the defaults
    "db_ratio": 0.75,  # database-served GET req/s (detail, standings page) >= 75 % of the ceiling
    "cached_p99_x": 1.5,  # cached p99 <= 1.5 x the ceiling's p99
    "coalesce_upstream": 1,  # one upstream request (per upstream resource) for 100 concurrent misses
    "import_s": 3.0,  # 10,000 standings + 5,000 games imported in <= 3 s
    "import_peak_mib": 100.0,  # ... with peak RSS <= 100 MiB
    "idle_rss_mib": 60.0,  # idle RSS < 60 MB with one worker
    "exe_idle_rss_mib": 55.0,  # idle RSS of the executable (whole process tree) <= 55 MiB with one worker
    "import_p99_x": 2.0,  # cached p99 while a 1,463-game import runs <= 2 x the p99 without
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- /proc sampling ---------------------------------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        ppid = int(data[data.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mib(pids: list[int]) -> float:
    return sum(_status_kib(p, "VmRSS") for p in pids) / 1024


def hwm_mib(pids: list[int]) -> float:
    return sum(_status_kib(p, "VmHWM") for p in pids) / 1024


def machine_times() -> tuple[float, float, float]:
    """(busy, steal, total) CPU seconds of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = parts[:8]
    busy = user + nice + system + irq + softirq
    return busy / CLK_TCK, steal / CLK_TCK, sum(parts[:8]) / CLK_TCK


_idle_budget = [45.0]  # seconds of idle-waiting allowed over the whole run (keeps it under 5 min)


def wait_idle(max_wait_s: float, threshold_cores: float = 0.3) -> float:
    """Wait (at most ``max_wait_s``, within a run-wide budget) until the machine is near idle.

    Returns the busy cores seen last (other sessions on a shared machine show up here).
    """
    started = time.monotonic()
    deadline = started + min(max_wait_s, max(_idle_budget[0], 0.5))
    while True:
        b0 = machine_times()[0]
        time.sleep(0.5)
        busy = (machine_times()[0] - b0) / 0.5
        if busy < threshold_cores or time.monotonic() >= deadline:
            _idle_budget[0] -= max(0.0, time.monotonic() - started - 0.5)
            return busy


# --- processes --------------------------------------------------------------------------------

def _on_cpus(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that keeps a child (and its own children) on ``cpus``; None: anywhere."""
    return None if not cpus else functools.partial(os.sched_setaffinity, 0, cpus)


class Proc:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path,
                 cpus: set[int] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_on_cpus(cpus))  # noqa: PLW1509
        self.pid = self.proc.pid

    def tree(self) -> list[int]:
        return process_tree(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()

    def wait_http(self, url: str, timeout_s: float = 40) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=1).status_code < 600:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {url}")


def start_replay(tmp: Path) -> tuple[Proc, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = Proc("replay", [sys.executable, str(ROOT / "tests" / "replay.py"), "--port", str(port)], env,
                tmp / "replay.log")
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/_replay/counts")
    return proc, url


def start_server(tmp: Path, replay_url: str, workers: int, name: str = "server", data_dir: Path | None = None,
                 extra_env: dict[str, str] | None = None, cpus: set[int] | None = None) -> tuple[Proc, str]:
    """``chessstats serve --no-jobs --workers N`` on ``data_dir`` (default ``<tmp>/data-<name>``).

    Several servers may share one data dir (SQLite WAL + diskcache); ``extra_env`` adds settings,
    e.g. ``CHESSSTATS_CACHE_ENABLED=false`` for the database-served rows.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHESSSTATS_", "LICHESS_"))
           and k not in ("DATABASE_URL", "REDIS_URL")}  # the SQLite + diskcache rows stay so; engines rows set them
    env.update({
        "PYTHONPATH": str(ROOT), "LICHESS_API_URL": replay_url + "/lichess/api",
        "CHESSSTATS_LICHESS_RATE": "100000/1s", "CHESSSTATS_ADMIN_TOKEN": ADMIN_TOKEN,
        # the inbound limits stay on (their cost is part of every figure) but never refuse wrk
        **NO_REFUSALS,
    })
    env.update(extra_env or {})
    data_dir = data_dir or tmp / f"data-{name}"
    cmd = [sys.executable, "-m", "chessstats", "serve", "--port", str(port), "--data-dir", str(data_dir),
           "--no-jobs", "--workers", str(workers)]
    proc = Proc(name, cmd, env, tmp / f"{name}.log", cpus)
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/health")
    return proc, url


def start_ceiling(tmp: Path, bodies_dir: Path, workers: int) -> tuple[Proc, str]:
    port = free_port()
    env = {**os.environ, "BENCH_CEILING_BODIES": str(bodies_dir)}
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_ceiling.py"), "--port", str(port), "--workers", str(workers)]
    proc = Proc("ceiling", cmd, env, tmp / "ceiling.log")
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/health")
    return proc, url


# --- wrk --------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    res: dict = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in ([\d.]+\w+)", out)
    res["requests"] = int(m.group(1)) if m else 0
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        res[f"p{pct}_ms"] = _ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return res


# A wrk script that rotates over a list of paths (one request each, in order, round robin) and
# counts the answers by X-Cache header and by envelope source. The ceiling and the product run
# the same script (same wrk CPU per request on both sides); the ceiling's answers carry neither.
ROTATE_LUA = r"""
local paths = {%(paths)s}
local reqs = {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for i, p in ipairs(paths) do reqs[i] = wrk.format("GET", p) end
  n = 0
  x_hit, x_miss, x_other, x_none, src_db, src_cache, src_other = 0, 0, 0, 0, 0, 0, 0
end

function request()
  n = n + 1
  if n > #reqs then n = 1 end
  return reqs[n]
end

function response(status, headers, body)
  local x = headers["x-cache"] or headers["X-Cache"]
  if x == nil then x_none = x_none + 1
  elseif x == "MISS" then x_miss = x_miss + 1
  elseif x == "HIT" then x_hit = x_hit + 1
  else x_other = x_other + 1 end
  if string.find(body, '"source":"database"', 1, true) then src_db = src_db + 1
  elseif string.find(body, '"source":"cache"', 1, true) then src_cache = src_cache + 1
  else src_other = src_other + 1 end
end

function done(summary, latency, requests)
  local t = {x_hit=0, x_miss=0, x_other=0, x_none=0, src_db=0, src_cache=0, src_other=0}
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + thread:get(k) end
  end
  io.write(string.format("BENCHCOUNT x_hit=%%d x_miss=%%d x_other=%%d x_none=%%d ", t.x_hit, t.x_miss, t.x_other,
    t.x_none))
  io.write(string.format("src_db=%%d src_cache=%%d src_other=%%d\n", t.src_db, t.src_cache, t.src_other))
end
"""


def rotation_script(path: Path, paths: list[str]) -> Path:
    """Write a wrk Lua script rotating over ``paths`` (see :data:`ROTATE_LUA`)."""
    path.write_text(ROTATE_LUA % {"paths": ", ".join(json.dumps(p) for p in paths)})
    return path


def run_wrk(url: str, duration_s: float, server: Proc, connections: int = CONNECTIONS,
            script: Path | None = None, cpus: set[int] | None = None) -> dict:
    """One wrk run with server CPU, wrk CPU, unexplained CPU and steal for its duration.

    With ``script`` (see :func:`rotation_script`), the answers' X-Cache / source counts are
    added under ``"counts"``; with ``cpus``, wrk runs on those CPUs only.
    """
    pids = server.tree()
    busy0, steal0, _ = machine_times()
    cpu0 = cpu_seconds(pids)
    t0 = time.monotonic()
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    proc = subprocess.run(cmd + [url], capture_output=True, text=True, check=False,
                          preexec_fn=_on_cpus(cpus))  # noqa: PLW1509
    elapsed = time.monotonic() - t0
    server_cpu = cpu_seconds(pids) - cpu0
    busy1, steal1, _ = machine_times()
    res = parse_wrk(proc.stdout)
    m = re.search(r"^BENCHCOUNT (.*)$", proc.stdout, re.M)
    if m:
        res["counts"] = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    ru = _wrk_cpu(proc)
    res.update(
        server_cpu_s=server_cpu,
        server_cpu_pct=round(100 * server_cpu / elapsed, 1),
        server_cpu_us_per_req=round(1e6 * server_cpu / res["requests"], 1) if res["requests"] else None,
        wrk_cpu_pct=round(100 * ru / elapsed, 1) if ru is not None else None,
        steal_s=round(steal1 - steal0, 2),
        unexplained_cpu_s=round((busy1 - busy0) - server_cpu - (ru or 0), 2),
    )
    if proc.returncode != 0 or not res["requests"]:
        res["error"] = (proc.stderr or proc.stdout)[-500:]
    return res


_last_children_cpu = [0.0]


def _wrk_cpu(_: subprocess.CompletedProcess) -> float | None:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = ru.ru_utime + ru.ru_stime
    delta = total - _last_children_cpu[0]
    _last_children_cpu[0] = total
    return delta


# --- probes -----------------------------------------------------------------------------------

def get(client: httpx.Client, url: str) -> tuple[httpx.Response, float]:
    t0 = time.perf_counter()
    r = client.get(url)
    return r, (time.perf_counter() - t0) * 1000


def replay_counts(replay_url: str) -> dict[str, int]:
    return httpx.get(replay_url + "/_replay/counts", timeout=10).json()["paths"]


def fresh_id(prefix: str) -> str:
    alphabet = string.ascii_letters + string.digits
    return (prefix + "".join(secrets.choice(alphabet) for _ in range(8)))[:8]


def generate(replay_url: str, tid: str, players: int, games: int) -> None:
    r = httpx.post(replay_url + "/_replay/generate", json={"id": tid, "nbPlayers": players, "nbGames": games},
                   timeout=300)
    r.raise_for_status()


def coalesce_probe(server_url: str, replay_url: str, n: int) -> dict:
    tid = fresh_id("co")
    generate(replay_url, tid, 200, 400)
    before = replay_counts(replay_url)

    async def go() -> list[tuple[int, str]]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=server_url, timeout=120, limits=limits) as client:
            async def one() -> tuple[int, str]:
                r = await client.get(f"/api/tournaments/{tid}", headers={"Accept-Encoding": "identity"})
                return r.status_code, r.headers.get("x-cache", "")
            return await asyncio.gather(*(one() for _ in range(n)))

    t0 = time.perf_counter()
    results = asyncio.run(go())
    elapsed = time.perf_counter() - t0
    after = replay_counts(replay_url)
    paths = {p: after.get(p, 0) - before.get(p, 0) for p in after if tid in p and after.get(p, 0) != before.get(p, 0)}
    statuses: dict[str, int] = {}
    for status, x_cache in results:
        key = f"{status} {x_cache}"
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "tournament": tid, "data": "generated (200 standings, 400 games, shapes of sH24g2zH)", "concurrent": n,
        "seconds": round(elapsed, 3), "upstream_requests_by_path": paths,
        "upstream_requests_total": sum(paths.values()), "upstream_resources": len(paths),
        "max_requests_per_path": max(paths.values(), default=0), "responses": statuses,
    }


def import_probe(server: Proc, server_url: str, replay_url: str, players: int, games: int) -> dict:
    tid = fresh_id("im")
    t0 = time.perf_counter()
    generate(replay_url, tid, players, games)
    gen_s = time.perf_counter() - t0
    pids = server.tree()
    rss_before = rss_mib(pids)
    peak = [rss_before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mib(server.tree()))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0 = cpu_seconds(pids)
    with httpx.Client(timeout=600, headers={"Accept-Encoding": "identity"}) as client:
        r, ms = import_via_get(client, server_url, tid)
    stop.set()
    sampler.join()
    assert r.status_code == 200 and r.json()["data"].get("importState") == "complete", r.text[:300]
    cpu = cpu_seconds(server.tree()) - cpu0
    pids = server.tree()
    return {
        "tournament": tid, "data": f"generated ({players} standings, {games} games, shapes of sH24g2zH)",
        "status": r.status_code, "seconds": round(ms / 1000, 2), "server_cpu_s": round(cpu, 2),
        "rss_before_mib": round(rss_before, 1), "peak_rss_mib_polled": round(peak[0], 1),
        "peak_rss_mib_vmhwm": round(hwm_mib(pids), 1), "rss_after_mib": round(rss_mib(pids), 1),
        "generate_s": round(gen_s, 2), "players": players, "games": games,
    }


def import_via_get(client: httpx.Client, server_url: str, tid: str,
                   poll_s: float = 0.05) -> tuple[httpx.Response, float]:
    """Import a finished tournament through its first ``GET /api/tournaments/{id}`` and wait for it:
    the import runs in the background and the GET answers ``importState`` ``queued``/``importing``
    after ``import_wait_s``; the same GET is repeated every ``poll_s`` seconds (each answer of an
    import under way is read from the database, not cached) until ``complete`` or ``failed``.
    Returns the last response and the milliseconds from the first request to it."""
    t0 = time.perf_counter()
    while True:
        r = client.get(f"{server_url}/api/tournaments/{tid}")
        state = r.json()["data"].get("importState") if r.status_code == 200 else None
        if state not in ("queued", "importing"):
            return r, (time.perf_counter() - t0) * 1000
        time.sleep(poll_s)


def recorded_import_probe(server: Proc, server_url: str, replay_url: str) -> dict:
    """The first ``GET /api/tournaments/sH24g2zH`` on a fresh data dir (imports the recorded 191
    standings and 1,463 PGN games): wall seconds and the server tree's CPU seconds."""
    httpx.post(replay_url + "/_replay/reset")
    cpu0 = cpu_seconds(server.tree())
    with httpx.Client(timeout=600, headers={"Accept-Encoding": "identity"}) as client:
        r, ms = import_via_get(client, server_url, RECORDED_ID)
    assert r.status_code == 200, r.text[:300]
    state = r.json()["data"].get("importState")
    assert state == "complete", state
    return {"seconds": round(ms / 1000, 3), "server_cpu_s": round(cpu_seconds(server.tree()) - cpu0, 3),
            "x_cache": r.headers.get("x-cache"), "import_state": state}


def import_only_report(res: dict) -> list[str]:
    """The lines ``--import-only`` prints: the recorded import, the large import and the p99 row."""
    rec, imp = res["recorded_import"], res["import"]
    lines = [
        f"chessstats bench --import-only: workers {res['config']['workers']}; started {res['config']['started_at']}",
        "",
        "| figure | value | target | met |", "|---|---|---|---|",
        f"| import of the recorded {RECORDED_ID} (191 standings, 1,463 PGN games), first GET | {rec['seconds']:.2f} s "
        f"(server CPU {rec['server_cpu_s']:.2f} s), X-Cache {rec['x_cache']} | - | - |",
    ]
    full = imp["players"] >= 10_000 and imp["games"] >= 5_000
    lines += [
        f"| import {imp['players']:,} standings + {imp['games']:,} games (generated) | {imp['seconds']:.2f} s "
        f"(status {imp['status']}, server CPU {imp['server_cpu_s']} s) | ≤ {TARGETS['import_s']:g} s | "
        f"{verdict(imp['seconds'] <= TARGETS['import_s']) if full else 'n/a'} |",
        f"| import peak RSS (polled VmRSS over the tree / VmHWM sum) | {imp['peak_rss_mib_polled']:.1f} / "
        f"{imp['peak_rss_mib_vmhwm']:.1f} MiB (before {imp['rss_before_mib']:.1f}, after {imp['rss_after_mib']:.1f}) "
        f"| ≤ {TARGETS['import_peak_mib']:g} MiB | "
        f"{verdict(imp['peak_rss_mib_polled'] <= TARGETS['import_peak_mib']) if full else 'n/a'} |",
    ]
    ip = res.get("import_p99")
    if ip:
        s = ip["summary"]
        lines.append(
            f"| cached GET p99 while 1,463-game imports run ({ip['route']}) | without "
            f"{fmt(s['baseline_p99_ms_median'], '.2f')} ms, during "
            f"{fmt(s['import_p99_ms_median'], '.2f')} ms; ratio per pair "
            f"{' '.join(f'{r:.2f}' for r in s['ratios'])}, median **{fmt(s['ratio_median'], '.2f')}×**; req/s "
            f"{fmt(s['baseline_rps_median'])} / {fmt(s['import_rps_median'])}; {s['imports_started']} imports, "
            f"median {fmt(s['import_seconds_median'], '.2f')} s; other CPU {fmt(s['other_cpu_s_median'], '.2f')} s per "
            f"run | ≤ {TARGETS['import_p99_x']:g}× | {ip['met']} |")
    la0, la1 = res["config"].get("loadavg_at_start") or [0], res["config"].get("loadavg_at_end") or [0]
    lines += ["", f"machine: load average {la0[0]:.2f} at start, {la1[0]:.2f} at the end; wall time "
              f"{res['wall_s']:.0f} s; results in {res['json_path']}"]
    return lines


def store_db_tournaments(client: httpx.Client, server_url: str, replay_url: str, n: int) -> list[str]:
    """Generate ``n`` small finished arenas (191 standings, 2 games each) and import them through
    ``server_url``; returns their ids. The database-served rows rotate over these ids."""
    from concurrent.futures import ThreadPoolExecutor

    def one(_: int) -> str:
        tid = fresh_id("db")
        generate(replay_url, tid, 191, 2)
        for _attempt in range(30):  # the upstream gate answers 503 busy while the other imports hold Lichess
            r = httpx.get(f"{server_url}/api/tournaments/{tid}", timeout=300, headers={"Accept-Encoding": "identity"})
            if r.status_code != 503:
                break
            time.sleep(float(r.headers.get("retry-after") or 1))
        assert r.status_code == 200, (tid, r.status_code, r.text[:300])
        return tid

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def import_p99_probe(tmp: Path, replay_url: str, workers: int, pairs: int, duration: float) -> dict:
    """p99 of a cached GET with and without a 1,463-game import running on the same server.

    A fresh server (its own data dir, so sH24g2zH is not stored yet) caches one generated arena's
    detail route. Each pair: a baseline wrk run on that route, then the same wrk run while
    imports run back to back: the recorded sH24g2zH first (191 standings, 1,463 games), then
    generated copies of its shape (191 standings, 1,463 games, fresh ids), each imported by its
    first ``GET /api/tournaments/{id}``. Imports are generated before the run (so the replay's
    generation CPU stays outside the window) and the next baseline waits for the last import.
    """
    server, url = start_server(tmp, replay_url, workers, name=f"imp-w{workers}")
    out: dict = {"workers": workers, "pairs": []}
    try:
        client = httpx.Client(timeout=600, headers={"Accept-Encoding": "identity"})
        warm = fresh_id("wm")
        generate(replay_url, warm, 191, 50)
        route = f"/api/tournaments/{warm}"
        r = client.get(url + route)
        assert r.status_code == 200, r.text[:300]
        for _ in range(4):  # every worker's memory layer
            r = client.get(url + route)
        assert r.headers.get("x-cache") == "HIT", r.headers
        out.update(route=route, body_bytes=len(r.content))
        # the same one-path script on both sides of a pair: it counts X-Cache of every answer
        script = rotation_script(tmp / "import-p99.lua", [route])
        run_wrk(url + route, 1, server, script=script)  # warm-up
        pending = [RECORDED_ID]  # imports not run yet, in order
        per_window = int(duration) + 2  # more than can run in one window (one import takes > 1 s)
        for i in range(pairs):
            ids = pending
            for _ in range(per_window - len(ids)):
                tid = fresh_id("ip")
                generate(replay_url, tid, 191, 1463)
                ids.append(tid)
            busy = wait_idle(5.0)
            base = run_wrk(url + route, duration, server, script=script)
            base["busy_before_cores"] = round(busy, 2)
            busy = wait_idle(5.0)
            stop = threading.Event()
            imports: list[dict] = []

            def drive(ids: list[str] = ids, stop: threading.Event = stop, imports: list[dict] = imports) -> None:
                with httpx.Client(timeout=600, headers={"Accept-Encoding": "identity"}) as c:
                    for tid in ids:
                        if stop.is_set():
                            return
                        t0 = time.monotonic()
                        resp, _ = import_via_get(c, url, tid)
                        imports.append({"id": tid, "t0": t0, "t1": time.monotonic(), "status": resp.status_code,
                                        "x_cache": resp.headers.get("x-cache"),
                                        "source": resp.json().get("source") if resp.status_code == 200 else None,
                                        "state": resp.json()["data"].get("importState")
                                        if resp.status_code == 200 else None})

            driver = threading.Thread(target=drive, daemon=True)
            w0 = time.monotonic()
            driver.start()
            load = run_wrk(url + route, duration, server, script=script)
            w1 = time.monotonic()
            stop.set()
            driver.join()
            pending = ids[len(imports):]
            load["busy_before_cores"] = round(busy, 2)
            covered = sum(max(0.0, min(im["t1"], w1) - max(im["t0"], w0)) for im in imports)
            in_window = [im for im in imports if im["t0"] < w1]
            finished = [im for im in in_window if im["t1"] <= w1]
            ratio = load["p99_ms"] / base["p99_ms"] if load["p99_ms"] and base["p99_ms"] else None
            out["pairs"].append({
                "baseline": base, "during_import": load, "p99_ratio": ratio,
                "coverage": round(covered / (w1 - w0), 3),
                "imports_started": len(in_window), "imports_finished_in_window": len(finished),
                "import_seconds": [round(im["t1"] - im["t0"], 2) for im in imports],
                "import_statuses": sorted({f"{im['status']} {im['x_cache']} {im['source']} {im['state']}"
                                           for im in imports}),
                "first_import": imports[0]["id"] if imports else None,
            })
            log(f"import p99 pair {i + 1}/{pairs}: baseline {base['rps']:,.0f} req/s p99 {base['p99_ms']} ms | "
                f"during import {load['rps']:,.0f} req/s p99 {load['p99_ms']} ms | ratio "
                f"{ratio if ratio is None else round(ratio, 2)} | {len(in_window)} import(s) "
                f"({[round(im['t1'] - im['t0'], 1) for im in imports]} s), coverage {covered / (w1 - w0):.0%} "
                f"| other CPU {base['unexplained_cpu_s']}+{load['unexplained_cpu_s']} s")
        client.close()
    finally:
        server.stop()
    ps = out["pairs"]
    out["summary"] = {
        "baseline_rps_median": median([p["baseline"]["rps"] for p in ps]),
        "import_rps_median": median([p["during_import"]["rps"] for p in ps]),
        "baseline_p50_ms_median": median([p["baseline"]["p50_ms"] for p in ps]),
        "baseline_p99_ms_median": median([p["baseline"]["p99_ms"] for p in ps]),
        "import_p50_ms_median": median([p["during_import"]["p50_ms"] for p in ps]),
        "import_p99_ms_median": median([p["during_import"]["p99_ms"] for p in ps]),
        "ratios": [round(p["p99_ratio"], 3) for p in ps if p["p99_ratio"] is not None],
        "ratio_median": median([p["p99_ratio"] for p in ps]),
        "coverage_min": min((p["coverage"] for p in ps), default=None),
        "imports_started": sum(p["imports_started"] for p in ps),
        "x_cache_hit": sum((r.get("counts") or {}).get("x_hit", 0) for p in ps
                           for r in (p["baseline"], p["during_import"])),
        "requests": sum(r["requests"] for p in ps for r in (p["baseline"], p["during_import"])),
        "errors": sum(r["non_2xx"] + r["socket_errors"] for p in ps for r in (p["baseline"], p["during_import"])),
        "import_statuses": sorted({st for p in ps for st in p["import_statuses"]}),
        "import_seconds_median": median([x for p in ps for x in p["import_seconds"]]),
        "steal_s_median": median([r["steal_s"] for p in ps for r in (p["baseline"], p["during_import"])]),
        "other_cpu_s_median": median([r["unexplained_cpu_s"] for p in ps for r in (p["baseline"], p["during_import"])]),
    }
    return out


def overhead_probe(tmp: Path, replay_url: str, data_dir: Path, workers: int, pairs: int, duration: float) -> dict:
    """Cached-GET throughput with the inbound rate limiter and the metrics off and on.

    Five servers on one data dir (the recorded tournament is stored and cached once): ``off``
    (limiter and metrics off), ``control`` (the same as ``off``: its ratio to ``off`` is the row's own
    noise, what two identical servers read in this run), ``limiter`` (limiter on at limits wrk never
    reaches, so every request is counted and none refused), ``metrics`` (metrics on), ``both``. Each
    round starts the five anew (a variant must not keep one start's memory layout and hash seed for
    every round) and gives each ``duration`` seconds of wrk, in :data:`OVERHEAD_SLICE_S` slices taken
    in turn (in a shuffled order, then again in that order rotated): the machine's own speed drifts
    by 4-7 % over seconds (one server measured ten times in a row, 3-s runs), which one run per
    variant after the other put into the ratios (two identical servers read 0.89-1.16 of each
    other per round that way; 0.99-1.02 in 1-s slices taken in turn). A variant's req/s in a round
    is its requests over its slices' seconds, its ratio that over ``off``'s, and the server CPU
    per request is measured alongside. When the machine has a CPU to spare, the servers and wrk run
    on CPUs of their own (:func:`overhead_cpus`).
    """
    route = f"/api/tournaments/{RECORDED_ID}"
    server_cpus, wrk_cpus = overhead_cpus(workers)
    out: dict = {"workers": workers, "route": route, "rounds": [],
                 "cpus": {"server": sorted(server_cpus), "wrk": sorted(wrk_cpus)} if server_cpus else None}
    rng = random.Random(20261130)

    def start(name: str, env: dict[str, str], i: int) -> tuple[Proc, str]:
        for attempt in (1, 2):  # a loaded machine can time out a worker's start-up (database locked)
            try:
                return start_server(tmp, replay_url, workers, name=f"ovh-{name}-w{workers}-r{i}-{attempt}",
                                    data_dir=data_dir, extra_env=env, cpus=server_cpus)
            except RuntimeError as exc:
                if attempt == 2:
                    raise
                log(f"overhead: server {name} did not start ({str(exc)[:200]}); once more")
        raise AssertionError("unreachable")

    for i in range(pairs):
        servers: dict[str, tuple[Proc, str]] = {}
        try:
            for name, env in OVERHEAD_VARIANTS.items():
                servers[name] = start(name, env, i)
            with httpx.Client(timeout=600, headers={"Accept-Encoding": "identity"}) as client:
                for name, (_, url) in servers.items():
                    for _ in range(2 + 2 * workers):  # stored, cached, and in every worker's memory layer
                        r = client.get(url + route)
                        assert r.status_code == 200, r.text[:300]
                    assert r.headers.get("x-cache") == "HIT", (name, r.headers)
                    assert ("ratelimit-limit" in r.headers) == (name in ("limiter", "both")), (name, r.headers)
                    out["body_bytes"] = len(r.content)
            checks = {name: startup_quick_check(url, workers) for name, (_, url) in servers.items()}
            for proc, url in servers.values():  # warm-up
                run_wrk(url + route, 1, proc)
            slices: dict[str, list[dict]] = {name: [] for name in servers}
            order = list(servers)
            rng.shuffle(order)
            busy = 0.0
            for k in range(max(1, round(duration / OVERHEAD_SLICE_S))):
                busy = max(busy, wait_idle(2.0))
                for name in order[k % len(order):] + order[:k % len(order)]:
                    proc, url = servers[name]
                    slices[name].append(run_wrk(url + route, OVERHEAD_SLICE_S, proc, cpus=wrk_cpus))
            row: dict = {name: _slices_total(runs) for name, runs in slices.items()}
            for name in row:
                row[name]["busy_before_cores"] = round(busy, 2)
                row[name]["quick_check_ms"] = checks[name]
        finally:
            for proc, _ in servers.values():
                proc.stop()
        row = {name: row[name] for name in OVERHEAD_VARIANTS}
        base = row["off"]["rps"]
        row["ratios"] = {name: (row[name]["rps"] / base if base else None) for name in OVERHEAD_VARIANTS
                         if name != "off"}
        row["order"] = order
        out["rounds"].append(row)
        log(f"w{workers} overhead round {i + 1}/{pairs} (fresh servers; order {', '.join(order)}): " + " | ".join(
            f"{n} {row[n]['rps']:,.0f} req/s, {row[n]['server_cpu_us_per_req']} µs/req" for n in OVERHEAD_VARIANTS)
            + " | ratios " + ", ".join(f"{k} {v:.3f}" for k, v in row["ratios"].items() if v is not None))
    rounds = out["rounds"]
    out["summary"] = {
        name: {
            "rps_median": median([r[name]["rps"] for r in rounds]),
            "cpu_us_median": median([r[name]["server_cpu_us_per_req"] for r in rounds]),
            "p99_ms_median": median([r[name]["p99_ms"] for r in rounds]),
            "errors": sum(r[name]["non_2xx"] + r[name]["socket_errors"] for r in rounds),
            "ratios": [round(r["ratios"][name], 3) for r in rounds if name != "off" and r["ratios"][name]],
            "ratio_median": None if name == "off" else median([r["ratios"][name] for r in rounds]),
        } for name in OVERHEAD_VARIANTS
    }
    return out


def startup_quick_check(url: str, workers: int, timeout_s: float = 120.0) -> float | None:
    """Wait until the server's start-up ``PRAGMA quick_check`` is done (every worker runs one at
    start, in a thread of its own process, on the whole database: no measured slice should include
    it; on a full run's data dir it took 41-51 ms); its duration in ms (the longest seen), None when
    ``/health`` never showed it.

    ``/health`` shows the answering worker's last check; with several workers it is asked on new
    connections until ``workers`` answers in a row carry a finished check."""
    deadline, seen, longest = time.monotonic() + timeout_s, 0, None
    while time.monotonic() < deadline and seen < workers:
        try:
            check = ((httpx.get(url + "/health", timeout=10).json().get("checks") or {}).get("database") or {}) \
                .get("quickCheck") or {}
        except (httpx.HTTPError, ValueError):
            check = {}
        if "durationMs" in check or check.get("status") == "skipped":  # (skipped: not SQLite)
            seen += 1
            longest = max(longest or 0.0, float(check.get("durationMs") or 0.0))
        else:
            seen = 0
            time.sleep(0.2)
    return longest


def overhead_cpus(workers: int) -> tuple[set[int], set[int]]:
    """The overhead row's CPUs: ``(server's, wrk's)``. When the machine has a CPU more than the server
    has workers, wrk runs on the first CPU this process may use and the servers on the next
    ``workers`` (as a load generator on another machine would: the Python server alone on its cores,
    so the row measures what the limiter costs the server, not how the scheduler shares cores
    between the server and wrk); otherwise both sets are empty (no pinning)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) <= workers:
        return set(), set()
    return set(allowed[1:workers + 1]), {allowed[0]}


def _slices_total(runs: list[dict]) -> dict:
    """One variant's wrk slices of a round as one run: req/s over the slices' summed seconds, server
    CPU per request over all of them, the median slice's p99, every error."""
    requests = sum(r["requests"] for r in runs)
    seconds = sum(r["requests"] / r["rps"] for r in runs if r["rps"])
    cpu_s = sum(r["server_cpu_s"] for r in runs)
    return {"rps": requests / seconds if seconds else 0.0, "requests": requests, "slices": len(runs),
            "server_cpu_us_per_req": round(1e6 * cpu_s / requests, 1) if requests else None,
            "p99_ms": median([r["p99_ms"] for r in runs if r["p99_ms"] is not None]),
            "non_2xx": sum(r["non_2xx"] for r in runs), "socket_errors": sum(r["socket_errors"] for r in runs),
            "wrk_errors": [r["error"] for r in runs if "error" in r]}


def limiter_target(ov: dict) -> list[str]:
    """The target line of the overhead row: limiter on ≥ 0.95 × limiter off (metrics off on both): the
    median req/s ratio over the rounds and the server-CPU ratio (off µs ÷ limiter µs per request,
    medians), which a loaded machine disturbs less. ``met`` only when both reach 0.95 (on a loaded
    machine a lucky round can lift the req/s ratio alone). The line also shows what the ``control``
    server (a second ``off``) read against ``off`` the same way: how far apart two identical servers
    came out in this run, the noise a verdict is read against."""
    return _limiter_line(ov, "limiter", "off", "metrics off")


def limiter_default_target(ov: dict) -> list[str]:
    """The limiter's cost in the default configuration (metrics on): ``both`` against ``metrics`` (their
    per-round ratios to ``off`` divided, median) and their server-CPU ratio, judged as
    :func:`limiter_target`. With the metrics on, the per-route wrapper and the ``respond`` hook are
    paid for by the metrics already, so this is what switching the limiter on costs a default install."""
    return _limiter_line(ov, "both", "metrics", "metrics on (the defaults)")


def _cpu_ratio(base: dict, variant: dict) -> float | None:
    """``base``'s median server CPU per request over ``variant``'s (below 1: the variant costs more)."""
    a, b = base.get("cpu_us_median"), variant.get("cpu_us_median")
    return a / b if a and b else None


def _limiter_line(ov: dict, on: str, off: str, what: str) -> list[str]:
    s = ov["summary"]
    pairs = s[on]["ratios"] if off == "off" else \
        [a / b for a, b in zip(s[on]["ratios"], s[off]["ratios"], strict=False) if b]
    ratio = statistics.median(pairs) if pairs else None
    off_cpu, on_cpu = s[off]["cpu_us_median"], s[on]["cpu_us_median"]
    cpu = _cpu_ratio(s[off], s[on])
    control = s.get("control") or {}
    control_cpu = _cpu_ratio(s["off"], control)
    return [f"cached GET, limiter on ≥ {TARGETS['limiter_ratio']:.2f} × limiter off, {what}, {ov['workers']} "
            "worker(s)",
            f"req/s {fmt(ratio, '.3f')} (per round {' '.join(f'{r:.3f}' for r in pairs)}); CPU {fmt(cpu, '.3f')} "
            f"({fmt(off_cpu, '.1f')} vs {fmt(on_cpu, '.1f')} µs/req); control (two identical servers): req/s "
            f"{fmt(control.get('ratio_median'), '.3f')}, CPU {fmt(control_cpu, '.3f')}",
            verdict(ratio is not None and cpu is not None and min(ratio, cpu) >= TARGETS["limiter_ratio"])]


def overhead_lines(ov: dict) -> list[str]:
    """The overhead row of the report (one table line per variant)."""
    s = ov["summary"]
    base_cpu = s["off"]["cpu_us_median"]
    cpus = ov.get("cpus")
    checks = [r[n].get("quick_check_ms") for r in ov["rounds"] for n in OVERHEAD_VARIANTS]
    longest = max((c for c in checks if c is not None), default=None)
    lines = [
        "",
        f"{ov['workers']} worker(s): " + (f"servers on CPU {','.join(map(str, cpus['server']))}, wrk on CPU "
                                          f"{','.join(map(str, cpus['wrk']))}" if cpus else
                                          "servers and wrk share every CPU (none to spare)")
        + f"; measured after each server's start-up quick_check (the longest took {fmt(longest, ',.0f')} ms)",
        "",
        f"| workers | cached GET {ov['route']} ({ov.get('body_bytes', 0):,} B) | req/s median | ratio to off per "
        "round | ratio median | server CPU µs/req (extra) | p99 ms | errors | target | met |",
        "|---:|---|---:|---|---:|---|---:|---:|---|---|",
    ]
    labels = {"off": "limiter off, metrics off", "control": "limiter off, metrics off (a second server: the control)",
              "limiter": "limiter on (counted, never refused), metrics off", "metrics": "limiter off, metrics on",
              "both": "limiter on, metrics on (the defaults)"}
    for name, v in s.items():
        extra = (v["cpu_us_median"] - base_cpu) if v["cpu_us_median"] is not None and base_cpu is not None else None
        target, met = "-", "-"
        if name in ("limiter", "both"):
            target = f"req/s and CPU ratio ≥ {TARGETS['limiter_ratio']:.2f}" + (" (against metrics on)"
                                                                              if name == "both" else "")
            met = (limiter_target if name == "limiter" else limiter_default_target)(ov)[2]
        lines.append(
            f"| {ov['workers']} | {labels[name]} | {fmt(v['rps_median'])} "
            f"| {' '.join(f'{r:.3f}' for r in v['ratios']) or '-'} "
            f"| **{fmt(v['ratio_median'], '.3f')}** | {fmt(v['cpu_us_median'], '.1f')} "
            f"({'+' if (extra or 0) >= 0 else ''}{fmt(extra, '.1f')}) | {fmt(v['p99_ms_median'], '.2f')} "
            f"| {v['errors']} | {target} | {met} |")
    return lines


def admin_clear(client: httpx.Client, server_url: str) -> None:
    r = client.post(f"{server_url}/api/admin/cache/clear", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    r.raise_for_status()


def cache_counters(client: httpx.Client, server_url: str) -> tuple[int, int]:
    cache = client.get(f"{server_url}/health").json().get("cache") or {}
    return int(cache.get("hits", 0)), int(cache.get("misses", 0))


# --- idle RSS per process, and the original design's reference row ----------------------------

def binary_path() -> Path:
    """The one-file executable: ``$CHESSSTATS_BINARY`` or ``dist/chessstats`` (``scripts/build``)."""
    return Path(os.environ.get("CHESSSTATS_BINARY") or ROOT / "dist" / "chessstats")


def _proc_text(pid: int, name: str) -> str:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    data = _proc_text(pid, "stat")
    return int(data[data.rindex(")") + 2:].split()[1]) if data else 0


def process_memory(pid: int) -> dict[str, float]:
    """MiB of one process: ``rss`` (VmRSS), ``anon`` / ``file`` (RssAnon / RssFile), ``pss`` (smaps_rollup)."""
    out = {"rss": _status_kib(pid, "VmRSS") / 1024, "anon": _status_kib(pid, "RssAnon") / 1024,
           "file": _status_kib(pid, "RssFile") / 1024, "pss": 0.0}
    for line in _proc_text(pid, "smaps_rollup").splitlines():
        if line.startswith("Pss:"):
            out["pss"] = int(line.split()[1]) / 1024
    return {k: round(v, 1) for k, v in out.items()}


def process_roles(root: int, frozen: bool) -> list[dict]:
    """Each process of a ``chessstats serve`` tree with its role and memory (read from /proc).

    Roles: ``bootloader`` (the one-file executable's parent, which unpacked the bundle and waits),
    ``server`` (one process: ``--workers 1``), ``manager`` (Sanic's main process with workers),
    ``worker`` (its environment has ``SANIC_WORKER_NAME``), ``resource tracker`` (multiprocessing's,
    by its command line), ``SyncManager`` (the other spawned child of the manager: Sanic's shared state).
    """
    pids = process_tree(root)
    main = root
    if frozen:
        kids = [p for p in pids if _ppid(p) == root]
        if len(kids) == 1 and _proc_text(kids[0], "cmdline") == _proc_text(root, "cmdline"):
            main = kids[0]
    workers = [p for p in pids if "SANIC_WORKER_NAME=" in _proc_text(p, "environ")]
    out = []
    for pid in pids:
        cmd = _proc_text(pid, "cmdline")
        if pid == main:
            role = "manager" if workers else "server"
        elif pid == root:
            role = "bootloader"
        elif pid in workers:
            role = "worker"
        elif "resource_tracker" in cmd:
            role = "resource tracker"
        elif _ppid(pid) == main:
            role = "SyncManager"
        else:
            role = "other"
        out.append({"pid": pid, "role": role, **process_memory(pid)})
    return out


#: A cron expression with no tick for years (29 February, 00:00): the idle-RSS servers run their
#: scheduler, but no job fires while they are measured (at 03:00 UTC three jobs are due at once).
NEVER_DUE = "0 0 29 2 *"


def idle_config(tmp: Path) -> Path:
    """A config file: the defaults, every registered job scheduled :data:`NEVER_DUE`."""
    from chessstats.scheduler.registry import REGISTRY

    path = tmp / "idle-config.toml"
    path.write_text("".join(f'[jobs.{name}]\nschedule = "{NEVER_DUE}"\n\n' for name in REGISTRY))
    return path


def start_chessstats(tmp: Path, replay_url: str, workers: int, name: str, command: list[str]) -> tuple[Proc, str]:
    """``<command> serve --workers N`` with the default configuration (scheduler on, no job due:
    :func:`idle_config`) on a fresh data dir, every upstream pointed at the replay; for the idle-RSS rows."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHESSSTATS_", "LICHESS_", "MALLOC_"))}
    env.update({"PYTHONPATH": str(ROOT), "LICHESS_API_URL": replay_url + "/lichess/api",
                "CHESSSTATS_ADMIN_TOKEN": ADMIN_TOKEN})
    cmd = [*command, "serve", "--config", str(idle_config(tmp)), "--port", str(port),
           "--data-dir", str(tmp / f"data-{name}"), "--workers", str(workers)]
    proc = Proc(name, cmd, env, tmp / f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/health", timeout_s=90)
    return proc, url


def idle_rss_probe(tmp: Path, replay_url: str, binary: Path | None, counts: tuple[int, ...] = (1, 2)) -> list[dict]:
    """Idle RSS per process of ``chessstats serve`` from source and of the executable, 1 and 2 workers.

    Each server starts on a fresh data dir with the default configuration (scheduler on, no job
    due); 3 s after ``/health`` answers (every worker has started), each process of its tree is
    read from /proc. ``binary`` None: only the source rows.
    """
    variants = [("source", [sys.executable, "-m", "chessstats"], False)]
    if binary is not None:
        variants.append(("executable", [str(binary)], True))
    out = []
    for kind, command, frozen in variants:
        for workers in counts:
            proc, _ = start_chessstats(tmp, replay_url, workers, f"rss-{kind}-w{workers}", command)
            try:
                time.sleep(3.0)
                procs = process_roles(proc.pid, frozen)
            finally:
                proc.stop()
            row = {"kind": kind, "workers": workers, "processes": procs,
                   "rss_mib": round(sum(p["rss"] for p in procs), 1), "pss_mib": round(sum(p["pss"] for p in procs), 1)}
            out.append(row)
            log(f"idle RSS {kind}, {workers} worker(s): {row['rss_mib']} MiB (PSS {row['pss_mib']}): "
                + ", ".join(f"{p['role']} {p['rss']}" for p in procs))
    return out


def idle_rss_text(row: dict) -> str:
    """``53.6 MiB (PSS 49.7): bootloader 2.0 + server 51.6`` (RSS per process, in tree order)."""
    parts = " + ".join(f"{p['role']} {p['rss']:.1f}" for p in row["processes"])
    return f"{row['rss_mib']:.1f} MiB (PSS {row['pss_mib']:.1f}): {parts}"


#: Where Debian's node-express and node-redis install their modules (the nodejs package may not search it).
NODE_PATH = "/usr/share/nodejs"


def reference_missing() -> str | None:
    """Why the reference row cannot run (a missing program or Node package, with the command that
    installs it), or None."""
    missing = [name for name in ("node", "redis-server") if shutil.which(name) is None]
    if not missing:
        check = subprocess.run(["node", "-e", "require('express'); require('redis')"], capture_output=True,
                               env={**os.environ, "NODE_PATH": NODE_PATH}, check=False)
        if check.returncode != 0:
            missing = ["node-express / node-redis"]
    if not missing:
        return None
    return (f"skipped: {', '.join(missing)} missing; install with: sudo apt-get install -y nodejs node-express "
            "node-redis redis-server (scripts/bench does it when run as root)")


class _Group:
    """Several processes measured as one server (Express and its Redis): ``tree()`` of each."""

    def __init__(self, *procs: Proc) -> None:
        self.procs = procs

    def tree(self) -> list[int]:
        return [pid for proc in self.procs for pid in proc.tree()]


def start_redis(tmp: Path) -> tuple[Proc, int]:
    """``redis-server`` on 127.0.0.1:<free port>, in-memory only (no RDB, no AOF), dir ``tmp``."""
    port = free_port()
    proc = Proc("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", str(tmp)], dict(os.environ), tmp / "redis.log")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"redis-server did not answer on port {port}:\n{proc.log_path.read_text()[-2000:]}")


def reference_probe(tmp: Path, ceiling: Proc, ceiling_url: str, body_file: Path, workers: int, pairs: int,
                    duration: float, chessstats_row: dict | None) -> dict:
    """The original design's stack on the cached tournament route, against the same ceiling.

    ``scripts/bench_express.js`` (Express, one process, or a ``node:cluster`` of ``workers``) answers
    ``GET /api/tournaments/{id}`` with the bytes it GETs from Redis (127.0.0.1, one key, every
    request); the key holds ``body_file``, the body chessstats serves for that route. Each pair: one
    ceiling run, then one Express run (the load rows' wrk flags). CPU per request counts node and
    redis-server. ``chessstats_row``: the cached-tournament load row of the same worker count.
    """
    route = f"/api/tournaments/{RECORDED_ID}"
    redis, redis_port = start_redis(tmp)
    express: Proc | None = None
    out: dict = {"workers": workers, "route": route, "body_bytes": body_file.stat().st_size, "pairs": []}
    try:
        port = free_port()
        env = {**os.environ, "NODE_PATH": NODE_PATH, "PORT": str(port), "REDIS_URL": f"redis://127.0.0.1:{redis_port}",
               "BODY_FILE": str(body_file), "BODY_ID": RECORDED_ID, "WORKERS": str(workers)}
        express = Proc(f"express-w{workers}", ["node", str(ROOT / "scripts" / "bench_express.js")], env,
                       tmp / f"express-w{workers}.log")
        url = f"http://127.0.0.1:{port}"
        express.wait_http(url + "/health")
        both = _Group(express, redis)
        time.sleep(1.0)
        out["idle_rss_mib"] = {"node": round(rss_mib(express.tree()), 1), "redis": round(rss_mib(redis.tree()), 1)}
        r = httpx.get(url + route, timeout=10)
        assert r.status_code == 200 and r.content == body_file.read_bytes(), (r.status_code, r.content[:200])
        out["headers"] = sorted(r.headers.keys())
        versions = subprocess.run(
            ["node", "-p", "[process.version, require('express/package.json').version, "
             "require('redis/package.json').version].join(' ')"],
            capture_output=True, text=True, env=env, check=False).stdout.split()
        redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
        m = re.search(r"v=(\S+)", redis_v)
        out["versions"] = {"node": versions[0] if versions else "?", "express": versions[1] if len(versions) > 1
                           else "?", "node-redis": versions[2] if len(versions) > 2 else "?",
                           "redis": m.group(1) if m else "?"}
        run_wrk(ceiling_url + "/c/cached_tournament", 1, ceiling)  # warm-up (V8 compiles the hot path)
        run_wrk(url + route, 2, both)
        for i in range(pairs):
            busy = wait_idle(5.0)
            c = run_wrk(ceiling_url + "/c/cached_tournament", duration, ceiling)
            c["busy_before_cores"] = round(busy, 2)
            busy = wait_idle(5.0)
            e = run_wrk(url + route, duration, both)
            e["busy_before_cores"] = round(busy, 2)
            ratio = e["rps"] / c["rps"] if c["rps"] else 0.0
            out["pairs"].append({"ceiling": c, "product": e, "ratio": ratio})
            log(f"w{workers} reference pair {i + 1}/{pairs}: ceiling {c['rps']:,.0f} req/s | Express + Redis "
                f"{e['rps']:,.0f} req/s p99 {e['p99_ms']} ms | ratio {ratio:.2f} | other CPU "
                f"{c['unexplained_cpu_s']}+{e['unexplained_cpu_s']} s")
        out["after_load_rss_mib"] = {"node": round(rss_mib(express.tree()), 1),
                                     "redis": round(rss_mib(redis.tree()), 1)}
    finally:
        if express is not None:
            express.stop()
        redis.stop()
    out["summary"] = s = summarise(out)
    s["errors"] = sum(p["product"]["non_2xx"] + p["product"]["socket_errors"] for p in out["pairs"])
    if chessstats_row is not None:
        cs = summarise(chessstats_row)
        out["chessstats_ratio_median"] = cs["ratio_median"]
        out["chessstats_rps_median"] = cs["product_rps_median"]
        out["chessstats_cpu_us_median"] = cs["product_cpu_us_median"]
        out["chessstats_over_express"] = (round(cs["ratio_median"] / s["ratio_median"], 2)
                                          if s["ratio_median"] else None)
    return out


def reference_lines(res: dict) -> list[str]:
    """The reference table of the report (one line per worker count), or the reason it was skipped."""
    if res.get("reference_skipped"):
        return ["", f"reference row (original design: Node.js Express + Redis): {res['reference_skipped']}"]
    refs = res.get("reference") or []
    if not refs:
        return []
    v = refs[0].get("versions", {})
    lines = [
        "",
        f"| workers | reference: original design, Node.js {v.get('node', '?')} Express {v.get('express', '?')} + "
        f"node-redis {v.get('node-redis', '?')} + Redis {v.get('redis', '?')} on 127.0.0.1 (a GET of the body per "
        "request) | body B | ceiling req/s | Express req/s | ratio per pair | ratio median | chessstats ratio "
        "median (same run) | chessstats ÷ Express | Express p50/p99 ms | CPU µs/req ceiling / Express+Redis / "
        "chessstats | idle RSS node + redis MiB (after load) | steal / other CPU s per run |",
        "|---:|---|---:|---:|---:|---|---:|---:|---:|---|---|---|---|",
    ]
    for ref in refs:
        s = ref["summary"]
        rss0, rss1 = ref.get("idle_rss_mib", {}), ref.get("after_load_rss_mib", {})
        label = ("one process" if ref["workers"] == 1 else f"node:cluster, {ref['workers']} workers") + \
            f", GET {ref['route']}" + (f", {s['errors']} errors" if s.get("errors") else "")
        lines.append(
            f"| {ref['workers']} | {label} | {ref['body_bytes']:,} | {fmt(s['ceiling_rps_median'])} "
            f"| {fmt(s['product_rps_median'])} | {' '.join(f'{r:.2f}' for r in s['ratios'])} "
            f"| **{s['ratio_median']:.2f}** | {fmt(ref.get('chessstats_ratio_median'), '.2f')} "
            f"| **{fmt(ref.get('chessstats_over_express'), '.2f')}×** "
            f"| {fmt(s['product_p50_ms_median'], '.2f')} / {fmt(s['product_p99_ms_median'], '.2f')} "
            f"| {fmt(s['ceiling_cpu_us_median'])} / {fmt(s['product_cpu_us_median'])} / "
            f"{fmt(ref.get('chessstats_cpu_us_median'))} "
            f"| {fmt(rss0.get('node'), '.1f')} + {fmt(rss0.get('redis'), '.1f')} ({fmt(rss1.get('node'), '.1f')} + "
            f"{fmt(rss1.get('redis'), '.1f')}) "
            f"| {fmt(s['steal_s_median'], '.2f')} / {fmt(s['other_cpu_s_median'], '.2f')} |")
    return lines


# --- engines: the same rows on PostgreSQL + Redis ---------------------------------------------

#: The engines section's rows, in the SQLite rows' names (cached ones on the cached server, DB-served
#: ones on the server with the cache disabled).
ENGINE_ROWS = {
    "cached_tournament": "cached GET tournament (recorded sH24g2zH)",
    "cached_leaderboard": "cached GET standings page, 100 entries (recorded)",
    "db_tournament": "DB-served GET tournament (cache disabled, rotating)",
    "db_standings": "DB-served GET standings page, 100 entries (cache disabled, rotating)",
}


def _repo_on_path() -> None:
    """Put the repo root on ``sys.path``: the engines section reuses the tests' server helpers
    (``tests/pg_server.py``, ``tests/redis_server.py``)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def engines_missing() -> str | None:
    """Why the engines section cannot run (PostgreSQL or redis-server not installed), or None."""
    _repo_on_path()
    from tests.pg_server import find_bin_dir

    missing = ([] if find_bin_dir() is not None else ["postgresql (initdb, pg_ctl)"]) + \
        ([] if shutil.which("redis-server") else ["redis-server"])
    if not missing:
        return None
    return (f"skipped: {', '.join(missing)} missing; install with: sudo apt-get install -y postgresql redis-server "
            "(scripts/bench does it when run as root)")


class _Pids:
    """A process tree given by a callable returning its root pid (PostgreSQL's postmaster daemonises)."""

    def __init__(self, root: object) -> None:
        self.root = root

    def tree(self) -> list[int]:
        pid = self.root() if callable(self.root) else self.root
        return process_tree(pid) if pid else []


def _run_wrk_engines(url: str, duration_s: float, server: Proc, pg: _Pids, rds: _Pids, script: Path | None) -> dict:
    """:func:`run_wrk` plus the CPU of PostgreSQL's and redis-server's process trees over the run
    (``pg_cpu_us_per_req``, ``redis_cpu_us_per_req``; taken out of ``unexplained_cpu_s``)."""
    pg_pids, rds_pids = pg.tree(), rds.tree()
    pg0, r0 = cpu_seconds(pg_pids), cpu_seconds(rds_pids)
    res = run_wrk(url, duration_s, server, script=script)
    pg_s, r_s = cpu_seconds(pg_pids) - pg0, cpu_seconds(rds_pids) - r0
    n = res["requests"] or 0
    res.update(pg_cpu_us_per_req=round(1e6 * pg_s / n, 1) if n else None,
               redis_cpu_us_per_req=round(1e6 * r_s / n, 1) if n else None,
               unexplained_cpu_s=round(res["unexplained_cpu_s"] - pg_s - r_s, 2))
    return res


def engines_probe(tmp: Path, replay_url: str, workers: int, pairs: int, duration: float, n_db: int) -> dict:
    """The cached and DB-served rows on PostgreSQL + Redis, against the same bare-Sanic ceiling.

    Starts a throwaway PostgreSQL (``tests/pg_server.py``: initdb + pg_ctl, unix socket) and a
    redis-server (``tests/redis_server.py``, unix socket) under ``tmp``; ``chessstats serve --no-jobs``
    with ``DATABASE_URL`` and ``REDIS_URL`` imports the recorded sH24g2zH and ``n_db`` generated arenas
    (as the SQLite rows do); a second server on the same database with ``CHESSSTATS_CACHE_ENABLED=false``
    answers the DB-served rows (rotating over the stored ids; every answer must be MISS, source database).
    Each pair: ceiling run, product run (the load rows' wrk flags). Server CPU counts the chessstats
    tree; PostgreSQL's (postmaster and backends) and redis-server's CPU per request are reported apart.
    Returns ``{"workers", "rows": {name: {..., "pairs", "summary"}}, "versions"}``.
    """
    _repo_on_path()
    from tests.pg_server import PgServer
    from tests.redis_server import RedisServer

    if os.geteuid() == 0:  # PostgreSQL runs as the postgres user: it must traverse the run's 0700 temp dir
        os.chmod(tmp, os.stat(tmp).st_mode | 0o011)
    pg = PgServer.start(parent=tmp)
    rds: RedisServer | None = None
    started: list[Proc] = []
    out: dict = {"workers": workers, "rows": {}}
    try:
        rds = RedisServer(parent=tmp)
        env = {"DATABASE_URL": pg.new_database(), "REDIS_URL": rds.url}
        pg_v = subprocess.run([str(pg.bin_dir / "postgres"), "--version"], capture_output=True, text=True).stdout
        redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        m = re.search(r"v=(\S+)", redis_v)
        m_pg = re.search(r"PostgreSQL\)\s+(\S+)", pg_v)
        out["versions"] = {"postgresql": m_pg.group(1) if m_pg else "?", "redis": m.group(1) if m else "?"}
        srv, srv_url = start_server(tmp, replay_url, workers, name=f"pg-w{workers}", extra_env=env)
        started.append(srv)
        client = httpx.Client(timeout=300, headers={"Accept-Encoding": "identity"})
        r, _ = import_via_get(client, srv_url, RECORDED_ID)
        assert r.status_code == 200 and r.json()["data"].get("importState") == "complete", r.text[:300]
        t0 = time.perf_counter()
        db_ids = store_db_tournaments(client, srv_url, replay_url, n_db)
        log(f"engines w{workers}: PostgreSQL + Redis server up; stored {RECORDED_ID} and {len(db_ids)} generated "
            f"tournaments in {time.perf_counter() - t0:.1f} s")
        nc, nc_url = start_server(tmp, replay_url, workers, name=f"pg-db-w{workers}",
                                  extra_env={**env, "CHESSSTATS_CACHE_ENABLED": "false"})
        started.append(nc)
        bodies_dir = tmp / f"bodies-pg-w{workers}"
        bodies_dir.mkdir()
        sizes: dict[str, int] = {}
        specs: dict[str, tuple] = {}
        for name, path in (("cached_tournament", f"/api/tournaments/{RECORDED_ID}"),
                           ("cached_leaderboard", f"/api/tournaments/{RECORDED_ID}/results?limit=100")):
            client.get(srv_url + path)
            r = client.get(srv_url + path)
            assert r.status_code == 200 and r.headers.get("x-cache") == "HIT", (name, r.status_code, r.headers)
            (bodies_dir / name).write_bytes(r.content)
            sizes[name] = len(r.content)
            specs[name] = (srv, srv_url + path, None, f"/c/{name}", None)
        for name, suffix in (("db_tournament", ""), ("db_standings", f"/results?limit={DB_STANDINGS_LIMIT}")):
            paths = [f"/api/tournaments/{tid}{suffix}" for tid in db_ids]
            total = 0
            for i, path in enumerate(paths):  # the database-served bodies, byte for byte
                r = client.get(nc_url + path)
                assert r.status_code == 200 and r.headers.get("x-cache") == "MISS", (path, r.headers)
                assert r.json()["source"] == "database", r.text[:300]
                (bodies_dir / f"{name}_{i:04d}").write_bytes(r.content)
                total += len(r.content)
            sizes[name] = round(total / len(paths))
            specs[name] = (nc, nc_url + "/", rotation_script(tmp / f"rotate-pg-{name}-w{workers}.lua", paths), "/",
                           rotation_script(tmp / f"rotate-pg-{name}-w{workers}-ceiling.lua",
                                           [f"/c/{name}_{i:04d}" for i in range(len(db_ids))]))
        client.close()
        ceiling, ceiling_url = start_ceiling(tmp, bodies_dir, workers)
        started.append(ceiling)
        pg_pids, rds_pids = _Pids(pg.postmaster_pid), _Pids(rds.proc.pid if rds.proc else None)
        for name, (proc, url, script, c_path, c_script) in specs.items():  # warm both sides
            run_wrk(ceiling_url + c_path, 1, ceiling, script=c_script)
            run_wrk(url, 1, proc, script=script)
            out["rows"][name] = {"name": name, "workers": workers, "label": ENGINE_ROWS[name],
                                 "body_bytes": sizes[name], "pairs": []}
        for i in range(pairs):
            for name, (proc, url, script, c_path, c_script) in specs.items():
                busy = wait_idle(5.0)
                c = run_wrk(ceiling_url + c_path, duration, ceiling, script=c_script)
                c["busy_before_cores"] = round(busy, 2)
                busy = wait_idle(5.0)
                p = _run_wrk_engines(url, duration, proc, pg_pids, rds_pids, script)
                p["busy_before_cores"] = round(busy, 2)
                ratio = p["rps"] / c["rps"] if c["rps"] else 0.0
                out["rows"][name]["pairs"].append({"ceiling": c, "product": p, "ratio": ratio})
                log(f"engines w{workers} pair {i + 1}/{pairs} {name}: ceiling {c['rps']:,.0f} req/s | PostgreSQL + "
                    f"Redis {p['rps']:,.0f} req/s p99 {p['p99_ms']} ms | ratio {ratio:.2f} | CPU µs/req server "
                    f"{p['server_cpu_us_per_req']} postgres {p['pg_cpu_us_per_req']} redis "
                    f"{p['redis_cpu_us_per_req']} | wrk counts {p.get('counts', '-')}")
    finally:
        for proc in reversed(started):
            proc.stop()
        if rds is not None:
            rds.stop()
        pg.stop()
    for row in out["rows"].values():
        row["summary"] = s = summarise(row)
        q = [pr["product"] for pr in row["pairs"]]
        s["pg_cpu_us_median"] = median([r.get("pg_cpu_us_per_req") for r in q])
        s["redis_cpu_us_median"] = median([r.get("redis_cpu_us_per_req") for r in q])
        s["errors"] = sum(r["non_2xx"] + r["socket_errors"] for r in q)
        if row["name"].startswith("db_"):
            counts = [r.get("counts") or {} for r in q]
            s["requests"] = sum(r["requests"] for r in q)
            s["x_miss"] = sum(cn.get("x_miss", 0) for cn in counts)
            s["src_db"] = sum(cn.get("src_db", 0) for cn in counts)
            s["proof_ok"] = s["x_miss"] == s["src_db"] == s["requests"]
    return out


def engines_lines(res: dict) -> list[str]:
    """The table "engines: SQLite + diskcache vs PostgreSQL + Redis" (the SQLite rows of the same run
    beside each PostgreSQL + Redis row), or the reason the section was skipped."""
    if res.get("engines_skipped"):
        return ["", f"engines (PostgreSQL + Redis): {res['engines_skipped']}"]
    engines = res.get("engines") or []
    if not engines:
        return []
    v = engines[0].get("versions", {})
    lines = [
        "",
        f"engines: SQLite + diskcache vs PostgreSQL {v.get('postgresql', '?')} + Redis {v.get('redis', '?')} "
        "(unix sockets, same host), each against its own bare-Sanic ceiling in the same run",
        "",
        "| workers | path | body B SQLite / PG | ratio median SQLite | ratio median PG + Redis (per pair) "
        "| p99 × ceiling SQLite / PG | CPU µs/req ceiling SQLite / PG | CPU µs/req server SQLite / PG "
        "| PG + Redis µs/req: postgres / redis-server / stack total | proof (PG rows) |",
        "|---:|---|---|---:|---|---|---|---|---|---|",
    ]
    for eng in engines:
        for name, row in eng["rows"].items():
            s = row["summary"]
            sq = (res.get("load") or {}).get(f"{name}@w{eng['workers']}")
            ss = sq["summary"] if sq else {}
            total = None
            if s["product_cpu_us_median"] is not None:
                total = s["product_cpu_us_median"] + (s["pg_cpu_us_median"] or 0) + (s["redis_cpu_us_median"] or 0)
            proof = "-"
            if "x_miss" in s:
                proof = (f"{s['x_miss']:,} MISS, {s['src_db']:,} source database of {s['requests']:,}"
                         + ("" if s["proof_ok"] else " — NOT all"))
            if s["errors"]:
                proof += f"; {s['errors']} errors"
            lines.append(
                f"| {eng['workers']} | {row['label']} | {fmt(sq['body_bytes'] if sq else None)} "
                f"/ {row['body_bytes']:,} "
                f"| {fmt(ss.get('ratio_median'), '.2f')} "
                f"| **{s['ratio_median']:.2f}** ({' '.join(f'{r:.2f}' for r in s['ratios'])}) "
                f"| {fmt(ss.get('p99_x_median'), '.2f')}× / {fmt(s['p99_x_median'], '.2f')}× "
                f"| {fmt(ss.get('ceiling_cpu_us_median'))} / {fmt(s['ceiling_cpu_us_median'])} "
                f"| {fmt(ss.get('product_cpu_us_median'))} / {fmt(s['product_cpu_us_median'])} "
                f"| {fmt(s['pg_cpu_us_median'])} / {fmt(s['redis_cpu_us_median'])} / {fmt(total)} | {proof} |")
    return lines


# --- report -----------------------------------------------------------------------------------

def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def summarise(path: dict) -> dict:
    pairs = path["pairs"]
    c = [p["ceiling"] for p in pairs]
    q = [p["product"] for p in pairs]
    ratios = [p["ratio"] for p in pairs]
    cpu_ratios = [p["ceiling"]["server_cpu_us_per_req"] / p["product"]["server_cpu_us_per_req"] for p in pairs
                  if p["ceiling"]["server_cpu_us_per_req"] and p["product"]["server_cpu_us_per_req"]]
    p99_x = [p["product"]["p99_ms"] / p["ceiling"]["p99_ms"] for p in pairs
             if p["product"]["p99_ms"] and p["ceiling"]["p99_ms"]]
    return {
        "ceiling_rps_median": median([r["rps"] for r in c]), "product_rps_median": median([r["rps"] for r in q]),
        "ceiling_p50_ms_median": median([r["p50_ms"] for r in c]),
        "product_p50_ms_median": median([r["p50_ms"] for r in q]),
        "ceiling_p99_ms_median": median([r["p99_ms"] for r in c]),
        "product_p99_ms_median": median([r["p99_ms"] for r in q]),
        "ratios": [round(r, 3) for r in ratios], "ratio_median": round(median(ratios), 3),
        "p99_x_median": round(median(p99_x), 2) if p99_x else None,
        "ceiling_cpu_us_median": median([r["server_cpu_us_per_req"] for r in c]),
        "product_cpu_us_median": median([r["server_cpu_us_per_req"] for r in q]),
        "cpu_ratio": round(median(cpu_ratios), 3) if cpu_ratios else None,
        "steal_s_median": median([r["steal_s"] for r in c + q]),
        "other_cpu_s_median": median([r["unexplained_cpu_s"] for r in c + q]),
    }


def _n(x: int | None) -> str:
    return "?" if x is None else f"{x:,}"


def verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def print_report(res: dict) -> None:
    cfg = res["config"]
    lines = [
        "",
        f"chessstats bench — workers {', '.join(str(w) for w in cfg['worker_counts'])}, wrk -t1 -c{CONNECTIONS} "
        f"--latency, {cfg['pairs']} pairs x {cfg['duration_s']:g} s per side, ceiling = bare Sanic with the same "
        f"worker count, same bodies; started {cfg['started_at']}",
        "",
        "| workers | path | body B | ceiling req/s | product req/s | ratio per pair | ratio median "
        "| ceiling p50/p99 ms | product p50/p99 ms | p99 × ceiling | CPU µs/req ceil/prod (ratio) "
        "| steal / other CPU s per run | target | met |",
        "|---:|---|---:|---:|---:|---|---:|---|---|---:|---|---|---|---|",
    ]
    for p in res["load"].values():
        s = p["summary"]
        lines.append(
            f"| {p['workers']} | {p['label']} | {p['body_bytes']:,} | {fmt(s['ceiling_rps_median'])} "
            f"| {fmt(s['product_rps_median'])} "
            f"| {' '.join(f'{r:.2f}' for r in s['ratios'])} | **{s['ratio_median']:.2f}** "
            f"| {fmt(s['ceiling_p50_ms_median'], '.2f')} / {fmt(s['ceiling_p99_ms_median'], '.2f')} "
            f"| {fmt(s['product_p50_ms_median'], '.2f')} / {fmt(s['product_p99_ms_median'], '.2f')} "
            f"| {fmt(s['p99_x_median'], '.2f')}× | {fmt(s['ceiling_cpu_us_median'])} / "
            f"{fmt(s['product_cpu_us_median'])} ({fmt(s['cpu_ratio'], '.2f')}) "
            f"| {fmt(s['steal_s_median'], '.2f')} / {fmt(s['other_cpu_s_median'], '.2f')} "
            f"| {p['target']} | {p['met']} |"
        )
    lines += reference_lines(res)
    lines += engines_lines(res)
    for ov in res.get("overhead") or []:
        lines += overhead_lines(ov)
    if res["oneshot_rows"]:
        lines += ["", "| one-shot figure | value | target | met |", "|---|---|---|---|"]
    for row in res["oneshot_rows"]:
        lines.append("| " + " | ".join(row) + " |")
    ip = res.get("import_p99")
    if ip:
        s = ip["summary"]
        lines += [
            "",
            "| workers | cached GET while imports run | body B | req/s without / during | p50 ms without / during "
            "| p99 ms without / during | p99 ratio per pair | p99 ratio median | imports in the windows (first: "
            f"recorded {RECORDED_ID}, then generated copies): started, median s each, answers | min window coverage "
            "| X-Cache HIT / requests (errors) | steal / other CPU s per run | target | met |",
            "|---:|---|---:|---|---|---|---|---:|---|---:|---|---|---|---|",
            f"| {ip['workers']} | {ip['route']} (generated arena, cached) | {ip['body_bytes']:,} "
            f"| {fmt(s['baseline_rps_median'])} / {fmt(s['import_rps_median'])} "
            f"| {fmt(s['baseline_p50_ms_median'], '.2f')} / {fmt(s['import_p50_ms_median'], '.2f')} "
            f"| {fmt(s['baseline_p99_ms_median'], '.2f')} / {fmt(s['import_p99_ms_median'], '.2f')} "
            f"| {' '.join(f'{r:.2f}' for r in s['ratios'])} | **{fmt(s['ratio_median'], '.2f')}×** "
            f"| {s['imports_started']}, {fmt(s['import_seconds_median'], '.2f')} s, {', '.join(s['import_statuses'])} "
            f"| {fmt(100 * s['coverage_min'] if s['coverage_min'] is not None else None, '.0f')} % "
            f"| {s['x_cache_hit']:,} / {s['requests']:,} ({s['errors']}) "
            f"| {fmt(s['steal_s_median'], '.2f')} / {fmt(s['other_cpu_s_median'], '.2f')} "
            f"| p99 during ≤ 2× p99 without | {ip['met']} |",
        ]
    lines += ["", "| target | figure | verdict |", "|---|---|---|"]
    for row in res["targets"]:
        lines.append("| " + " | ".join(row) + " |")
    other = res.get("other_cpu_s_per_run_median")
    if other is not None:
        budget = 2 * cfg["duration_s"]  # CPU-seconds of a run on this machine's cores
        la0, la1 = cfg.get("loadavg_at_start") or [0], cfg.get("loadavg_at_end") or [0]
        lines += ["", f"machine: {cfg['cpus']} CPUs; other processes' CPU per wrk run: median {other:.1f} s "
                  f"(max {res['other_cpu_s_per_run_max']:.1f} s) of {budget:g} CPU-s; load average "
                  f"{la0[0]:.2f} at start, {la1[0]:.2f} at the end"
                  + (" — CONTAMINATED: other sessions used the cores; ratios are indicative only"
                     if other > 0.1 * budget else "")]
    lines += ["", f"wall time {res['wall_s']:.0f} s; results in {res['json_path']}"]
    print("\n".join(lines), flush=True)


def run_idle_rss(res: dict, tmp: Path, replay_url: str, args: argparse.Namespace) -> None:
    """The idle-RSS-per-process probe (``--build`` builds the executable first) and the reference
    row's preconditions, into ``res``."""
    binary = binary_path()
    if args.build:
        log("building the executable (scripts/build) ...")
        subprocess.run([str(ROOT / "scripts" / "build")], cwd=str(ROOT), check=True, stdout=sys.stderr)
    if not args.no_idle_rss:
        present = binary.is_file() and os.access(binary, os.X_OK)
        res["idle_rss"] = idle_rss_probe(tmp, replay_url, binary if present else None)
        if not present:
            res["idle_rss_exe_skipped"] = f"skipped: no {binary} (build it with scripts/build, or give --build)"
    if not args.no_reference:
        res["reference_skipped"] = reference_missing()


def idle_rss_rows(res: dict, rows: list[list[str]], targets: list[list[str]]) -> None:
    """One-shot rows (and the executable's target) of the idle-RSS-per-process probe."""
    for row in res.get("idle_rss") or []:
        what = "dist/chessstats serve" if row["kind"] == "executable" else "python -m chessstats serve"
        is_target = row["kind"] == "executable" and row["workers"] == 1
        ok = row["rss_mib"] <= TARGETS["exe_idle_rss_mib"]
        rows.append([f"idle RSS per process, {what} --workers {row['workers']} (default config, no job due, fresh "
                     "data dir; VmRSS over the whole tree)", idle_rss_text(row), "≤ 55 MiB" if is_target else "-",
                     verdict(ok) if is_target else "-"])
        if is_target:
            targets.append(["idle RSS of the executable ≤ 55 MiB, 1 worker (whole tree: bootloader + server)",
                            f"{row['rss_mib']:.1f} MiB", verdict(ok)])
    if res.get("idle_rss_exe_skipped"):
        rows.append(["idle RSS per process, the executable", res["idle_rss_exe_skipped"], "≤ 55 MiB (1 worker)",
                     "not measured"])
        targets.append(["idle RSS of the executable ≤ 55 MiB, 1 worker", res["idle_rss_exe_skipped"], "not measured"])


# --- main -------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description="chessstats benchmark, paired against a bare-Sanic ceiling")
    ap.add_argument("--workers", default="1,2",
                    help="worker counts of the load rows, comma separated (default 1,2); server and ceiling "
                         "run with the same count. The one-shot probes and the import-p99 row use the first")
    ap.add_argument("--pairs", type=int, default=None, help="ceiling/product pairs per load path (default 3)")
    ap.add_argument("--duration", type=float, default=None, help="seconds per wrk run (default 10, --quick 3)")
    ap.add_argument("--quick", action="store_true", help="3 pairs x 3 s and a smaller import: a sanity run")
    ap.add_argument("--import-players", type=int, default=None, help="standings of the large import (10000)")
    ap.add_argument("--import-games", type=int, default=None, help="games of the large import (5000)")
    ap.add_argument("--coalesce", type=int, default=100, help="concurrent first requests in the probe (100)")
    ap.add_argument("--db-tournaments", type=int, default=64,
                    help="stored tournaments the database-served rows rotate over (64)")
    ap.add_argument("--no-import-p99", action="store_true", help="skip the cached-p99-during-import row")
    ap.add_argument("--json", type=Path, default=ROOT / "bench-results.json", help="where to write the JSON")
    ap.add_argument("--with-list", action="store_true",
                    help="also load GET /api/tournaments?limit=100 (39 KB; adds ~1 min per worker count)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data dirs)")
    ap.add_argument("--overhead-only", action="store_true",
                    help="only the cached-GET ratio with the inbound limiter and the metrics on and off "
                         "(a few minutes; with --quick about one)")
    ap.add_argument("--no-overhead", action="store_true", help="skip the limiter/metrics on-off row")
    ap.add_argument("--import-only", action="store_true",
                    help="only the import rows: the recorded sH24g2zH import, the large import and (unless "
                         "--no-import-p99) the cached-p99-during-imports row")
    ap.add_argument("--db-only", action="store_true",
                    help="only the database-served rows (detail and standings page, cache disabled): no cached "
                         "rows, one-shot probes, import, overhead or import-p99 rows")
    ap.add_argument("--build", action="store_true",
                    help="build the executable (scripts/build) first, for the executable's idle-RSS rows")
    ap.add_argument("--no-idle-rss", action="store_true",
                    help="skip the idle RSS per process rows (source and executable, 1 and 2 workers)")
    ap.add_argument("--engines-only", action="store_true",
                    help="only the engines section: the cached and DB-served rows on SQLite + diskcache, then "
                         "the same rows on a throwaway PostgreSQL + Redis, each against the ceiling")
    ap.add_argument("--no-engines", action="store_true", help="skip the PostgreSQL + Redis engines section")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the reference row (the original design: Node.js Express + Redis)")
    args = ap.parse_args()
    try:
        worker_counts = [int(w) for w in str(args.workers).split(",") if w.strip()]
        assert worker_counts and all(1 <= w <= 64 for w in worker_counts)
    except (ValueError, AssertionError):
        ap.error(f"--workers: expected worker counts like 1 or 1,2, got {args.workers!r}")
    primary = worker_counts[0]
    pairs = args.pairs or 3
    duration = args.duration or (3.0 if args.quick else 10.0)
    # the overhead row starts fresh servers every round (a start's own luck is ±10 %): more, shorter rounds
    ov_rounds = args.pairs or (3 if args.quick else 9)
    ov_duration = args.duration or (3.0 if args.quick else 4.0)
    imp_players = args.import_players or (2000 if args.quick else 10_000)
    imp_games = args.import_games or (1000 if args.quick else 5_000)
    if shutil.which("wrk") is None:
        log("wrk is not installed: apt-get install -y wrk (scripts/bench installs it when run as root)")
        return 2
    _idle_budget[0] = 30.0 + 15.0 * len(worker_counts)

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="chessstats-bench-"))
    procs: list[Proc] = []
    res: dict = {"config": {
        "workers": primary, "worker_counts": worker_counts, "pairs": pairs, "duration_s": duration,
        "connections": CONNECTIONS, "quick": args.quick, "db_tournaments": args.db_tournaments,
        "python": sys.version.split()[0], "machine": platform.machine(),
        "cpus": os.cpu_count(), "kernel": platform.release(),
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0:1],
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "loadavg_at_start": os.getloadavg(),
    }}
    rows: list[list[str]] = []
    targets: list[list[str]] = []
    try:
        log(f"temp dir {tmp}")
        replay, replay_url = start_replay(tmp)
        procs.append(replay)
        if not (args.overhead_only or args.db_only or args.import_only or args.engines_only):
            run_idle_rss(res, tmp, replay_url, args)
        data_dir = tmp / "data-server"
        server, server_url = start_server(tmp, replay_url, primary, data_dir=data_dir)
        procs.append(server)
        time.sleep(2.0)
        idle_rss = rss_mib(server.tree())
        res["idle_rss_mib"] = round(idle_rss, 1)
        res["idle_rss_processes"] = len(server.tree())
        log(f"server up ({primary} worker(s)): idle RSS {idle_rss:.1f} MiB over {len(server.tree())} process(es)")

        if args.overhead_only:
            r = httpx.get(f"{server_url}/api/tournaments/{RECORDED_ID}", timeout=300)  # stored once for all
            assert r.status_code == 200, r.text[:300]
            server.stop()
            procs.remove(server)
            res["overhead"] = [overhead_probe(tmp, replay_url, data_dir, w, ov_rounds, ov_duration)
                               for w in worker_counts]
            for ov in res["overhead"]:
                targets.append(limiter_target(ov))
                targets.append(limiter_default_target(ov))
            res["targets"] = targets
            res["wall_s"] = round(time.monotonic() - started, 1)
            args.json.write_text(json.dumps(res, indent=2))
            lines = [f"chessstats bench --overhead-only: wrk -t1 -c{CONNECTIONS}, {ov_rounds} rounds x {ov_duration:g} "
                     f"s per variant in {OVERHEAD_SLICE_S:g}-s slices taken in turn, fresh servers every round; "
                     f"started {res['config']['started_at']}"]
            for ov in res["overhead"]:
                lines += overhead_lines(ov)
            lines += ["", "| target | figure | verdict |", "|---|---|---|"]
            lines += ["| " + " | ".join(row) + " |" for row in targets]
            lines += ["", f"wall time {res['wall_s']:.0f} s; results in {args.json}"]
            print("\n".join(lines), flush=True)
            return 0
        if args.import_only:
            res["recorded_import"] = rec = recorded_import_probe(server, server_url, replay_url)
            log(f"recorded import: {rec['seconds']} s, server CPU {rec['server_cpu_s']} s")
            res["import"] = imp = import_probe(server, server_url, replay_url, imp_players, imp_games)
            log(f"import: {imp['seconds']} s (server CPU {imp['server_cpu_s']} s), peak RSS "
                f"{imp['peak_rss_mib_polled']} MiB")
            server.stop()
            procs.remove(server)
            if not args.no_import_p99:
                res["import_p99"] = ip = import_p99_probe(tmp, replay_url, primary, pairs, duration)
                ratio = ip["summary"]["ratio_median"]
                ip["met"] = verdict(ratio is not None and ratio <= TARGETS["import_p99_x"])
            res["config"]["loadavg_at_end"] = os.getloadavg()
            res["wall_s"] = round(time.monotonic() - started, 1)
            res["json_path"] = str(args.json)
            args.json.write_text(json.dumps(res, indent=2))
            print("\n".join(import_only_report(res)), flush=True)
            return 0
        client = httpx.Client(timeout=300, headers={"Accept-Encoding": "identity"})
        if args.engines_only:  # the cached rows need the recorded tournament stored (no cold/coalescing rows)
            r, _ = import_via_get(client, server_url, RECORDED_ID)
            assert r.status_code == 200, r.text[:300]
        elif not args.db_only:
            # cold misses through the upstream (recorded data): first request of each route
            httpx.post(replay_url + "/_replay/reset")
            r2, cold_list_ms = get(client, f"{server_url}/api/tournaments?limit=100")
            assert r2.status_code == 200, r2.text[:300]
            httpx.post(replay_url + "/_replay/reset")
            r, cold_ms = import_via_get(client, server_url, RECORDED_ID)  # until its background import is complete
            assert r.status_code == 200, r.text[:300]
            cold_counts = replay_counts(replay_url)
            res["cold"] = {
                "tournament_ms": round(cold_ms, 1), "tournament_x_cache": r.headers.get("x-cache"),
                "tournament_upstream": cold_counts,
                "list_ms": round(cold_list_ms, 1), "list_x_cache": r2.headers.get("x-cache"),
                "list_entries": len(r2.json()["data"]), "list_bytes": len(r2.content),
            }
            # database-served miss latency: cache cleared before each single request, once the import
            # is complete (on a loaded machine it can outlast the first GET's wait)
            deadline = time.monotonic() + 120
            while client.get(f"{server_url}/api/tournaments/{RECORDED_ID}").json()["data"].get(
                    "importState") != "complete" and time.monotonic() < deadline:
                time.sleep(0.1)
            db_ms = []
            for _ in range(20):
                admin_clear(client, server_url)
                r3, ms = get(client, f"{server_url}/api/tournaments/{RECORDED_ID}")
                assert r3.status_code == 200 and r3.headers.get("x-cache") == "MISS", r3.headers
                db_ms.append(ms)
            db_ms.sort()
            res["db_miss"] = {"n": 20, "median_ms": round(median(db_ms), 2), "p90_ms": round(db_ms[17], 2),
                              "max_ms": round(db_ms[-1], 2), "source": r3.json().get("source")}
            log(f"cold miss {RECORDED_ID}: {cold_ms:.0f} ms (imports 191 standings + 1463 games); "
                f"list: {cold_list_ms:.0f} ms")

            # coalescing probe (fresh id, generated data)
            res["coalesce"] = co = coalesce_probe(server_url, replay_url, args.coalesce)
            log(f"coalescing: {co['concurrent']} concurrent -> upstream {co['upstream_requests_by_path']}")

        # the stored tournaments the database-served rows rotate over
        t0 = time.perf_counter()
        db_ids = store_db_tournaments(client, server_url, replay_url, args.db_tournaments)
        log(f"stored {len(db_ids)} generated tournaments for the database-served rows in "
            f"{time.perf_counter() - t0:.1f} s")

        # routes to load, their bodies, and the ceiling with the same bodies
        cached_routes = {} if args.db_only else {
            "cached_tournament": (f"/api/tournaments/{RECORDED_ID}", "cached GET tournament (recorded sH24g2zH)"),
            "cached_leaderboard": (f"/api/tournaments/{RECORDED_ID}/results?limit=100",
                                   "cached GET leaderboard: standings page, 100 entries (recorded)"),
        }
        if args.with_list and not args.db_only:
            cached_routes["cached_list"] = ("/api/tournaments?limit=100",
                                            "cached GET tournament list, 100 entries (recorded; TTL 120 s)")
        bodies_dir = tmp / "bodies"
        bodies_dir.mkdir()
        sizes = {}
        for name, (path, _) in cached_routes.items():
            client.get(server_url + path)  # make sure it is cached
            r = client.get(server_url + path)
            assert r.status_code == 200 and r.headers.get("x-cache") == "HIT", (name, r.status_code, r.headers)
            (bodies_dir / name).write_bytes(r.content)
            sizes[name] = len(r.content)
        # the database-served rows: name -> (label, paths rotated over, product script, ceiling script)
        db_rows = {}
        for name, label, suffix in (
            ("db_tournament", "DB-served GET tournament", ""),
            ("db_standings", "DB-served GET standings page, 100 entries", f"/results?limit={DB_STANDINGS_LIMIT}"),
        ):
            paths = [f"/api/tournaments/{tid}{suffix}" for tid in db_ids]
            db_rows[name] = (label, paths, rotation_script(tmp / f"rotate-{name}.lua", paths),
                             rotation_script(tmp / f"rotate-{name}-ceiling.lua",
                                             [f"/c/{name}_{i:04d}" for i in range(len(db_ids))]))

        load: dict = {}
        for workers in worker_counts:
            if workers == primary:
                srv, srv_url = server, server_url
            else:
                srv, srv_url = start_server(tmp, replay_url, workers, name=f"server-w{workers}", data_dir=data_dir)
                procs.append(srv)
            db_srv, db_url = start_server(tmp, replay_url, workers, name=f"db-w{workers}", data_dir=data_dir,
                                          extra_env={"CHESSSTATS_CACHE_ENABLED": "false"})
            procs.append(db_srv)
            for name, (_, paths, _, _) in db_rows.items():  # the database-served bodies, byte for byte
                if name in sizes:
                    continue
                total = 0
                for i, path in enumerate(paths):
                    r = client.get(db_url + path)
                    assert r.status_code == 200 and r.headers.get("x-cache") == "MISS", (path, r.headers)
                    assert r.json()["source"] == "database", r.text[:300]
                    (bodies_dir / f"{name}_{i:04d}").write_bytes(r.content)
                    total += len(r.content)
                sizes[name] = round(total / len(paths))
            ceiling, ceiling_url = start_ceiling(tmp, bodies_dir, workers)
            procs.append(ceiling)
            specs = {
                name: {"label": label, "product": (srv, srv_url + path, None),
                       "ceiling": ceiling_url + f"/c/{name}", "ceiling_script": None, "kind": "cached"}
                for name, (path, label) in cached_routes.items()
            }
            for name, (label, _, product_lua, ceiling_lua) in db_rows.items():
                specs[name] = {
                    "label": f"{label}: cache disabled (CHESSSTATS_CACHE_ENABLED=false), "
                             f"rotating over {len(db_ids)} stored tournaments",
                    "short": label, "product": (db_srv, db_url + "/", product_lua), "ceiling": ceiling_url + "/",
                    "ceiling_script": ceiling_lua, "kind": "db",
                }
            for name, spec in specs.items():  # warm both sides
                run_wrk(spec["ceiling"], 1, ceiling, script=spec["ceiling_script"])
                run_wrk(spec["product"][1], 1, spec["product"][0], script=spec["product"][2])
                load[f"{name}@w{workers}"] = {
                    "name": name, "workers": workers, "label": spec["label"], "kind": spec["kind"],
                    "short": spec.get("short", spec["label"]),
                    "route": (f"/api/tournaments/{{{len(db_ids)} stored ids}}"
                              + (f"/results?limit={DB_STANDINGS_LIMIT}" if name == "db_standings" else "")
                              if spec["kind"] == "db" else spec["product"][1].replace(srv_url, "")),
                    "body_bytes": sizes[name], "pairs": []}
            for i in range(pairs):
                for name, spec in specs.items():
                    entry = load[f"{name}@w{workers}"]
                    busy = wait_idle(5.0)
                    c = run_wrk(spec["ceiling"], duration, ceiling, script=spec["ceiling_script"])
                    c["busy_before_cores"] = round(busy, 2)
                    target_proc, target_url, script = spec["product"]
                    base = db_url if spec["kind"] == "db" else srv_url
                    h0, m0 = cache_counters(client, base)
                    busy = wait_idle(5.0)
                    p = run_wrk(target_url, duration, target_proc, script=script)
                    p["busy_before_cores"] = round(busy, 2)
                    h1, m1 = cache_counters(client, base)
                    # /health reports the counters of the worker that answered it: exact with one worker only
                    if workers == 1:
                        p.update(cache_misses=m1 - m0, cache_hits=h1 - h0)
                    ratio = p["rps"] / c["rps"] if c["rps"] else 0.0
                    entry["pairs"].append({"ceiling": c, "product": p, "ratio": ratio})
                    log(f"w{workers} pair {i + 1}/{pairs} {name}: ceiling {c['rps']:,.0f} req/s p99 {c['p99_ms']} ms"
                        f" | product {p['rps']:,.0f} req/s p99 {p['p99_ms']} ms | ratio {ratio:.2f} "
                        f"| steal {c['steal_s']}+{p['steal_s']} s | other CPU {c['unexplained_cpu_s']}+"
                        f"{p['unexplained_cpu_s']} s | cache hits/misses {p.get('cache_hits', 'n/a')}/"
                        f"{p.get('cache_misses', 'n/a')} | wrk counts {p.get('counts', '-')}")
            if (not args.no_reference and not args.db_only and not args.engines_only
                    and not res.get("reference_skipped")
                    and workers in (1, 2)):
                log(f"reference row ({workers} worker(s)): Express + Redis against the ceiling, {pairs} pairs ...")
                res.setdefault("reference", []).append(reference_probe(
                    tmp, ceiling, ceiling_url, bodies_dir / "cached_tournament", workers, pairs, duration,
                    load[f"cached_tournament@w{workers}"]))
            if workers == primary:
                time.sleep(1.0)
                res["after_load_rss_mib"] = round(rss_mib(server.tree()), 1)
                res["ceiling_idle_rss_mib"] = round(rss_mib(ceiling.tree()), 1)
            for proc in (ceiling, db_srv) + (() if srv is server else (srv,)):
                proc.stop()
                procs.remove(proc)

        for p in load.values():
            p["summary"] = s = summarise(p)
            w = p["workers"]
            if p["kind"] == "cached":
                ok_r = s["ratio_median"] >= TARGETS["cached_ratio"]
                ok_p = (s["p99_x_median"] or 99) <= TARGETS["cached_p99_x"]
                p["target"] = f"ratio ≥ {TARGETS['cached_ratio']:.2f}; p99 ≤ {TARGETS['cached_p99_x']:g}× ceiling"
                p["met"] = f"ratio {verdict(ok_r)}; p99 {verdict(ok_p)}"
                targets.append([f"{p['label']}, {w} worker(s): req/s ≥ {TARGETS['cached_ratio']:.2f} × ceiling "
                                "(median of pairs)",
                                f"{s['ratio_median']:.2f}", verdict(ok_r)])
                targets.append([f"{p['label']}, {w} worker(s): p99 ≤ {TARGETS['cached_p99_x']:g} × ceiling p99",
                                f"{fmt(s['p99_x_median'], '.2f')}×", verdict(ok_p)])
            else:
                counts = [pr["product"].get("counts") or {} for pr in p["pairs"]]
                reqs = [pr["product"]["requests"] for pr in p["pairs"]]
                p["misses_per_run"] = [cn.get("x_miss") for cn in counts]
                p["hits_per_run"] = [cn.get("x_hit") for cn in counts]
                p["source_database_per_run"] = [cn.get("src_db") for cn in counts]
                p["requests_per_run"] = reqs
                ok = s["ratio_median"] >= TARGETS["db_ratio"]
                p["target"] = f"ratio ≥ {TARGETS['db_ratio']:.2f}"
                p["met"] = verdict(ok)
                proof = "; ".join(
                    f"{_n(cn.get('x_miss'))} MISS / {_n(cn.get('x_hit'))} HIT of {n:,}"
                    + (f", server misses {pr['product']['cache_misses']:,}" if "cache_misses" in pr["product"] else "")
                    for cn, n, pr in zip(counts, reqs, p["pairs"], strict=True))
                src_db = ", ".join(_n(cn.get("src_db")) for cn in counts)
                p["label"] += f" (X-Cache per run: {proof}; answers with source database: {src_db})"
                targets.append([f"{p['short']} (cache disabled), {w} worker(s): req/s ≥ {TARGETS['db_ratio']:.2f} × "
                                "ceiling",
                                f"{s['ratio_median']:.2f}", verdict(ok)])
        res["load"] = load

        # the same cached and DB-served rows on PostgreSQL + Redis (issue 12)
        if not (args.no_engines or args.db_only):
            why = engines_missing()
            if why:
                res["engines_skipped"] = why
                log(f"engines section {why}")
            else:
                res["engines"] = []
                for workers in worker_counts:
                    log(f"engines section ({workers} worker(s)): PostgreSQL + Redis, {pairs} pairs ...")
                    try:
                        res["engines"].append(engines_probe(tmp, replay_url, workers, pairs, duration,
                                                            args.db_tournaments))
                    except (RuntimeError, AssertionError, OSError, httpx.HTTPError) as exc:
                        import traceback

                        log(traceback.format_exc())
                        res["engines_skipped"] = f"failed ({workers} worker(s)): {str(exc)[:300]} (see the log above)"
                        break

        if args.db_only or args.engines_only:
            client.close()
            res["oneshot_rows"] = []
        else:
            # the cost of the inbound limiter and of the metrics on a cached GET: on/off rounds
            if not args.no_overhead:
                res["overhead"] = []
                for workers in worker_counts:
                    log(f"overhead rows ({workers} worker(s)): limiter and metrics off/on, {ov_rounds} rounds ...")
                    ov = overhead_probe(tmp, replay_url, data_dir, workers, ov_rounds, ov_duration)
                    res["overhead"].append(ov)
                    targets.append(limiter_target(ov))
                    targets.append(limiter_default_target(ov))

            # large import (generated data)
            log(f"import probe: {imp_players} standings, {imp_games} games ...")
            res["import"] = imp = import_probe(server, server_url, replay_url, imp_players, imp_games)
            log(f"import: {imp['seconds']} s, peak RSS {imp['peak_rss_mib_polled']} MiB (VmHWM sum "
                f"{imp['peak_rss_mib_vmhwm']})")
            client.close()
            server.stop()
            procs.remove(server)

            # p99 of a cached GET while 1,463-game imports run, against the p99 without
            if not args.no_import_p99:
                log(f"import p99 probe ({primary} worker(s)): {pairs} pairs x {duration:g} s ...")
                res["import_p99"] = ip = import_p99_probe(tmp, replay_url, primary, pairs, duration)
                s = ip["summary"]
                ok = s["ratio_median"] is not None and s["ratio_median"] <= TARGETS["import_p99_x"]
                ip["met"] = verdict(ok)
                targets.append([f"cached GET p99 while 1,463-game imports run, {primary} worker(s): ≤ 2 × p99 without",
                                f"{fmt(s['ratio_median'], '.2f')}× ({fmt(s['import_p99_ms_median'], '.2f')} vs "
                                f"{fmt(s['baseline_p99_ms_median'], '.2f')} ms)", verdict(ok)])

            full_import = imp_players >= 10_000 and imp_games >= 5_000
            co_ok = co["max_requests_per_path"] <= TARGETS["coalesce_upstream"]
            rss_ok = res["idle_rss_mib"] < TARGETS["idle_rss_mib"]
            rows += [
                [f"idle RSS after start-up ({primary} worker(s))",
                 f"{res['idle_rss_mib']:.1f} MiB ({res['idle_rss_processes']} proc)",
                 "< 60 MiB (1 worker)", verdict(rss_ok) if primary == 1 else "n/a"],
                ["RSS after the load runs", f"{res['after_load_rss_mib']:.1f} MiB", "-", "-"],
                ["ceiling RSS after its runs", f"{res['ceiling_idle_rss_mib']:.1f} MiB", "-", "-"],
                [f"cold miss {RECORDED_ID} (recorded; imports 191 standings, 1463 games)",
                 f"{res['cold']['tournament_ms']:,.0f} ms, X-Cache {res['cold']['tournament_x_cache']}", "-", "-"],
                ["cold miss tournament list (fresh DB: fetches the recorded current list)",
                 f"{res['cold']['list_ms']:,.0f} ms, X-Cache {res['cold']['list_x_cache']}, "
                 f"{res['cold']['list_entries']} entries, {res['cold']['list_bytes']:,} B", "-", "-"],
                [f"DB-served miss {RECORDED_ID} (cache cleared before each of 20 single GETs)",
                 f"median {res['db_miss']['median_ms']} ms, p90 {res['db_miss']['p90_ms']} ms, "
                 f"max {res['db_miss']['max_ms']} ms (source {res['db_miss']['source']})", "-", "-"],
                [f"coalescing: {co['concurrent']} concurrent first GETs, fresh id (generated)",
                 "upstream " + ", ".join(f"{p.rsplit('/', 1)[-1] if p.count('/') > 4 else 'info'}={n}"
                                         for p, n in co["upstream_requests_by_path"].items())
                 + f"; {co['seconds']:.2f} s; responses {co['responses']}",
                 "1 per upstream resource", verdict(co_ok)],
                [f"import {imp_players:,} standings + {imp_games:,} games (generated)",
                 f"{imp['seconds']:.2f} s (status {imp['status']}, server CPU {imp['server_cpu_s']} s)",
                 "≤ 3 s" if full_import else "(target is for 10k/5k)",
                 verdict(imp["seconds"] <= TARGETS["import_s"]) if full_import else "n/a"],
                ["import peak RSS (polled VmRSS over the tree / VmHWM sum)",
                 f"{imp['peak_rss_mib_polled']:.1f} / {imp['peak_rss_mib_vmhwm']:.1f} MiB "
                 f"(before {imp['rss_before_mib']:.1f}, after {imp['rss_after_mib']:.1f})",
                 "≤ 100 MiB" if full_import else "-",
                 verdict(imp["peak_rss_mib_polled"] <= TARGETS["import_peak_mib"])
                 if full_import and primary == 1 else "n/a"],
            ]
            res["oneshot_rows"] = rows
            targets += [
                [f"coalescing: 1 upstream request per resource for {co['concurrent']} concurrent misses, "
                 f"{primary} worker(s)", f"max {co['max_requests_per_path']} per path", verdict(co_ok)],
            ]
            if full_import:
                targets.append([f"import 10,000 standings + 5,000 games ≤ 3 s, {primary} worker(s)",
                                f"{imp['seconds']:.2f} s (server CPU {imp['server_cpu_s']} s)",
                                verdict(imp["seconds"] <= TARGETS["import_s"])])
                if primary == 1:
                    targets.append(["import peak RSS ≤ 100 MiB, 1 worker", f"{imp['peak_rss_mib_polled']:.1f} MiB",
                                    verdict(imp["peak_rss_mib_polled"] <= TARGETS["import_peak_mib"])])
            if primary == 1:
                targets.append(["idle RSS < 60 MiB, 1 worker", f"{res['idle_rss_mib']:.1f} MiB", verdict(rss_ok)])
            idle_rss_rows(res, rows, targets)
        res["targets"] = targets
    finally:
        for proc in reversed(procs):
            proc.stop()
    res["config"]["loadavg_at_end"] = os.getloadavg()
    runs = [r for p in (res.get("load") or {}).values() for pr in p["pairs"] for r in (pr["ceiling"], pr["product"])]
    runs += [r for pr in (res.get("import_p99") or {}).get("pairs", []) for r in (pr["baseline"], pr["during_import"])]
    runs += [r for eng in res.get("engines") or [] for row in eng["rows"].values() for pr in row["pairs"]
             for r in (pr["ceiling"], pr["product"])]
    others = [r["unexplained_cpu_s"] for r in runs if r.get("unexplained_cpu_s") is not None]
    if others:
        res["other_cpu_s_per_run_median"] = round(median(others), 2)
        res["other_cpu_s_per_run_max"] = round(max(others), 2)
    res["wall_s"] = round(time.monotonic() - started, 1)
    res["json_path"] = str(args.json)
    args.json.write_text(json.dumps(res, indent=2))
    print_report(res)
    if args.keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
