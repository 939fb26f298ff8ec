"""Local replay of the upstream chess APIs, for tests and benchmarks (stdlib only).

One HTTP/1.1 server on 127.0.0.1 hosts every upstream under a path prefix:

- ``/lichess/...`` replays the Lichess recordings in ``fixtures/lichess/`` (see ``fixtures/MANIFEST.md``).
  Configure the product with ``LICHESS_API_URL=<url>/lichess/api``.
- ``/fide/top_players/?limit=N``: GENERATED from the recorded FIDE page ``fixtures/fide/`` (see
  :func:`fide_top_players`); ``/fide/site/a_top.php?list=open``: that recorded page itself (the
  official site, which the product reaches at ``<FIDE_API_URL>/site`` when ``FIDE_API_URL`` is not
  its default); other ``/fide/...`` paths answer the Lichess-style 404.
  Configure the product with ``FIDE_API_URL=<url>/fide``.
- ``/chesscom/pub/...`` replays the Chess.com recordings in ``fixtures/chesscom/`` with their recorded
  headers (weak ETag, the non-HTTP-date Last-Modified): ``/player/{u}[/stats|/games/archives|/tournaments]``
  → player_{u}[_stats|_games_archives|_tournaments].json, ``/player/{u}/games/{YYYY}/{MM}[/pgn]`` →
  player_{u}_games_{YYYY}_{MM}.json|.pgn, ``/leaderboards``, ``/titled/{T}``, ``/tournament/{id}[/{r}[/{g}]]``.
  A request whose ``If-None-Match`` (or ``If-Modified-Since``) equals the recorded ETag (Last-Modified)
  answers 304 with no body (counted in ``not_modified`` and ``bytes_saved``). Any path of a user with a
  recorded player_{u}_*.404.json answers that 404 ``{code, message}`` envelope. Configure the product
  with ``CHESS_COM_API_URL=<url>/chesscom/pub``. ``max_in_flight`` holds the most requests under
  ``/chesscom/`` ever in progress at once.

Lichess routes, relative to ``/lichess`` (``{id}`` is case-sensitive, ``{u}`` is not):

- ``GET /api/tournament`` serves tournament_current.json; ``/api/tournament/{id}``: tournament_{id}.json.
- ``GET /api/tournament/{id}/results`` serves the first tournament_{id}_results*.ndjson.
- ``GET /api/tournament/{id}/games`` serves tournament_{id}_games*.ndjson or *.pgn. If both exist,
  NDJSON when ``Accept`` contains application/x-ndjson, else PGN (Lichess's default). If only one
  exists, it is served with its own Content-Type.
- ``GET /api/swiss/{id}[/results|/games]``: the same, with swiss_ files.
- ``GET /api/team/{team}/{kind}`` serves team_{team}_{kind}*.ndjson; ``/api/player``: player.json;
  ``/api/player/top/{nb}/{perf}``: player_top_{nb}_{perf}.json, else GENERATED from player.json's
  top 10 of that perf (:func:`leaderboard_from_top10`); ``/api/user/{u}[/rating-history]``:
  user_{u}.json or user_{u}_rating-history.json; ``/api/user/{u}`` without such a file: the entry of
  id {u} in a recorded users_by_ids_*.json (GENERATED: the recorded ``POST /api/users`` shape).
- ``POST /api/users`` (body ``id1,id2``): the entries of those ids in users_by_ids_*.json.
- ``GET /api/games/user/{u}`` serves games_user_{u}*.ndjson (``max`` keeps the first N lines).
- ``GET /api/fide/player/{id}[/ratings]``: fide_player_{id}.json or fide_player_{id}_ratings.json;
  ``GET /api/fide/player?q=X``: fide_player_search_X.json.
- ``GET /game/export/{id}`` serves game_export_{id}.json if ``Accept`` contains application/json, else
  the .pgn. game_export_{id}.404.json is served with status 404.
- ``POST /api/games/export/_ids`` (body ``id1,id2``) concatenates games_export_ids_{id}.ndjson|.pgn.
- ``nb`` (or ``max``) on an NDJSON route keeps the first N lines. Anything else answers 404
  ``{"error":"Not found"}`` (application/json), like Lichess.

NDJSON and PGN bodies are sent with ``Transfer-Encoding: chunked``, in fixed chunks of ``chunk_size``
bytes (default 700), so chunk boundaries fall inside records. JSON bodies get a Content-Length.
Recorded response headers from a ``.meta.json`` sidecar are replayed, except the hop-by-hop headers,
Date and Server.

Run ``python tests/replay.py [--port 0] [--fixtures DIR]`` to serve in the foreground. It prints
``REPLAY_URL=http://127.0.0.1:PORT`` and stops on SIGTERM or SIGINT. See ``ReplayUpstream`` for the
``/_replay/...`` control endpoints.
"""
from __future__ import annotations

