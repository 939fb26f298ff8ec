"""Entry point for ``python -m chessstats`` and for the frozen (PyInstaller) executable."""

import multiprocessing

from chessstats.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # a spawned worker of the frozen executable runs (and exits) here
    from chessstats._frozen import tie_to_bootloader

    tie_to_bootloader()  # frozen: the server never outlives the bootloader (see chessstats._frozen)
    raise SystemExit(main())
