"""Entry point for ``python -m chessstats`` and for the frozen (PyInstaller) executable."""

import multiprocessing

from chessstats.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    raise SystemExit(main())
