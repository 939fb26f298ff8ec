"""What the one-file executable must carry that PyInstaller's import analysis cannot see.

One list, read by ``chessstats.spec`` (hiddenimports), by ``tests/test_frozen.py`` (each name
imports from source, so a typo fails) and by the hidden ``chessstats selfcheck`` command, which
imports every module and reads every data file inside the frozen binary and prints ``selfcheck OK``.

Why each entry is here (found by reading the libraries and by running the binary):

- Sanic: ``Sanic.serve`` with workers starts processes with the ``spawn`` method; each child
  unpickles ``sanic.worker.serve.worker_serve`` and an ``AppLoader`` by module name. The server
  protocol, HTTP/1 and the uvloop/httptools accelerators are chosen at run time.
  ``sanic/pages/styles/*.css`` is read from the package directory when ``sanic`` is imported.
  Sanic's "touchup" recompiles ``sanic.http.http1.Http`` (and friends) from their source at every
  start (``inspect.getsource``), so Sanic's ``.py`` files are shipped (module_collection_mode).
- uvloop / httptools: optional accelerators imported in ``try`` blocks; without them Sanic silently
  falls back to asyncio and the pure-Python parser (slower, no error), so they are checked here.
- msgspec: the C core plus the json/msgpack/structs submodules.
- httpx -> httpcore -> anyio: anyio imports its event-loop backend by name
  (``import_module(f"anyio._backends._{name}")``); httpcore picks its backend at run time.
- tracerite (Sanic's error pages) reads ``style.css`` / ``script.js`` with importlib.resources at
  import time; html5tagger calls ``importlib.metadata.version()`` at import time, so
  its dist-info metadata must be bundled.
- croniter -> dateutil; ``zoneinfo.ZoneInfo`` falls back to the ``tzdata`` package when the
  machine has no ``/usr/share/zoneinfo`` (minimal images), so tzdata and its data are bundled.
- python-chess: ``chess.pgn`` imports ``chess.variant`` inside a method (variant games).
- certifi: httpx's CA bundle (a data file).

Checked by building without the list (PyInstaller 6.22, contrib hooks 2026.9, Sanic 25.12): the
binary then fails at start on tracerite's missing ``style.css`` and on Sanic's touchup (no source),
and ``zoneinfo`` cannot find tzdata on a machine without system time zones. Every other module
here is found today by PyInstaller's own analysis and hooks (anyio, uvloop), and the metadata by
its scan of ``version("...")`` calls. They are listed anyway, so that a library moving an import
behind a name does not silently drop it, and ``selfcheck`` proves each one is inside.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys

#: Modules imported lazily (by name, inside functions, or in a spawned child): the spec's hiddenimports.
LAZY_IMPORTS: tuple[str, ...] = (
    # Sanic: multi-worker mode (spawn), server, protocol, HTTP/1, error pages.
    "sanic.worker.serve",
    "sanic.worker.loader",
    "sanic.worker.process",
    "sanic.worker.manager",
    "sanic.worker.multiplexer",
    "sanic.worker.state",
    "sanic.worker.restarter",
    "sanic.server.runners",
    "sanic.server.protocols.http_protocol",
    "sanic.server.loop",
    "sanic.http.http1",
    "sanic.pages.error",
    "sanic.errorpages",
    "sanic_routing",
    "uvloop",
    "uvloop.loop",
    "httptools",
    "httptools.parser.parser",
    "httptools.parser.url_parser",
    # multiprocessing (spawn children and the resource tracker run inside the frozen binary).
    "multiprocessing.spawn",
    "multiprocessing.resource_tracker",
    # msgspec
    "msgspec._core",
    "msgspec.json",
    "msgspec.msgpack",
    "msgspec.structs",
    # storage
    "aiosqlite",
    "sqlite3",
    # the store on PostgreSQL ([store] url): asyncpg's compiled protocol, sqlglot's dialects (imported by name)
    "asyncpg",
    "asyncpg.pgproto.pgproto",
    "asyncpg.protocol.protocol",
    "sqlglot",
    "sqlglot.dialects.sqlite",
    "sqlglot.dialects.postgres",
    "diskcache",
    "diskcache.core",
    # HTTP client stack
    "httpx",
    "httpcore",
    "httpcore._backends.auto",
    "httpcore._backends.anyio",
    "anyio",
    "anyio._backends._asyncio",
    "h11",
    "certifi",
    # scheduling and time zones
    "croniter",
    "dateutil.tz",
    "dateutil.relativedelta",
    "zoneinfo",
    "tzdata",
    # python-chess
    "chess",
    "chess.pgn",
    "chess.variant",
    # metrics (imported when the server starts with [metrics] enabled)
    "prometheus_client",
    "prometheus_client.core",
    "prometheus_client.multiprocess",
    "prometheus_client.mmap_dict",
    "prometheus_client.values",
    # Sanic's error pages
    "tracerite",
    "tracerite.html",
    "html5tagger",
)

#: Packages whose data files must be inside the binary (collect_data_files in the spec).
DATA_PACKAGES: tuple[str, ...] = ("sanic", "tracerite", "tzdata", "certifi")

#: Single data files of packages that are never imported (``collect_data_files(package, includes=...)``):
#: Swagger UI's page assets for ``GET /docs`` (the package's other 30 MB, its editor and source maps, stay out).
DATA_FILES: dict[str, tuple[str, ...]] = {
    "swagger_ui": ("static/swagger-ui-bundle.js", "static/swagger-ui.css", "static/LICENSE"),
}

#: Distributions whose metadata is read at import time (copy_metadata in the spec).
METADATA_PACKAGES: tuple[str, ...] = ("html5tagger",)


#: ``prctl`` option: the signal the kernel sends this process when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM, parent_pid: int | None = None) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    The server must never outlive its launcher: a worker whose manager was killed with ``kill -9``
    (or a frozen server whose bootloader was) would otherwise keep the port. If the parent is
    already gone when this runs (the race between the start of this process and this call: the
    parent pid then differs from ``parent_pid``, or from the parent seen before the call), ``sig``
    is sent now.

    Args:
        sig: the signal number (``SIGTERM``: shut down gracefully; ``SIGKILL``: at once).
        parent_pid: the pid the parent is expected to have; None means the current parent.

    Returns:
        True when the kernel accepted the request; False off Linux or when ``prctl`` is unavailable
        (nothing else happens then).
    """
    if not sys.platform.startswith("linux"):
        return False
    expected = os.getppid() if parent_pid is None else parent_pid
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != expected:  # the parent died before the request was in place
        os.kill(os.getpid(), sig)
    return True