import argparse
import contextlib
import email.utils
import functools
import json
import random
import re
import signal
import socket
import string
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

FIXTURES = Path(__file__).parent / "fixtures"
JSON, NDJSON, PGN = "application/json", "application/x-ndjson", "application/x-chess-pgn"
HTML = "text/html; charset=utf-8"
NOT_FOUND = (404, b'{"error":"Not found"}', JSON, {})
FAULT_KINDS = ("429", "429-retry", "429-date", "500", "html404", "html403", "html500", "slow", "trickle", "truncate",
               "drop", "badjson")
_EXT_TYPES = {".json": JSON, ".ndjson": NDJSON, ".pgn": PGN}
_SKIP_HEADERS = {"content-type", "content-length", "transfer-encoding", "connection", "date", "server"}
_DEFAULT_HEADERS = {"Access-Control-Allow-Origin": "*", "Vary": "Origin"}
# Synthetic pages. They are not recorded; they imitate Lichess's generic 404 page and an nginx 502.
_HTML_404 = (b'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Page not found'
             b' \xe2\x80\xa2 lichess.org</title></head><body><main class="page-small box box-pad">'
             b"<h1>404</h1><strong>Page not found!</strong></main></body></html>")
# A Cloudflare-style edge refusal (Chess.com's edge answers such pages to clients it cannot identify).
_HTML_403 = (b'<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title><meta http-equiv="Content-Type"'
             b' content="text/html; charset=UTF-8"></head><body><div class="main-wrapper" role="main"><h1>Access'
             b" denied</h1><p>You do not have access to this resource. Error code 1020. Cloudflare Ray ID:"
             b" 8f0c0a1b2c3d4e5f</p></div></body></html>")
