"""Prometheus metrics through ``prometheus-client`` in its multiprocess mode.

Every process that serves (each worker) writes its samples to memory-mapped files in
``<data dir>/metrics/`` (``PROMETHEUS_MULTIPROC_DIR``, emptied when the server starts), and a
scrape of ``GET /metrics`` on any worker merges the files of every worker.

The request path stays cheap: :func:`record_request` only adds to this process's in-memory
tallies (a dict increment and a bisect, no prometheus-client call and no write to the shared
files); a background task of each worker moves them into the Prometheus values every
:data:`FLUSH_S` seconds (and the worker that answers a scrape flushes its own first), so a scrape
shows another worker's requests at most :data:`FLUSH_S` seconds late, together with the upstream
gates' counters (deltas of
:meth:`~chessstats.upstream.gate.UpstreamGate.stats`). Rare events (imports, job runs) are counted
directly. Without :func:`setup` (metrics off, CLI commands) every function here is a no-op.

Names (all ``chessstats_``): ``http_requests_total{route,method,status}``,
``http_request_duration_seconds{route}`` (histogram), ``cache_responses_total{result}``
(``hit``/``miss``/``stale``, from ``X-Cache``), ``ratelimit_refused_total``,
``upstream_calls_total{upstream,status}`` (``2xx``/``4xx``/``5xx``/``none``),
``upstream_429_total{upstream}``, ``upstream_pause_seconds_total{upstream}``,
``upstream_refused_total{upstream,reason}``, ``imports_total{outcome}``,
``import_duration_seconds{outcome}`` (histogram), ``job_runs_total{job,outcome}``,
``job_run_duration_seconds{job}`` (histogram), ``worker_requests{pid}`` (requests served by each
live worker), and at scrape time ``database_size_bytes{file}``,
``upstream_paused_seconds{upstream}``, ``upstream_breaker_open{upstream}``.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
from bisect import bisect_left
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Seconds between two flushes of a worker's request tallies into the shared files.
FLUSH_S = 1.0
#: Upper bounds (seconds) of the request latency histogram.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Upper bounds (seconds) of the import and job duration histograms.
LONG_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
#: Route label of a request that matched no route (keeps the label set bounded).
UNMATCHED = "<unmatched>"
_N_BUCKETS = len(LATENCY_BUCKETS) + 1  # + Inf
_FIRST_BUCKET = LATENCY_BUCKETS[0]


class _Metrics:
    """The Prometheus objects of this process (created by :func:`setup`, again by :func:`_recover`).

    They are registered in no registry (a scrape reads the files, :func:`render`); their values live
    in this process's files ``<directory>/<kind>_<pid>.db``, opened by the value class made here."""

    def __init__(self, directory: Path) -> None:
        from prometheus_client import Counter, Gauge, Histogram, values

        # the value class is normally chosen when prometheus_client is first imported; set it here
        # so that the order of imports cannot leave this process out of the shared files (a new one
        # each time: its files are opened anew, see _recover)
        values.ValueClass = self.value_class = values.MultiProcessValue()
        self.directory = directory
        #: a file of this process: gone when the directory was deleted or emptied while running
        self.own_file = directory / f"counter_{os.getpid()}.db"
        #: the directory could not be made again (logged once; retried at every flush)
        self.recover_failed = False
        r = None  # no registry
        self.requests = Counter("chessstats_http_requests_total", "HTTP requests answered, by route template, "
                                "method and status", ["route", "method", "status"], registry=r)
        self.latency = Histogram("chessstats_http_request_duration_seconds", "Time from routing to the response "
                                 "(seconds), by route template", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.cache = Counter("chessstats_cache_responses_total", "Answers by X-Cache: hit, miss, stale", ["result"],
                             registry=r)
        self.refused = Counter("chessstats_ratelimit_refused_total", "Requests refused by the inbound rate limit (429)",
                               registry=r)
        self.upstream_calls = Counter("chessstats_upstream_calls_total", "Upstream requests sent, by upstream and "
                                      "status class (none: no HTTP status, e.g. a timeout)", ["upstream", "status"],
                                      registry=r)
        self.upstream_429 = Counter("chessstats_upstream_429_total", "429 answers received from an upstream",
                                    ["upstream"], registry=r)
        self.upstream_pause = Counter("chessstats_upstream_pause_seconds_total", "Seconds of pause set after "
                                      "upstream 429s", ["upstream"], registry=r)
        self.upstream_background = Counter("chessstats_upstream_background_calls_total", "Upstream requests sent "
                                           "as background calls (jobs, imports, stale-while-revalidate refreshes), "
                                           "of chessstats_upstream_calls_total", ["upstream"], registry=r)
        self.upstream_refused = Counter("chessstats_upstream_refused_total", "Upstream calls refused by the gate "
                                        "without a request (paused, busy, breaker open)", ["upstream", "reason"],
                                        registry=r)
        self.imports = Counter("chessstats_imports_total", "Tournament imports finished, by outcome", ["outcome"],
                               registry=r)
        self.import_seconds = Histogram("chessstats_import_duration_seconds", "Duration of tournament imports "
                                        "(seconds), by outcome", ["outcome"], buckets=LONG_BUCKETS, registry=r)
        self.jobs = Counter("chessstats_job_runs_total", "Background job runs finished, by job and outcome",
                            ["job", "outcome"], registry=r)
        self.job_seconds = Histogram("chessstats_job_run_duration_seconds", "Duration of background job runs "
                                     "(seconds)", ["job"], buckets=LONG_BUCKETS, registry=r)
        self.worker_requests = Gauge("chessstats_worker_requests", "Requests answered by each live worker process "
                                     "since it started", multiprocess_mode="liveall", registry=r)
        #: answered requests by route label, method, status and X-Cache result (or None), since the last flush
        self.pending: dict[str, dict[str, dict[int, dict[str | None, int]]]] = {}
        #: per route label: [sum of seconds, count per latency bucket ..., count above the last bucket]
        self.pending_latency: dict[str, list[float]] = {}
        self.pending_refused = 0
        self.served = 0
        self.gates: list[Any] = []
        self.gate_seen: dict[tuple[str, str], float] = {}
        self._children: dict[tuple[str, str, int], Any] = {}


_m: _Metrics | None = None


def prepare_directory(directory: Path) -> None:
    """Empty (or create) the multiprocess directory; called once by the main process at start,
    before any worker writes to it.

    Raises:
        OSError: the directory cannot be made.
    """
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


#: Bytes reserved for this process's files (``<kind>_<pid>.db``): prometheus-client maps them and
#: writes new samples into the mapping, and a write to an unallocated page of a full disk kills the
#: process (SIGBUS); reserved blocks cannot run out. Sized for every route, job and outcome label
#: set with room to spare (an entry is about 300 bytes); a file that still outgrows it is extended
#: by prometheus-client without a reservation.
RESERVED_BYTES = {"counter": 128 * 1024, "histogram": 256 * 1024, "gauge_liveall": 8 * 1024}


def _reserve(directory: Path) -> None:
    """Create this process's files with their blocks allocated (see :data:`RESERVED_BYTES`).

    Raises:
        OSError: no space (the files are removed again) or the directory cannot be written.
    """
    made: list[Path] = []
    try:
        for kind, size in RESERVED_BYTES.items():
            path = directory / f"{kind}_{os.getpid()}.db"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            made.append(path)
            try:
                if os.fstat(fd).st_size < size:
                    os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
    except OSError:
        for path in made:
            with contextlib.suppress(OSError):
                path.unlink()
        raise


def setup(directory: Path) -> None:
    """Turn metrics on in this process, writing to ``directory`` (``PROMETHEUS_MULTIPROC_DIR``).

    Raises:
        OSError: the directory cannot be made, or its files cannot be reserved (full disk): metrics
            stay off in this process.
    """
    global _m
    if _m is not None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    _reserve(directory)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    _m = _Metrics(directory)


def enabled() -> bool:
    """Whether :func:`setup` ran in this process."""
    return _m is not None


def watch_gates(gates: Iterable[Any]) -> None:
    """Count the calls of these upstream gates (objects with ``name`` and ``stats()``)."""
    if _m is not None:
        _m.gates = [g for g in gates if g is not None]


# --- the request path --------------------------------------------------------------------------

def record_request(route: str, method: str, status: int, seconds: float, x_cache: str | None) -> None:
    """Tally one answered request (in memory; :func:`flush` moves it to the shared files).

    Args:
        route: the route label (``/api/tournaments/{tid}``) or :data:`UNMATCHED`.
        method: the HTTP method.
        status: the response status.
        seconds: time from routing to the response, seconds.
        x_cache: the answer's ``X-Cache`` in lower case (``hit``, ``miss``, ``stale``) or None.
    """
    m = _m
    if m is None:
        return
    # nested dicts, not one keyed by a (route, method, status, X-Cache) tuple: hashing and comparing
    # that tuple cost a request ~2,000 instructions, four lookups by str/int keys a few hundred
    try:
        by_status = m.pending[route][method]
    except KeyError:
        by_status = m.pending.setdefault(route, {}).setdefault(method, {})
    try:
        by_cache = by_status[status]
    except KeyError:
        by_cache = by_status[status] = {}
    try:
        by_cache[x_cache] += 1
    except KeyError:
        by_cache[x_cache] = 1
    try:
        hist = m.pending_latency[route]
    except KeyError:
        hist = m.pending_latency[route] = [0.0] * (_N_BUCKETS + 1)
    hist[0] += seconds
    if seconds <= _FIRST_BUCKET:  # most answers (a cache hit): no bisect
        hist[1] += 1
    else:
        hist[1 + bisect_left(LATENCY_BUCKETS, seconds)] += 1


def record_refused() -> None:
    """Tally one request refused by the inbound rate limit."""
    if _m is not None:
        _m.pending_refused += 1


# --- rare events ---------------------------------------------------------------------------------

def record_import(outcome: str, seconds: float) -> None:
    """Count one finished import attempt: ``outcome`` ``complete`` / ``failed`` / ``not_found``; seconds."""
    m = _m
    if m is None:
        return
    try:
        m.imports.labels(outcome).inc()
        m.import_seconds.labels(outcome).observe(max(0.0, seconds))
    except Exception:  # metrics never fail the work they count
        log.debug("import metric not recorded", exc_info=True)


def record_job(job: str, outcome: str, seconds: float) -> None:
    """Count one finished job run: ``outcome`` ``completed`` / ``failed`` / ``interrupted``; seconds."""
    m = _m
    if m is None:
        return
    try:
        m.jobs.labels(job, outcome).inc()
        m.job_seconds.labels(job).observe(max(0.0, seconds))
    except Exception:
        log.debug("job metric not recorded", exc_info=True)


# --- flushing ------------------------------------------------------------------------------------

_GATE_COUNTERS = (("responses429", "429"), ("pauseSeconds", "pause"), ("backgroundCalls", "background"),
                  ("refusedPaused", "paused"), ("refusedBusy", "busy"), ("refusedOpen", "open"))


def _recover(m: _Metrics) -> _Metrics:
    """The metrics of this process after its files were found gone (``<data dir>/metrics/`` deleted or
    emptied while the server runs): the directory made again, this process's files reserved anew and
    every value reopened in them (from zero: the counts the deleted files held are lost, and so are
    those flushed into them since), the tallies not flushed yet kept. Logged once per loss. When the
    directory cannot be made, ``m`` itself (logged once; the next flush tries again)."""
    global _m
    try:
        m.directory.mkdir(parents=True, exist_ok=True)
        _reserve(m.directory)
    except OSError as exc:
        if not m.recover_failed:
            m.recover_failed = True
            log.warning("metrics: %s was deleted and cannot be made again (%s): /metrics is unavailable in this "
                        "worker until it can", m.directory, exc.strerror or exc)
        return m
    fresh = _Metrics(m.directory)
    fresh.pending, fresh.pending_latency, fresh.pending_refused = m.pending, m.pending_latency, m.pending_refused
    fresh.served, fresh.gates, fresh.gate_seen = m.served, m.gates, m.gate_seen
    _m = fresh
    with contextlib.suppress(Exception):
        m.value_class.close_all_files()  # the deleted files' mappings
    log.warning("metrics: %s was deleted while the server ran; made it again: the counts of worker %d before "
                "now (and those of the other workers until each notices, within %g s) are lost",
                m.directory, os.getpid(), FLUSH_S)
    return fresh


def flush() -> None:
    """Move this process's tallies and its gates' new counts into the shared files (first making
    ``<data dir>/metrics/`` and this process's files again if they were deleted: :func:`_recover`)."""
    m = _m
    if m is None:
        return
    if not os.path.exists(m.own_file):  # one stat a second
        m = _recover(m)
    pending, m.pending = m.pending, {}
    latency, m.pending_latency = m.pending_latency, {}
    refused, m.pending_refused = m.pending_refused, 0
    requests: dict[tuple[str, str, int], int] = {}
    cache: dict[str, int] = {}
    for route, by_method in pending.items():
        for method, by_status in by_method.items():
            for status, by_cache in by_status.items():
                for x_cache, n in by_cache.items():
                    requests[route, method, status] = requests.get((route, method, status), 0) + n
                    if x_cache is not None:
                        cache[x_cache] = cache.get(x_cache, 0) + n
                    m.served += n
    for key, n in requests.items():
        child = m._children.get(key)
        if child is None:
            child = m._children[key] = m.requests.labels(key[0], key[1], str(key[2]))
        child.inc(n)
    for route, hist in latency.items():
        child = m.latency.labels(route)
        # one write per touched bucket instead of one observe() per request (private but long-stable
        # attributes of prometheus_client's Histogram: _sum and _buckets, one per upper bound)
        child._sum.inc(hist[0])
        for i, count in enumerate(hist[1:]):
            if count:
                child._buckets[i].inc(count)
    for result, n in cache.items():
        m.cache.labels(result).inc(n)
    if refused:
        m.refused.inc(refused)
    if pending:
        m.worker_requests.set(m.served)
    for gate in m.gates:
        try:
            stats = gate.stats()
        except Exception:
            continue
        name = gate.name
        for status, total in (stats.get("callsByStatus") or {}).items():
            _gate_delta(m, (name, "calls:" + status), total, m.upstream_calls.labels(name, status))
        for field, what in _GATE_COUNTERS:
            total = stats.get(field) or 0
            if what == "429":
                _gate_delta(m, (name, what), total, m.upstream_429.labels(name))
            elif what == "pause":
                _gate_delta(m, (name, what), total, m.upstream_pause.labels(name))
            elif what == "background":
                _gate_delta(m, (name, what), total, m.upstream_background.labels(name))
            else:
                _gate_delta(m, (name, what), total, m.upstream_refused.labels(name, what))


def _gate_delta(m: _Metrics, key: tuple[str, str], total: float, child: Any) -> None:
    last = m.gate_seen.get(key, 0)
    if total > last:
        child.inc(total - last)
    m.gate_seen[key] = total


def mark_worker_gone() -> None:
    """Drop this process's live gauges (at shutdown); its counters stay in the sums."""
    m = _m
    if m is None:
        return
    try:
        flush()
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), str(m.directory))
    except Exception:
        log.debug("metrics: cleanup at exit failed", exc_info=True)


