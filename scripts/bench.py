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
import json
import os
import platform
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
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-token"
CLK_TCK = os.sysconf("SC_CLK_TCK")
RECORDED_ID = "sH24g2zH"  # the recorded finished team battle (191 standings, 1463 games)
CONNECTIONS = 32

TARGETS = {
    "cached_ratio": 0.85,  # cached GET req/s >= 85 % of the ceiling
    "db_ratio": 0.50,  # database-served GET req/s >= 50 % of the ceiling
    "cached_p99_x": 2.0,  # cached p99 <= 2 x the ceiling's p99
    "coalesce_upstream": 1,  # one upstream request (per upstream resource) for 100 concurrent misses
    "import_s": 10.0,  # 10,000 standings + 5,000 games imported in < 10 s
    "import_peak_mib": 150.0,  # ... with peak RSS < 150 MB
    "idle_rss_mib": 60.0,  # idle RSS < 60 MB with one worker
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

class Proc:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
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


def start_server(tmp: Path, replay_url: str, workers: int, name: str = "server") -> tuple[Proc, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHESSSTATS_", "LICHESS_"))}
    env.update({
        "PYTHONPATH": str(ROOT), "LICHESS_API_URL": replay_url + "/lichess/api",
        "CHESSSTATS_LICHESS_MAX_REQUESTS_PER_S": "1000", "CHESSSTATS_ADMIN_TOKEN": ADMIN_TOKEN,
    })
    data_dir = tmp / f"data-{name}"
    cmd = [sys.executable, "-m", "chessstats", "serve", "--port", str(port), "--data-dir", str(data_dir),
           "--no-jobs", "--workers", str(workers)]
    proc = Proc(name, cmd, env, tmp / f"{name}.log")
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


def run_wrk(url: str, duration_s: float, server: Proc, connections: int = CONNECTIONS) -> dict:
    """One wrk run with server CPU, wrk CPU, unexplained CPU and steal for its duration."""
    pids = server.tree()
    busy0, steal0, _ = machine_times()
    cpu0 = cpu_seconds(pids)
    t0 = time.monotonic()
    proc = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency", url],
        capture_output=True, text=True, check=False,
    )
    elapsed = time.monotonic() - t0
    server_cpu = cpu_seconds(pids) - cpu0
    busy1, steal1, _ = machine_times()
    res = parse_wrk(proc.stdout)
    ru = _wrk_cpu(proc)
    res.update(
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
        r, ms = get(client, f"{server_url}/api/tournaments/{tid}")
    stop.set()
    sampler.join()
    cpu = cpu_seconds(server.tree()) - cpu0
    pids = server.tree()
    return {
        "tournament": tid, "data": f"generated ({players} standings, {games} games, shapes of sH24g2zH)",
        "status": r.status_code, "seconds": round(ms / 1000, 2), "server_cpu_s": round(cpu, 2),
        "rss_before_mib": round(rss_before, 1), "peak_rss_mib_polled": round(peak[0], 1),
        "peak_rss_mib_vmhwm": round(hwm_mib(pids), 1), "rss_after_mib": round(rss_mib(pids), 1),
        "generate_s": round(gen_s, 2),
    }


def admin_clear(client: httpx.Client, server_url: str) -> None:
    r = client.post(f"{server_url}/api/admin/cache/clear", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    r.raise_for_status()


def cache_counters(client: httpx.Client, server_url: str) -> tuple[int, int]:
    cache = client.get(f"{server_url}/health").json().get("cache") or {}
    return int(cache.get("hits", 0)), int(cache.get("misses", 0))


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


def print_report(res: dict) -> None:
    w = res["config"]["workers"]
    lines = [
        "",
        f"chessstats bench — workers={w}, wrk -t1 -c{CONNECTIONS} --latency, {res['config']['pairs']} pairs x "
        f"{res['config']['duration_s']:g} s per side, ceiling = bare Sanic, same body size",
        "",
        "| path | body B | ceiling req/s | product req/s | ratio per pair | ratio median | ceiling p50/p99 ms "
        "| product p50/p99 ms | p99 × ceiling | CPU µs/req ceil/prod (ratio) | steal / other CPU s per run | target | met |",
        "|---|---:|---:|---:|---|---:|---|---|---:|---|---|---|---|",
    ]
    for name, p in res["load"].items():
        s = p["summary"]
        lines.append(
            f"| {p['label']} | {p['body_bytes']:,} | {fmt(s['ceiling_rps_median'])} | {fmt(s['product_rps_median'])} "
            f"| {' '.join(f'{r:.2f}' for r in s['ratios'])} | **{s['ratio_median']:.2f}** "
            f"| {fmt(s['ceiling_p50_ms_median'], '.2f')} / {fmt(s['ceiling_p99_ms_median'], '.2f')} "
            f"| {fmt(s['product_p50_ms_median'], '.2f')} / {fmt(s['product_p99_ms_median'], '.2f')} "
            f"| {fmt(s['p99_x_median'], '.2f')}× | {fmt(s['ceiling_cpu_us_median'])} / {fmt(s['product_cpu_us_median'])} ({fmt(s['cpu_ratio'], '.2f')}) "
            f"| {fmt(s['steal_s_median'], '.2f')} / {fmt(s['other_cpu_s_median'], '.2f')} "
            f"| {p['target']} | {p['met']} |"
        )
    lines += ["", "| one-shot figure | value | target | met |", "|---|---|---|---|"]
    for row in res["oneshot_rows"]:
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"wall time {res['wall_s']:.0f} s; results in {res['json_path']}"]
    print("\n".join(lines), flush=True)


# --- main -------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description="chessstats benchmark, paired against a bare-Sanic ceiling")
    ap.add_argument("--workers", type=int, default=1, help="server and ceiling worker count (default 1)")
    ap.add_argument("--pairs", type=int, default=None, help="ceiling/product pairs per load path (default 3)")
    ap.add_argument("--duration", type=float, default=None, help="seconds per wrk run (default 10, --quick 3)")
    ap.add_argument("--quick", action="store_true", help="3 pairs x 3 s and a smaller import: a sanity run")
    ap.add_argument("--import-players", type=int, default=None, help="standings of the large import (10000)")
    ap.add_argument("--import-games", type=int, default=None, help="games of the large import (5000)")
    ap.add_argument("--coalesce", type=int, default=100, help="concurrent first requests in the probe (100)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench-results.json", help="where to write the JSON")
    ap.add_argument("--with-list", action="store_true",
                    help="also load GET /api/tournaments?limit=100 (39 KB; adds ~1 min)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data dirs)")
    args = ap.parse_args()
    pairs = args.pairs or 3
    duration = args.duration or (3.0 if args.quick else 10.0)
    imp_players = args.import_players or (2000 if args.quick else 10_000)
    imp_games = args.import_games or (1000 if args.quick else 5_000)
    if shutil.which("wrk") is None:
        log("wrk is not installed: apt-get install -y wrk (scripts/bench installs it when run as root)")
        return 2

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="chessstats-bench-"))
    procs: list[Proc] = []
    res: dict = {"config": {
        "workers": args.workers, "pairs": pairs, "duration_s": duration, "connections": CONNECTIONS,
        "quick": args.quick, "python": sys.version.split()[0], "machine": platform.machine(),
        "cpus": os.cpu_count(), "kernel": platform.release(),
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0:1],
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }}
    rows: list[list[str]] = []
    try:
        log(f"temp dir {tmp}")
        replay, replay_url = start_replay(tmp)
        procs.append(replay)
        server, server_url = start_server(tmp, replay_url, args.workers)
        procs.append(server)
        time.sleep(2.0)
        idle_rss = rss_mib(server.tree())
        res["idle_rss_mib"] = round(idle_rss, 1)
        res["idle_rss_processes"] = len(server.tree())
        log(f"server up: idle RSS {idle_rss:.1f} MiB over {len(server.tree())} process(es)")

        client = httpx.Client(timeout=300, headers={"Accept-Encoding": "identity"})
        # cold misses through the upstream (recorded data): first request of each route
        httpx.post(replay_url + "/_replay/reset")
        r2, cold_list_ms = get(client, f"{server_url}/api/tournaments?limit=100")
        assert r2.status_code == 200, r2.text[:300]
        httpx.post(replay_url + "/_replay/reset")
        r, cold_ms = get(client, f"{server_url}/api/tournaments/{RECORDED_ID}")
        assert r.status_code == 200, r.text[:300]
        cold_counts = replay_counts(replay_url)
        res["cold"] = {
            "tournament_ms": round(cold_ms, 1), "tournament_x_cache": r.headers.get("x-cache"),
            "tournament_upstream": cold_counts,
            "list_ms": round(cold_list_ms, 1), "list_x_cache": r2.headers.get("x-cache"),
            "list_entries": len(r2.json()["data"]), "list_bytes": len(r2.content),
        }
        # database-served miss latency: cache cleared before each single request
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

        # routes to load, their bodies, and the ceiling with the same bodies
        routes = {
            "cached_tournament": (f"/api/tournaments/{RECORDED_ID}", "cached GET tournament (recorded sH24g2zH)"),
            "cached_leaderboard": (f"/api/tournaments/{RECORDED_ID}/results?limit=100",
                                   "cached GET leaderboard: standings page, 100 entries (recorded)"),
            "db_tournament": (f"/api/tournaments/{RECORDED_ID}", "DB-served GET tournament, cache cleared per run"),
        }
        if args.with_list:
            routes["cached_list"] = ("/api/tournaments?limit=100",
                                     "cached GET tournament list, 100 entries (recorded; TTL 120 s)")
        bodies_dir = tmp / "bodies"
        bodies_dir.mkdir()
        sizes = {}
        for name, (path, _) in routes.items():
            client.get(server_url + path)  # make sure it is cached
            r = client.get(server_url + path)
            assert r.status_code == 200 and r.headers.get("x-cache") == "HIT", (name, r.status_code, r.headers)
            (bodies_dir / name).write_bytes(r.content)
            sizes[name] = len(r.content)
        ceiling, ceiling_url = start_ceiling(tmp, bodies_dir, args.workers)
        procs.append(ceiling)
        for name, (path, _) in routes.items():  # warm both sides
            run_wrk(ceiling_url + f"/c/{name}", 1, ceiling)
            run_wrk(server_url + path, 1, server)

        load: dict = {}
        for name, (path, label) in routes.items():
            load[name] = {"label": label, "route": path, "body_bytes": sizes[name], "pairs": []}
        for i in range(pairs):
            for name, (path, _) in routes.items():
                busy = wait_idle(5.0)
                c = run_wrk(ceiling_url + f"/c/{name}", duration, ceiling)
                c["busy_before_cores"] = round(busy, 2)
                if name == "db_tournament":
                    admin_clear(client, server_url)
                h0, m0 = cache_counters(client, server_url)
                busy = wait_idle(5.0)
                p = run_wrk(server_url + path, duration, server)
                p["busy_before_cores"] = round(busy, 2)
                h1, m1 = cache_counters(client, server_url)
                # /health reports the counters of the worker that answered it: exact with one worker only
                extra = ({"cache_misses": m1 - m0, "cache_hits": h1 - h0} if args.workers == 1
                         else {"cache_misses": "n/a", "cache_hits": "n/a"})
                p.update(extra)
                ratio = p["rps"] / c["rps"] if c["rps"] else 0.0
                load[name]["pairs"].append({"ceiling": c, "product": p, "ratio": ratio})
                log(f"pair {i + 1}/{pairs} {name}: ceiling {c['rps']:,.0f} req/s p99 {c['p99_ms']} ms | "
                    f"product {p['rps']:,.0f} req/s p99 {p['p99_ms']} ms | ratio {ratio:.2f} "
                    f"| steal {c['steal_s']}+{p['steal_s']} s | other CPU {c['unexplained_cpu_s']}+"
                    f"{p['unexplained_cpu_s']} s | {extra}")
        for name, p in load.items():
            p["summary"] = s = summarise(p)
            if name == "cached_tournament":
                ok_r, ok_p = s["ratio_median"] >= TARGETS["cached_ratio"], (s["p99_x_median"] or 99) <= 2
                p["target"] = "ratio ≥ 0.85; p99 ≤ 2× ceiling"
                p["met"] = f"ratio {'yes' if ok_r else 'NO'}; p99 {'yes' if ok_p else 'NO'}"
            elif name in ("cached_leaderboard", "cached_list"):
                ok_r, ok_p = s["ratio_median"] >= TARGETS["cached_ratio"], (s["p99_x_median"] or 99) <= 2
                p["target"] = "ratio ≥ 0.85; p99 ≤ 2× ceiling"
                p["met"] = f"ratio {'yes' if ok_r else 'NO'}; p99 {'yes' if ok_p else 'NO'}"
            else:
                misses = [pr["product"].get("cache_misses") for pr in p["pairs"]]
                p["cache_misses_per_run"] = misses
                p["target"] = "ratio ≥ 0.50"
                p["met"] = "yes" if s["ratio_median"] >= TARGETS["db_ratio"] else "NO"
                p["label"] += f" (X-Cache MISS per run: {', '.join(str(m) for m in misses)})"
        res["load"] = load
        time.sleep(1.0)
        res["after_load_rss_mib"] = round(rss_mib(server.tree()), 1)
        res["ceiling_idle_rss_mib"] = round(rss_mib(ceiling.tree()), 1)
        ceiling.stop()
        procs.remove(ceiling)

        # large import (generated data)
        log(f"import probe: {imp_players} standings, {imp_games} games ...")
        res["import"] = imp = import_probe(server, server_url, replay_url, imp_players, imp_games)
        log(f"import: {imp['seconds']} s, peak RSS {imp['peak_rss_mib_polled']} MiB (VmHWM sum "
            f"{imp['peak_rss_mib_vmhwm']})")
        client.close()

        full_import = imp_players >= 10_000 and imp_games >= 5_000
        co_ok = co["max_requests_per_path"] <= TARGETS["coalesce_upstream"]
        rows += [
            ["idle RSS after start-up", f"{res['idle_rss_mib']:.1f} MiB ({res['idle_rss_processes']} proc)",
             "< 60 MiB (1 worker)",
             ("yes" if res["idle_rss_mib"] < TARGETS["idle_rss_mib"] else "NO") if args.workers == 1 else "n/a"],
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
             "1 per upstream resource", "yes" if co_ok else "NO"],
            [f"import {imp_players:,} standings + {imp_games:,} games (generated)",
             f"{imp['seconds']:.2f} s (status {imp['status']}, server CPU {imp['server_cpu_s']} s)",
             "< 10 s" if full_import else "(target is for 10k/5k)",
             ("yes" if imp["seconds"] < TARGETS["import_s"] else "NO") if full_import else "n/a"],
            ["import peak RSS (polled VmRSS over the tree / VmHWM sum)",
             f"{imp['peak_rss_mib_polled']:.1f} / {imp['peak_rss_mib_vmhwm']:.1f} MiB "
             f"(before {imp['rss_before_mib']:.1f}, after {imp['rss_after_mib']:.1f})",
             "< 150 MiB" if full_import else "-",
             ("yes" if imp["peak_rss_mib_polled"] < TARGETS["import_peak_mib"] else "NO")
             if full_import and args.workers == 1 else "n/a"],
        ]
        res["oneshot_rows"] = rows
    finally:
        for proc in reversed(procs):
            proc.stop()
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
