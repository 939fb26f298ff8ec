"""Logging set-up (one line per record, UTC timestamps)."""

from __future__ import annotations

import logging
import time


def setup_logging(level: str = "info") -> None:
    """Configure the root logger once: ``2026-11-29T10:00:00Z INFO chessstats.x: message``."""
    formatter = logging.Formatter("%(asctime)sZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
