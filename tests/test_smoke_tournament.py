"""First end-to-end check: the recorded team battle through the real server."""

from tests.conftest import Server, imported
from tests.replay import ReplayUpstream


def test_finished_arena_imported_then_served_from_cache(server: Server, upstream: ReplayUpstream) -> None:
    first = server.client.get("/api/tournaments/sH24g2zH")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["success"] is True and body["source"] == "api" and body["cached"] is False
    assert first.headers["x-cache"] == "MISS"
    assert body["data"]["nbPlayers"] == 193
    imported(server, "sH24g2zH")  # the import runs in the background
    calls = upstream.total()
    second = server.client.get("/api/tournaments/sH24g2zH")
    assert second.headers["x-cache"] == "HIT" and second.json()["cached"] is True
    assert upstream.total() == calls
