"""HTTP layer: Sanic blueprints, one per route group; every body is built in :mod:`chessstats.api.envelope`."""