def tie_to_bootloader() -> bool:
    """In the one-file executable, make the Python process die (SIGTERM) with the bootloader.

    PyInstaller's one-file bootloader is a separate process that unpacks the bundle and runs the
    Python process as its child; ``kill -9`` of the bootloader (the pid a supervisor knows) would
    leave the server running. The parent is taken for the bootloader only when it runs the same
    executable file (``/proc/<pid>/exe``), so a one-folder build or a server started from source
    is never tied to the shell that started it. Returns True when the tie is in place.
    """
    if not getattr(sys, "frozen", False) or not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        same = os.path.samefile(f"/proc/{parent}/exe", "/proc/self/exe")
    except OSError:
        return False
    return same and die_with_parent(signal.SIGTERM, parent)


def selfcheck() -> int:
    """Import every lazy module and read every bundled data file; print a line each. 0 when all are there."""
    failures = 0

    def check(what: str, fn) -> None:  # noqa: ANN001
        nonlocal failures
        try:
            detail = fn()
            print(f"ok   {what}{f' ({detail})' if detail else ''}")
        except Exception as exc:  # report every missing piece, not just the first
            failures += 1
            print(f"FAIL {what}: {type(exc).__name__}: {exc}")

    for name in LAZY_IMPORTS:
        check(f"import {name}", lambda name=name: importlib.import_module(name) and None)

    def tz() -> str:
        import zoneinfo
        from importlib.resources import files

        data = files("tzdata").joinpath("zoneinfo").joinpath("Europe").joinpath("Berlin").read_bytes()
        assert data.startswith(b"TZif"), "bad tzdata file"
        zoneinfo.ZoneInfo("Europe/Berlin")
        return "tzdata Europe/Berlin"

    def metadata() -> str:
        from importlib.metadata import version

        return ", ".join(f"{name} {version(name)}" for name in METADATA_PACKAGES)

    def certs() -> str:
        import os

        import certifi

        assert os.path.getsize(certifi.where()) > 1000
        return "cacert.pem"

    def pages() -> str:
        import tracerite.html
        from sanic.pages.css import CSS  # noqa: F401 - reads sanic/pages/styles at class creation

        assert tracerite.html.style and tracerite.html.javascript
        return "sanic styles, tracerite css/js"

    def loop() -> str:
        import httptools
        import uvloop

        return f"uvloop {uvloop.__version__}, httptools {httptools.__version__}"

    def sources() -> str:
        import inspect

        import sanic.http.http1
        import sanic.server.protocols.http_protocol

        from chessstats.api import ops

        for obj in (sanic.http.http1.Http, sanic.server.protocols.http_protocol.HttpProtocol, ops.health):
            inspect.getsource(obj)
        return "sanic touchup, route handlers"

    def docs_assets() -> str:
        from chessstats.api.docs import STATIC_FILES, static_dir

        folder = static_dir()
        assert folder is not None, "swagger_ui/static not found"
        for name in STATIC_FILES:
            assert (folder / name).stat().st_size > 10_000, name
        return ", ".join(STATIC_FILES)

    check("source files", sources)
    check("API docs assets", docs_assets)
    check("time zones", tz)
    check("distribution metadata", metadata)
    check("CA bundle", certs)
    check("error page assets", pages)
    check("event loop", loop)
    frozen = getattr(sys, "frozen", False)
    print(f"selfcheck {'OK' if not failures else f'FAILED ({failures})'} (frozen: {bool(frozen)})")
    return 0 if not failures else 1