# --- scraping ------------------------------------------------------------------------------------

class _ScrapeCollector:
    """Values read when scraped: database file sizes and each upstream's shared gate state."""

    def __init__(self, db_path: Path | None, gates: list[Any], db_size_bytes: int | None = None) -> None:
        self.db_path = db_path
        self.gates = gates
        self.db_size_bytes = db_size_bytes

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        size = GaugeMetricFamily("chessstats_database_size_bytes", "Size of the SQLite database files (bytes)",
                                 labels=["file"])
        if self.db_path is not None:
            for suffix, label in (("", "db"), ("-wal", "wal")):
                try:
                    size.add_metric([label], float(os.stat(str(self.db_path) + suffix).st_size))
                except OSError:
                    size.add_metric([label], 0.0)
        elif self.db_size_bytes is not None:  # the store on PostgreSQL: pg_database_size
            size.add_metric(["db"], float(self.db_size_bytes))
        yield size
        paused = GaugeMetricFamily("chessstats_upstream_paused_seconds", "Seconds left of the pause after an "
                                   "upstream 429 (shared by every worker)", labels=["upstream"])
        breaker = GaugeMetricFamily("chessstats_upstream_breaker_open", "1 while an upstream's circuit breaker is "
                                    "open or half-open", labels=["upstream"])
        for gate in self.gates:
            try:
                health = gate.health()
            except Exception:
                continue
            paused.add_metric([gate.name], float(health.get("pausedForS") or 0.0))
            breaker.add_metric([gate.name], 0.0 if health.get("breaker") == "closed" else 1.0)
        yield paused
        yield breaker