_HTML_5XX = ("<html>\r\n<head><title>{0}</title></head>\r\n<body>\r\n<center><h1>{0}</h1></center>\r\n"
             "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


class ReplayUpstream:
    """Replay server for the upstream APIs. Usable as a context manager (``start`` / ``stop``).

    Attributes, once started: ``port`` (int), ``url`` (``http://127.0.0.1:PORT``) and ``lichess_url``
    (``url + "/lichess/api"``). Also:

    - ``counts``: dict mapping a request path (without query) to its number of requests. Requests to
      ``/_replay/...`` are not counted.
    - ``arrivals``: list of ``(epoch seconds, path)``, one per counted request, in arrival order (for
      measuring send rates).
    - ``last_headers``: dict mapping a path to the headers of its last request, as an
      ``http.client.HTTPMessage``. Lookups in it ignore case, e.g. ``.get("User-Agent")``.

    Out-of-process control, in JSON:

    - ``GET /_replay/counts`` returns ``{"total": n, "paths": {path: n}}``.
    - ``POST /_replay/reset`` does the same as ``reset``.
    - ``POST /_replay/fault`` takes ``{"path": regex, "kind": ..., **opts}`` and calls ``set_fault``.
    - ``POST /_replay/clear-faults`` calls ``clear_faults``.
    - ``POST /_replay/generate`` takes ``{"id", "nbPlayers", "nbGames", "seed"?}`` and registers
      ``generate_arena(...)``.
    """

    def __init__(self, fixtures_dir: Path | str = FIXTURES, port: int = 0, chunk_size: int = 700):
        self.fixtures_dir, self.chunk_size, self.port = Path(fixtures_dir), chunk_size, port
        lichess_dir = self.fixtures_dir / "lichess"
        self.files = {p.name: p.read_bytes() for p in sorted(lichess_dir.iterdir()) if p.is_file()}
        fide_dir = self.fixtures_dir / "fide"
        self.fide_files = {p.name: p.read_bytes() for p in sorted(fide_dir.iterdir())} if fide_dir.is_dir() else {}
        cc_dir = self.fixtures_dir / "chesscom"
        self.chesscom_files = {p.name: p.read_bytes() for p in sorted(cc_dir.iterdir())} if cc_dir.is_dir() else {}
        self.not_modified = 0
        self.bytes_saved = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.counts: dict[str, int] = {}
        self.arrivals: list[tuple[float, str]] = []
        self.last_headers: dict = {}
        self._faults: list[dict] = []
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def lichess_url(self) -> str:
        return self.url + "/lichess/api"

    def start(self) -> ReplayUpstream:
        """Bind 127.0.0.1 (port 0 means any free port) and serve from a daemon thread."""
        self._httpd = _Server(("127.0.0.1", self.port), _Handler)
        self._httpd.replay = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="replay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and any open keep-alive connection."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._httpd = None

    def __enter__(self) -> ReplayUpstream:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- test API --------------------------------------------------------------------------------
    def add(self, path: str, body: bytes, content_type: str) -> None:
        """Register or override the body of ``path``, a full path such as ``/lichess/api/tournament/X``."""
        with self._lock:
            self.routes[path] = (body, content_type)

    def total(self) -> int:
        """Total number of counted requests since the last ``reset``."""
        with self._lock:
            return sum(self.counts.values())

    def reset(self) -> None:
        """Clear ``counts``, ``arrivals``, ``last_headers``, ``not_modified``, ``bytes_saved`` and
        ``max_in_flight``. Faults and registered routes are kept."""
        with self._lock:
            self.not_modified = self.bytes_saved = self.max_in_flight = 0
            self.counts.clear()
            self.arrivals.clear()
            self.last_headers.clear()

    def set_fault(self, path_regex: str, kind: str, **opts) -> None:
        """Make matching requests fail. ``path_regex`` is searched (``re.search``) in the path without query.

        Kinds:

        - ``"429"``: status 429, body ``{"error":"Too many requests"}``, no Retry-After (like Lichess).
        - ``"429-retry"``: the same, with ``Retry-After: <seconds>`` (opts ``seconds``, default 60).
        - ``"429-date"``: the same, with ``Retry-After`` as an HTTP date ``seconds`` (default 60) ahead.
        - ``"500"``: status 500, body ``{"error":"Internal server error"}``.
        - ``"html404"``: 404 text/html "Page not found" page. This is how Lichess answers a missing
          User-Agent.
        - ``"html403"``: 403 text/html, a Cloudflare-style "Access denied" page (an edge refusing the client).
        - ``"html500"``: an nginx HTML error page (opts ``status``, default 502).
        - ``"slow"``: sleep ``seconds`` (default 2) before the normal answer.
        - ``"trickle"``: the normal answer, its body sent one byte every ``interval`` seconds (default
          0.2), until done or the client hangs up.
        - ``"truncate"``: send the body chunked but stop halfway through its last record (line or
          PGN game), then end the chunked body cleanly with the 0-chunk.
        - ``"drop"``: send the first ``bytes`` (default half) of the body chunked, then close the
          socket without the terminal chunk.
        - ``"badjson"``: 200 application/json whose body is not valid JSON.

        A fault applies to every matching request until ``clear_faults``. With ``times=N``, it
        applies only to the next N matching requests. The first matching fault wins.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if kind == "html500":
            HTTPStatus(int(opts.get("status", 502)))  # raises ValueError for an unknown status
        times = opts.pop("times", None)
        if times is not None and int(times) < 1:
            raise ValueError("times must be >= 1")
        times = None if times is None else int(times)
        with self._lock:
            self._faults.append({"re": re.compile(path_regex), "kind": kind, "opts": opts, "times": times})

    def clear_faults(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults.clear()

    # -- request handling ------------------------------------------------------------------------
    def _take_fault(self, path: str) -> dict | None:
        for fault in self._faults:
            if fault["re"].search(path):
                if fault["times"] is not None:
                    fault["times"] -= 1
                    if fault["times"] <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        path, query = unquote(url.path), parse_qs(url.query)
        length = int(h.headers.get("Content-Length") or 0)
        req_body = h.rfile.read(length) if length else b""
        if path.startswith("/_replay/"):
            return self._send(h, *self._control(method, path, req_body))
        with self._lock:
            self.counts[path] = self.counts.get(path, 0) + 1
            self.arrivals.append((time.time(), path))
            self.last_headers[path] = h.headers
            fault = self._take_fault(path)
            chesscom = path.startswith("/chesscom/")
            if chesscom:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            kind, opts = (fault["kind"], fault["opts"]) if fault else (None, {})
            if kind == "slow":
                time.sleep(float(opts.get("seconds", 2)))
            error = _fault_response(kind, opts)
            resp = error or self._route(method, path, query, h.headers.get("Accept", ""), req_body)
            if chesscom and not error and resp[0] == 200:
                resp = self._conditional(resp, h.headers)
        finally:
            if chesscom:
                with self._lock:
                    self.in_flight -= 1
        self._send(h, *resp, fault=None if error else kind, opts=opts)

    def _conditional(self, resp: tuple, headers) -> tuple:
        """304 (no body, the recorded headers) when the request's validators match the recorded ones."""
        status, body, ctype, sent = resp
        lowered = {k.lower(): v for k, v in sent.items()}
        etag, modified = lowered.get("etag"), lowered.get("last-modified")
        inm, ims = headers.get("If-None-Match"), headers.get("If-Modified-Since")
        if (etag and inm and inm == etag) or (not inm and modified and ims == modified):
            with self._lock:
                self.not_modified += 1
                self.bytes_saved += len(body)
            return 304, b"", ctype, sent
        return resp

    def _control(self, method: str, path: str, body: bytes) -> tuple:
        try:
            args = json.loads(body) if body else {}
            actions = {
                "/_replay/reset": self.reset,
                "/_replay/clear-faults": self.clear_faults,
                "/_replay/fault": lambda: self.set_fault(args.pop("path"), args.pop("kind"), **args),
                "/_replay/generate": lambda: {"paths": self._generate(args)},
            }
            if method == "GET" and path == "/_replay/counts":
                with self._lock:
                    out = {"total": sum(self.counts.values()), "paths": dict(self.counts)}
            elif method == "POST" and path in actions:
                out = {"ok": True, **(actions[path]() or {})}
            else:
                return NOT_FOUND
            return 200, json.dumps(out).encode(), JSON, {}
        except (ValueError, KeyError, TypeError, re.error) as e:
            return 400, json.dumps({"error": f"{type(e).__name__}: {e}"}).encode(), JSON, {}

    def _generate(self, args: dict) -> list[str]:
        data = generate_arena(args["id"], int(args["nbPlayers"]), int(args["nbGames"]),
                              int(args.get("seed", 0)), self.fixtures_dir)
        for path, (body, content_type) in data.items():
            self.add(path, body, content_type)
        return sorted(data)

    def _route(self, method: str, path: str, query: dict, accept: str, body: bytes) -> tuple:
        with self._lock:
            registered = self.routes.get(path)
        if registered:
            resp = (200, registered[0], registered[1], dict(_DEFAULT_HEADERS))
        elif path.startswith("/lichess/"):
            resp = self._lichess(method, path[len("/lichess"):].strip("/").split("/"), accept, body, query)
        elif path.startswith("/fide/"):
            resp = self._fide(path[len("/fide"):].strip("/").split("/"), query)
        elif path.startswith("/chesscom/pub/"):
            resp = self._chesscom(path[len("/chesscom/pub"):].strip("/").split("/"))
        else:
            resp = NOT_FOUND
        limit = (query.get("nb") or query.get("max") or [None])[0]
        if resp[0] == 200 and _media(resp[2]) == NDJSON and limit and limit.isdigit():
            lines = resp[1].splitlines(keepends=True)[: int(limit)]
            resp = (200, b"".join(lines), *resp[2:])
        return resp

    def _lichess(self, method: str, p: list[str], accept: str, body: bytes, query: dict | None = None) -> tuple:
        ndjson_first = NDJSON in accept
        if method == "POST":
            if p == ["api", "users"]:
                wanted = {i.strip().lower() for i in body.decode().replace("\n", ",").split(",") if i.strip()}
                found = [u for u in self._recorded_users() if u["id"] in wanted]
                return 200, json.dumps(found, separators=(",", ":")).encode(), JSON, dict(_DEFAULT_HEADERS)
            if p == ["api", "games", "export", "_ids"]:
                ext = ".ndjson" if ndjson_first else ".pgn"
                ids = body.decode().replace("\n", ",").split(",")
                parts = [self.files.get(f"games_export_ids_{i.strip()}{ext}", b"") for i in ids]
                return 200, b"".join(parts), _EXT_TYPES[ext], dict(_DEFAULT_HEADERS)
            return NOT_FOUND
        if p[:2] == ["game", "export"] and len(p) == 3:
            if f"game_export_{p[2]}.404.json" in self.files:
                return 404, self.files[f"game_export_{p[2]}.404.json"], JSON, {}
            return self._serve(f"game_export_{p[2]}", (".json", ".pgn") if JSON in accept else (".pgn", ".json"))
        if p[:1] != ["api"]:
            return NOT_FOUND
        p = p[1:]
        if p == ["tournament"]:
            return self._serve("tournament_current.json")
        if p[:1] in (["tournament"], ["swiss"]) and len(p) in (2, 3):
            stem = f"{p[0]}_{p[1]}"
            if len(p) == 2:
                return self._serve(stem + ".json")
            if p[2] == "results":
                return self._serve(stem + "_results", (".ndjson",), prefix=True)
            if p[2] == "games":
                exts = (".ndjson", ".pgn") if ndjson_first else (".pgn", ".ndjson")
                return self._serve(stem + "_games", exts, prefix=True)
        if p == ["player"]:
            return self._serve("player.json")
        if p[:2] == ["player", "top"] and len(p) == 4:
            recorded = self._serve(f"player_top_{p[2]}_{p[3]}.json")
            if recorded[0] == 200 or not p[2].isdigit():
                return recorded
            generated = leaderboard_from_top10(self.files["player.json"], p[3], int(p[2]))
            return NOT_FOUND if generated is None else (200, generated, JSON, dict(_DEFAULT_HEADERS))
        if p[:1] == ["team"] and len(p) == 3:
            return self._serve(f"team_{p[1]}_{p[2]}", (".ndjson",), prefix=True)
        if p[:1] == ["user"] and len(p) in (2, 3) and p[2:] in ([], ["rating-history"]):
            wanted = "_".join(["user", p[1], *p[2:]]).lower() + ".json"
            served = self._serve(next((n for n in self.files if n.lower() == wanted), wanted))
            if served[0] == 404 and len(p) == 2:  # GENERATED: the user's entry of a recorded POST /api/users
                user = next((u for u in self._recorded_users() if u["id"] == p[1].lower()), None)
                if user is not None:
                    return 200, json.dumps(user, separators=(",", ":")).encode(), JSON, dict(_DEFAULT_HEADERS)
            return served
        if p[:2] == ["games", "user"] and len(p) == 3:
            wanted = f"games_user_{p[2]}".lower()
            name = next((n for n in self.files if n.lower().startswith(wanted) and n.endswith(".ndjson")), None)
            return self._serve(name) if name else NOT_FOUND
        if p[:2] == ["fide", "player"] and len(p) == 2:
            q = ((query or {}).get("q") or [""])[0]
            return self._serve(f"fide_player_search_{q}.json")
        if p[:2] == ["fide", "player"] and len(p) in (3, 4) and p[3:] in ([], ["ratings"]):
            return self._serve("_".join(["fide_player", *p[2:]]) + ".json")
        return NOT_FOUND

    def _chesscom(self, p: list[str]) -> tuple:
        """Chess.com's Published-Data API from the recordings (file names as in fixtures/MANIFEST.md)."""
        files = self.chesscom_files
        if p[:1] == ["player"] and len(p) >= 2:
            user = p[1].lower()
            missing = next((n for n in files if n.startswith(f"player_{user}_") and n.endswith(".404.json")), None)
            if missing:
                return 404, files[missing], "application/json; charset=utf-8", {}
            if p[2:3] == ["games"] and len(p) in (5, 6) and p[3].isdigit():
                stem = f"player_{user}_games_{p[3]}_{p[4]}"
                return self._chesscom_file(stem + (".pgn" if p[5:] == ["pgn"] else ".json"))
            return self._chesscom_file("_".join(["player", user, *p[2:]]) + ".json")
        if p == ["leaderboards"]:
            return self._chesscom_file("leaderboards.json")
        if p[:1] == ["titled"] and len(p) == 2:
            return self._chesscom_file(f"titled_{p[1]}.json")
        if p[:1] == ["tournament"] and 2 <= len(p) <= 4:
            return self._chesscom_file("_".join(["tournament", *p[1:]]) + ".json")
        return 404, b'{"code":0,"message":"An internal error has occurred."}', "application/json; charset=utf-8", {}

    def _chesscom_file(self, name: str) -> tuple:
        body = self.chesscom_files.get(name)
        if body is None:
            return 404, b'{"code":0,"message":"Not found."}', "application/json; charset=utf-8", {}
        meta = self.chesscom_files.get(name + ".meta.json")
        ctype = "application/json; charset=utf-8"
        headers: dict = {}
        if meta is not None:
            recorded = json.loads(meta)["headers"]
            ctype = next((v[0] for k, v in recorded.items() if k.lower() == "content-type"), ctype)
            headers = {k: v[0] for k, v in recorded.items() if k.lower() not in _SKIP_HEADERS}
        elif name.endswith(".pgn"):
            ctype = "application/vnd.chess-pgn; charset=utf-8; charset=utf-8"
        return 200, body, ctype, headers

    def _recorded_users(self) -> list[dict]:
        """Every user of the recorded ``POST /api/users`` bodies (users_by_ids_*.json)."""
        return [u for n, b in self.files.items() if n.startswith("users_by_ids_") and n.endswith(".json")
                for u in json.loads(b)]

    def _fide(self, p: list[str], query: dict) -> tuple:
        """The community fide-api: ``/top_players/`` is GENERATED from the recorded FIDE page."""
        page = self.fide_files.get("ratings.fide.com_a_top_open.html")
        if p == ["site", "a_top.php"] and page is not None and (query.get("list") or [""])[0] == "open":
            return 200, page, HTML, {}
        if p == ["top_players"] and page is not None:
            limit = (query.get("limit") or ["100"])[0]
            rows = fide_top_players(page)[: int(limit) if limit.isdigit() else 100]
            return 200, json.dumps(rows).encode(), JSON, {}
        return NOT_FOUND

    def _serve(self, stem: str, exts: tuple[str, ...] = ("",), prefix: bool = False) -> tuple:
        """Serve the first fixture named ``stem + ext`` (or ``stem*ext`` with ``prefix``), in ``exts`` order."""
        for ext in exts:
            names = [n for n in self.files if n.endswith(ext) and not n.endswith(".meta.json")
                     and (n.startswith(stem) if prefix else n == stem + ext)]
            if names:
                name = names[0]
                return 200, self.files[name], _EXT_TYPES[Path(name).suffix], self._sidecar(name)
        return NOT_FOUND

    def _sidecar(self, name: str) -> dict:
        meta = self.files.get(name + ".meta.json")
        if meta is None:
            return dict(_DEFAULT_HEADERS)
        recorded = json.loads(meta)["headers"]
        return {k: v[0] for k, v in recorded.items() if k.lower() not in _SKIP_HEADERS}

    def _send(self, h, status, body, ctype, headers, fault=None, opts=None) -> None:
        if fault == "trickle":
            return _trickle(h, status, body, ctype, headers, float((opts or {}).get("interval", 0.2)))
        streaming = _media(ctype) in (NDJSON, PGN) or fault in ("truncate", "drop")
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        for key, value in headers.items():
            h.send_header(key, value)
        if not streaming:
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        if fault == "truncate":
            body = body[: _truncation_point(body, ctype)]
        elif fault == "drop":
            body = body[: int((opts or {}).get("bytes", max(1, len(body) // 2)))]
        batch = []
        for i in range(0, len(body), self.chunk_size):
            chunk = body[i : i + self.chunk_size]
            batch.append(b"%X\r\n%s\r\n" % (len(chunk), chunk))
            if len(batch) >= 64:  # fewer syscalls; the chunk framing on the wire is unchanged
                h.wfile.write(b"".join(batch))
                batch.clear()
        if fault != "drop":
            batch.append(b"0\r\n\r\n")
        h.wfile.write(b"".join(batch))
        if fault == "drop":
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)


def _trickle(h, status, body, ctype, headers, interval: float) -> None:
    """Send ``body`` (with its Content-Length) one byte every ``interval`` seconds; stop if the client leaves."""
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    for key, value in headers.items():
        h.send_header(key, value)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.flush()
    try:
        for i in range(len(body)):
            h.wfile.write(body[i : i + 1])
            h.wfile.flush()
            time.sleep(interval)
    except OSError:
        h.close_connection = True


def _fault_response(kind: str | None, opts: dict) -> tuple | None:
    """Return the response that replaces the normal one for ``kind``. Return None for slow, trickle,
    truncate, drop."""
    if kind in ("429", "429-retry", "429-date"):
        extra = {}
        if kind == "429-retry":
            extra = {"Retry-After": str(opts.get("seconds", 60))}
        elif kind == "429-date":
            extra = {"Retry-After": email.utils.formatdate(time.time() + float(opts.get("seconds", 60)), usegmt=True)}
        return 429, b'{"error":"Too many requests"}', JSON, extra
    if kind == "500":
        return 500, b'{"error":"Internal server error"}', JSON, {}
    if kind == "html404":
        return 404, _HTML_404, HTML, {}
    if kind == "html403":
        return 403, _HTML_403, HTML, {"CF-RAY": "8f0c0a1b2c3d4e5f-CDG"}
    if kind == "html500":
        status = HTTPStatus(int(opts.get("status", 502)))
        return status.value, _HTML_5XX.format(f"{status.value} {status.phrase}").encode(), HTML, {}
    if kind == "badjson":
        return 200, b'{"id":"broken","nbPlayers":12,"stats":{"games":', JSON, {}
    return None


def _media(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def _truncation_point(body: bytes, ctype: str) -> int:
    """Return an offset halfway through the last record: the last line, or the last PGN game."""
    end = len(body.rstrip(b"\n"))
    start = body.rfind(b"[Event ", 0, end) if _media(ctype) == PGN else body.rfind(b"\n", 0, end) + 1
    start = max(start, 0)
    return start + max(1, (end - start) // 2)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    replay: ReplayUpstream

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # client hang-ups are expected (faults, stop)
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "replay"
    timeout = 120  # seconds an idle keep-alive connection stays open

    def setup(self) -> None:
        super().setup()
        with self.server.replay._lock:
            self.server.replay._conns.add(self.connection)

    def finish(self) -> None:
        with self.server.replay._lock:
            self.server.replay._conns.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self.server.replay._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.replay._handle(self, "POST")

    def log_message(self, format, *args) -> None:
        pass


# -- generated data ------------------------------------------------------------------------------
_FIDE_ROW = re.compile(
    r'<tr>\s*<td><span class="rank_span">(?P<rank>[^<]*)</span></td>\s*'
    r'<td><a href=/profile/(?P<id>[^>]*)>(?P<name>[^<]*)</a></td>\s*'
    r'<td class="flag-wrapper">\s*(?:<img[^>]*>)?(?P<fed>[^<]*)</td>\s*'
    r'<td>(?P<rating>[^<]*)</td>', re.S)


def fide_top_players(page: bytes) -> list[dict]:
    """GENERATED fide-api ``/top_players/`` output from the recorded FIDE top-list fragment.

    Returns ``[{rank, name, fide_id, country, rating}]`` with every value a stripped string, as
    the fide-api scraper builds it (no recorded output of that service exists).
    """
    text = page.decode("utf-8")
    return [{"rank": m["rank"].strip(), "name": m["name"].strip(), "fide_id": m["id"].strip(),
             "country": m["fed"].strip(), "rating": m["rating"].strip()} for m in _FIDE_ROW.finditer(text)]


def leaderboard_from_top10(player_json: bytes, perf: str, nb: int) -> bytes | None:
    """GENERATED ``/api/player/top/{nb}/{perf}`` body: the recorded top-10 of ``perf`` from
    ``/api/player`` (player.json), cut to ``nb``, as ``{"users": [...]}``; None for an unknown perf."""
    users = json.loads(player_json).get(perf)
    if users is None:
        return None
    return json.dumps({"users": users[:nb]}, separators=(",", ":")).encode()


@functools.lru_cache(maxsize=4)
def _arena_template(fixtures_dir: Path) -> tuple[bytes, list[dict], list[list[bytes]]]:
    lichess = fixtures_dir / "lichess"
    info = (lichess / "tournament_sH24g2zH.json").read_bytes()
    rows = [json.loads(line) for line in (lichess / "tournament_sH24g2zH_results_sheet.ndjson").open("rb")]
    pgn = (lichess / "tournament_sH24g2zH_games.pgn").read_bytes()
    games = [block.split(b"\n") for block in pgn.strip(b"\n").split(b"\n\n\n")]
    return info, rows, games


def generate_arena(id: str, nb_players: int, nb_games: int, seed: int = 0,
                   fixtures_dir: Path | str = FIXTURES) -> dict[str, tuple[bytes, str]]:
    """Build a large FINISHED arena. The data is GENERATED, not recorded, from the shapes of arena sH24g2zH.

    Returns ``{path: (body, content_type)}`` for the three paths below. Each can be passed to
    ``ReplayUpstream.add``:

    - ``/lichess/api/tournament/{id}``: the recorded info JSON with the same keys and key order. Only
      ``id``, ``nbPlayers`` (= nb_players) and ``stats.games`` (= nb_games) change, and the
      podium/standing names become generated usernames.
    - ``/lichess/api/tournament/{id}/results``: NDJSON, nb_players lines. The recorded rows are reused
      cyclically (score, rating, performance, team, sheet) under usernames ``gen_p<N>``, sorted by
      score, with ranks 1..nb_players.
    - ``/lichess/api/tournament/{id}/games``: PGN, nb_games games. The recorded games are reused
      cyclically, so the SAN stays legal. Each game gets a unique 8-character Site id and a
      ``GameId`` tag, and White/Black become generated players. Every game ends with a blank line,
      and the stream ends with ``\\n\\n\\n``.

    The output is deterministic for a given ``seed``. Raises ValueError if nb_players < 2.
    """
    if nb_players < 2 or nb_games < 0:
        raise ValueError("an arena needs nb_players >= 2 and nb_games >= 0")
    info_bytes, rows, games = _arena_template(Path(fixtures_dir))
    rng = random.Random(seed)
    players = []
    for i in range(nb_players):
        row = dict(rows[i % len(rows)])
        row["username"] = f"gen_p{i + 1}"
        players.append(row)
    players.sort(key=lambda r: -r["score"])
    for rank, row in enumerate(players, 1):
        row["rank"] = rank  # the key keeps its first position
    results = b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for r in players)

    info = json.loads(info_bytes)
    info.update(id=id, nbPlayers=nb_players)
    info["stats"]["games"] = nb_games
    for entries in (info["podium"], info["standing"]["players"]):
        entries[:] = [e for e in entries if e["rank"] <= nb_players]
        for e in entries:
            e["name"] = players[e["rank"] - 1]["username"]
    info_body = json.dumps(info, ensure_ascii=False, separators=(",", ":")).encode()

    alphabet, seen, out = string.ascii_letters + string.digits, set(), []
    for g in range(nb_games):
        game_id = "".join(rng.choices(alphabet, k=8))
        while game_id in seen:
            game_id = "".join(rng.choices(alphabet, k=8))
        seen.add(game_id)
        white = g % nb_players
        black = (white + 1 + (g // nb_players) % (nb_players - 1)) % nb_players
        names = {b"[White ": players[white]["username"], b"[Black ": players[black]["username"]}
        lines = []
        for line in games[g % len(games)]:
            tag = line[:7]
            if line.startswith(b"[Site "):
                line = b'[Site "https://lichess.org/%s"]' % game_id.encode()
            elif tag in names:
                line = tag + b'"%s"]' % names[tag].encode()
            lines.append(line)
            if line.startswith(b"[Result "):
                lines.append(b'[GameId "%s"]' % game_id.encode())
        out.append(b"\n".join(lines) + b"\n\n\n")
    base = f"/lichess/api/tournament/{id}"
    return {base: (info_body, JSON), base + "/results": (results, NDJSON),
            base + "/games": (b"".join(out), PGN)}


def main(argv: list[str] | None = None) -> int:
    """CLI: serve in the foreground, print ``REPLAY_URL=...`` once, stop on SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--fixtures", type=Path, default=FIXTURES, help="fixtures directory")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with ReplayUpstream(args.fixtures, port=args.port) as server:
        print(f"REPLAY_URL={server.url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
