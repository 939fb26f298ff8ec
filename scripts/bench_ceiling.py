"""The ceiling for ``scripts/bench``: a bare Sanic app that returns pre-encoded JSON bodies.

Each file ``<name>`` in the bodies directory (``$BENCH_CEILING_BODIES``) is served, byte for
byte, at ``GET /c/<name>`` with ``Content-Type: application/json``. The bench writes there the
exact body the product returned for the route being measured, so the ceiling answers with the
same number of bytes, on the same machine, with the same worker count and the access log off.
It is started the way ``chessstats serve`` starts (AppLoader + ``serve_single`` for one worker,
``Sanic.serve`` for several), so process layout is the same on both sides.

Usage: ``BENCH_CEILING_BODIES=DIR python scripts/bench_ceiling.py --port P [--workers N]``
"""

from __future__ import annotations

import argparse
import os
from functools import partial
from pathlib import Path

from sanic import HTTPResponse, Request, Sanic
from sanic.worker.loader import AppLoader


def create_app(bodies_dir: str) -> Sanic:
    app = Sanic("bench_ceiling", configure_logging=False)
    bodies = {p.name: p.read_bytes() for p in Path(bodies_dir).iterdir() if p.is_file()}

    @app.get("/c/<name:str>")
    async def body(request: Request, name: str) -> HTTPResponse:
        return HTTPResponse(bodies[name], content_type="application/json")

    @app.get("/health")
    async def health(request: Request) -> HTTPResponse:
        return HTTPResponse(b'{"status":"ok"}', content_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    bodies_dir = os.environ["BENCH_CEILING_BODIES"]
    loader = AppLoader(factory=partial(create_app, bodies_dir))
    app = loader.load()
    app.prepare(host="127.0.0.1", port=args.port, access_log=False, motd=False,
                single_process=args.workers == 1, workers=args.workers)
    if args.workers == 1:
        Sanic.serve_single(primary=app)
    else:
        Sanic.serve(primary=app, app_loader=loader)


if __name__ == "__main__":
    main()