def render(db_path: Path | None, db_size_bytes: int | None = None) -> tuple[bytes, str]:
    """The scrape: every worker's samples merged, plus the scrape-time values. Returns
    ``(body, content type)``. ``db_path`` None: the store is not a SQLite file; ``db_size_bytes`` is
    then its size (PostgreSQL's ``pg_database_size``), reported as ``file="db"``.

    Raises:
        RuntimeError: metrics are off in this process.
        FileNotFoundError: ``<data dir>/metrics/`` was deleted and cannot be made again.
    """
    if _m is None:
        raise RuntimeError("metrics are off")
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    flush()  # makes the directory again if it was deleted
    m = _m
    if m is None or not m.directory.is_dir():
        raise FileNotFoundError(f"{m.directory} is missing and cannot be made")
    class Files(multiprocess.MultiProcessCollector):
        def collect(self) -> Iterable[Any]:
            # a file a worker is still creating (or a stray one) is skipped, not a failed scrape
            files = []
            for path in glob.glob(os.path.join(self._path, "*.db")):
                try:
                    if os.path.getsize(path) >= 8:
                        files.append(path)
                except OSError:
                    continue
            return self.merge(files, accumulate=True)

    registry = CollectorRegistry()
    Files(registry, path=str(m.directory))
    registry.register(_ScrapeCollector(db_path, m.gates, db_size_bytes))
    return generate_latest(registry), CONTENT_TYPE_LATEST
