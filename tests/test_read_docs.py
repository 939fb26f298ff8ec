"""Read documents (``read_docs``, migration 7): an imported tournament's detail and standings pages
stored whole by its import (envelope and ETag) and served by one quick indexed read, byte for byte
what building the models from the rows gives (the read path before them, still used for
tournaments imported without them)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import msgspec
import pytest

from chessstats import keys
from chessstats.config import load_config
from chessstats.models import Clock, Pagination, Standing, Tournament, TournamentPlayer
from chessstats.payload import encode_fields, envelope_body, envelope_etag, envelope_fields
from chessstats.resources import Resources
from chessstats.services.imports import DROP_AGAIN_AFTER_S, invalidate_tournament
from chessstats.store import Database
from chessstats.store import tournaments as store
from tests.conftest import imported
from tests.pg_store import connect_store, store_db
from tests.replay import ReplayUpstream

TEAM_BATTLE = "sH24g2zH"  # recorded finished arena: 191 standings rows
FETCHED = "2026-01-01T00:00:00Z"


def _arena(tid: str = "docs0001") -> Tournament:
    return Tournament(id=tid, platform="lichess", system="swiss", name='Swiss "é" \\ 🐴', status="finished",
                      perf_type="blitz", time_class="blitz", variant="standard", clock=Clock(limit=180, increment=2),
                      rated=True, starts_at="2026-01-01T00:00:00Z", finishes_at="2026-01-01T01:00:00Z",
                      nb_players=250, winner=TournamentPlayer(username="w", title="GM"), url="https://x/t")


def _standings(n: int, tag: str = "") -> list[Standing]:
    return [Standing(rank=i + 1, username=f"user{i}{tag}\n\"'<ü>", title="FM" if i % 7 == 0 else None,
                     rating=None if i % 11 == 0 else 1500 + i, score=None, points=(i % 9) / 2,
                     tie_break=None if i % 5 == 0 else i * 0.1 + 0.2, performance=1600 + i,
                     team="team-α" if i % 3 else None) for i in range(n)]


def _page_data(doc: store.StoredDoc, page: int, limit: int) -> bytes:
    """The standings array of a page document: sliced (``data``) or stored whole (``body``, checked
    against the envelope, pagination and ETag built from its own fields)."""
    if doc.body is None:
        assert doc.etag is None
        return doc.data
    fields = envelope_fields(doc.body)
    data, _, pagination = fields.removeprefix(b'"data":').rpartition(b',"pagination":')
    assert fields == store.standings_fields(data, page, limit, doc.total)
    assert msgspec.json.decode(pagination) == msgspec.to_builtins(Pagination.of(page, limit, doc.total))
    assert doc.body == envelope_body(fields, cached=False, source="database", stale=False, fetched_iso=FETCHED)
    assert doc.etag == envelope_etag(fields, FETCHED)
    return data


def test_standings_pages_and_detail_equal_the_rows_encoded(tmp_path: Path) -> None:
    """Every page cut (aligned, across chunks, past the end) equals the rows read and encoded; a page
    of 100 aligned on a chunk is the stored envelope itself, with its ETag."""
    async def run() -> None:
        async with store_db(tmp_path) as db:
            pk = await store.import_tournament(db, _arena(), b"{}", _standings(250), [], FETCHED)
            assert await db.fetchval("SELECT count(*) FROM read_docs WHERE tournament_id = ?", (pk,)) == 4
            checked = whole = 0
            for limit in (1, 7, 10, 99, 100, 101, 250, 500):
                for offset in (0, 1, 9, 10, 93, 99, 100, 101, 150, 199, 200, 249, 250, 251, 900):
                    doc = await store.get_standings_doc(db, "lichess", "docs0001", offset=offset, limit=limit)
                    assert doc is not None
                    rows, total = await store.get_standings(db, pk, offset=offset, limit=limit)
                    assert _page_data(doc, offset // limit + 1, limit) == msgspec.json.encode(rows), (offset, limit)
                    assert (doc.total, doc.fetched_at, doc.pending_games) == (total, FETCHED, None)
                    whole += doc.body is not None
                    checked += 1
            assert checked == 8 * 15 and whole == 3  # offsets 0, 100, 200 with limit 100
            stored = await store.get_tournament(db, "lichess", "docs0001")
            assert stored is not None
            first, _ = await store.get_standings(db, pk, offset=0, limit=10)
            detail = await store.get_detail_doc(db, "lichess", "docs0001")
            assert detail is not None
            model = msgspec.structs.replace(stored.tournament, standings=first, import_state="complete")
            assert detail.body is not None and envelope_fields(detail.body) == b'"data":' + msgspec.json.encode(model)
            assert detail.etag == envelope_etag(b'"data":' + msgspec.json.encode(model), FETCHED)
            assert await store.get_detail_doc(db, "lichess", "unknown1") is None
            assert await store.get_standings_doc(db, "lichess", "unknown1", offset=0, limit=10) is None
    asyncio.run(run())


def test_reimport_rewrites_the_documents_in_its_transaction(tmp_path: Path) -> None:
    """The documents follow the standings: a re-import replaces them (fewer chunks too); a failed
    re-import leaves the previous standings and documents, together."""
    async def run() -> None:
        async with store_db(tmp_path) as db:
            pk = await store.import_tournament(db, _arena(), b"{}", _standings(250), [], FETCHED)
            before = await store.get_standings_doc(db, "lichess", "docs0001", offset=0, limit=500)
            assert before is not None and before.total == 250

            async def boom(conn: object, pk: int) -> None:
                raise RuntimeError("the import record could not be written")
            with pytest.raises(RuntimeError):
                await store.import_tournament(db, _arena(), b"{}", _standings(40, "x"), [], FETCHED, after=boom)
            after_failure = await store.get_standings_doc(db, "lichess", "docs0001", offset=0, limit=500)
            assert after_failure is not None and after_failure.data == before.data and after_failure.total == 250
            assert before.data.count(b'"rank":') == 250

            again = await store.import_tournament(db, _arena(), b"{}", _standings(40, "x"), [], "2026-02-01T00:00:00Z")
            assert again == pk
            assert await db.fetchval("SELECT count(*) FROM read_docs WHERE tournament_id = ?", (pk,)) == 2
            doc = await store.get_standings_doc(db, "lichess", "docs0001", offset=0, limit=500)
            rows, total = await store.get_standings(db, pk, offset=0, limit=500)
            assert doc is not None and doc.data == msgspec.json.encode(rows) and "user0x" in doc.data.decode()
            assert (doc.total, total, doc.fetched_at) == (40, 40, "2026-02-01T00:00:00Z")
            detail = await store.get_detail_doc(db, "lichess", "docs0001")
            assert detail is not None and detail.body is not None
            assert msgspec.json.decode(detail.body)["data"]["standings"] == msgspec.to_builtins(rows[:10])
            assert msgspec.json.decode(detail.body)["fetchedAt"] == "2026-02-01T00:00:00Z"
            # a discovery upsert or a status update never touches an imported tournament, so never its documents
            await store.upsert_tournaments(db, [(msgspec.structs.replace(_arena(), name="other"), None)], FETCHED)
            assert await store.set_status(db, "lichess", "docs0001", "ongoing") is False
            assert (await store.get_detail_doc(db, "lichess", "docs0001")) == detail
            # re-imported by a version without documents (after a downgrade): they are ignored
            await db.execute_write("UPDATE tournaments SET imported_at = '2026-03-01T00:00:00Z'")
            assert await store.get_detail_doc(db, "lichess", "docs0001") is None
            assert await store.get_standings_doc(db, "lichess", "docs0001", offset=0, limit=10) is None
    asyncio.run(run())


@pytest.mark.sqlite_only
def test_quick_read_goes_to_the_reader_thread_when_sqlite_is_busy(tmp_path: Path) -> None:
    """A quick read never waits on the event loop: when SQLite answers busy at once (its WAL being
    recovered, another process's exclusive lock: not reproducible on demand, so the quick
    connection is replaced by one that answers busy), the read runs on aiosqlite's thread, which
    waits its busy timeout. Any other error is raised as it is."""
    class Busy:
        def __init__(self, code: int) -> None:
            self.code, self.calls = code, 0

        def execute(self, sql: str, params: object = ()) -> object:
            self.calls += 1
            exc = sqlite3.OperationalError("database is locked" if self.code == 5 else "no such table: x")
            exc.sqlite_errorcode = self.code  # type: ignore[attr-defined]
            raise exc

        def close(self) -> None:
            pass

    async def run() -> None:
        async with Database(tmp_path / "x.db") as db:
            await store.import_tournament(db, _arena(), b"{}", _standings(3), [], FETCHED)
            real = db._quick
            assert real is not None and [tuple(r) for r in await db.fetchall(
                "SELECT count(*) FROM standings", quick=True)] == [(3,)]
            db._quick = busy = Busy(5)  # type: ignore[assignment]
            rows = await db.fetchall("SELECT count(*) FROM standings", quick=True)
            assert busy.calls == 1 and [tuple(r) for r in rows] == [(3,)]
            assert (await store.get_detail_doc(db, "lichess", "docs0001")) is not None and busy.calls == 2
            db._quick = Busy(1)  # type: ignore[assignment]
            with pytest.raises(sqlite3.OperationalError, match="no such table"):
                await db.fetchall("SELECT 1", quick=True)
            db._quick = real
    asyncio.run(run())


@pytest.mark.sqlite_only
def test_quick_reads_of_one_loop_turn_run_in_one_batch(tmp_path: Path) -> None:
    """Quick reads started in the same loop turn run together at the next turn, each answered with
    its own rows; a read whose caller was cancelled is skipped; an error fails only its own read;
    a read queued when the database closes fails (it is not left waiting in a dead batch)."""
    async def run() -> None:
        async with Database(tmp_path / "x.db") as db:
            for i in range(3):
                await store.import_tournament(db, _arena(f"docs000{i}"), b"{}", _standings(5 + i), [], FETCHED)
            before = db.quick_batches, db.quick_reads
            details = await asyncio.gather(*(store.get_detail_doc(db, "lichess", f"docs000{i}") for i in range(3)))
            assert (db.quick_batches - before[0], db.quick_reads - before[1]) == (1, 3)
            for i, doc in enumerate(details):
                assert doc is not None and doc.total == 5 + i
                assert msgspec.json.decode(doc.body)["data"]["id"] == f"docs000{i}"
            quick = db._quick
            assert quick is not None and not quick.in_transaction  # the batch's snapshot is released

            # a snapshot left open (a batch that failed to end it) is never read from: the next batch
            # starts a new one and sees a write made since
            quick.execute("BEGIN")
            assert quick.execute("SELECT count(*) FROM tournaments").fetchall() == [(3,)]
            await store.import_tournament(db, _arena("docs0003"), b"{}", _standings(9), [], FETCHED)
            later = await asyncio.gather(*(store.get_detail_doc(db, "lichess", f"docs000{i}") for i in (0, 3)))
            assert later[1] is not None and later[1].total == 9 and not quick.in_transaction

            cancelled = asyncio.ensure_future(db.fetchall("SELECT count(*) FROM standings", quick=True))
            kept = asyncio.ensure_future(db.fetchall("SELECT count(*) FROM tournaments", quick=True))
            failing = asyncio.ensure_future(db.fetchall("SELECT * FROM no_such_table", quick=True))
            await asyncio.sleep(0)  # all three queued in one batch
            cancelled.cancel()
            reads = db.quick_reads
            assert [tuple(r) for r in await kept] == [(4,)]
            with pytest.raises(sqlite3.OperationalError, match="no such table"):
                await failing
            assert cancelled.cancelled() and db.quick_reads - reads == 2

        db = await Database(tmp_path / "x.db").open()
        late = asyncio.ensure_future(db.fetchall("SELECT 1", quick=True))
        await asyncio.sleep(0)
        await db.close()
        with pytest.raises((RuntimeError, sqlite3.ProgrammingError, ValueError)):
            await asyncio.wait_for(late, 5)
    asyncio.run(run())

    async def again() -> None:  # a new loop after one that stopped with a batch queued
        db = await Database(tmp_path / "x.db").open()
        try:
            queued = asyncio.ensure_future(db.fetchall("SELECT 1", quick=True))
            await asyncio.sleep(0)
            queued.cancel()
        finally:
            await db.close()
    asyncio.run(again())


@pytest.mark.sqlite_only
def test_a_read_from_before_a_reimport_is_dropped_again_after_it(tmp_path: Path) -> None:
    """A quick read whose batch took its snapshot just before a re-import's commit caches what it read
    one loop turn later, after the import's drop of the tournament's entries. The import drops them
    once more ``DROP_AGAIN_AFTER_S`` later, so the previous documents are not served for good."""
    async def run() -> None:
        config = load_config(None, env={"CHESSSTATS_DATA_DIR": str(tmp_path / "data")})
        res = await Resources.open(config, background=False)
        try:
            await store.import_tournament(res.db, _arena(), b"{}", _standings(3), [], FETCHED)
            key = keys.tournament("lichess", "docs0001")
            old = (await res.tournaments.get("docs0001")).body
            assert old is not None and b"Swiss" in old
            res.cache.evict_tag(keys.tournament_tag("lichess", "docs0001"))

            def reimported() -> None:  # the re-import's commit and its drop, between the batch and its reader
                with contextlib.closing(sqlite3.connect(res.db.path)) as conn, conn:
                    conn.execute("UPDATE read_docs SET body = "
                                 "CAST(replace(CAST(body AS TEXT), 'Swiss', 'Arena') AS BLOB)")
                invalidate_tournament(res.cache, "lichess", "docs0001", again_after_s=DROP_AGAIN_AFTER_S)

            reader = asyncio.ensure_future(res.tournaments.get("docs0001"))
            await asyncio.sleep(0)  # the reader's quick read is queued; its batch runs at the next turn
            asyncio.get_running_loop().call_soon(reimported)  # right after the batch, in the same turn
            assert (await reader).body == old  # read in the batch's snapshot, from before the write
            stale = res.cache.get(key)
            assert stale is not None and stale.fields in old  # cached after the drop: the race happened
            await asyncio.sleep(DROP_AGAIN_AFTER_S + 0.2)
            assert res.cache.get(key) is None
            new = (await res.tournaments.get("docs0001")).body
            assert new is not None and b"Arena" in new and b"Swiss" not in new
        finally:
            await res.aclose()
    asyncio.run(run())


def test_db_served_bodies_equal_the_bodies_built_from_rows(start_server: object, upstream: ReplayUpstream) -> None:
    """The recorded sH24g2zH, cache disabled (every answer read from SQLite): each detail and standings
    page served from the stored documents is the same body, byte for byte, and the same ETag, as
    the one built from the rows (the read path before the documents, served when they are absent)."""
    server = start_server(env={"CHESSSTATS_CACHE_ENABLED": "false"})  # type: ignore[operator]
    server.client.get(f"/api/tournaments/{TEAM_BATTLE}")
    imported(server, TEAM_BATTLE)
    paths = [f"/api/tournaments/{TEAM_BATTLE}"] + [
        f"/api/tournaments/{TEAM_BATTLE}/results?{q}"
        for q in ("limit=100", "page=2&limit=100", "limit=500", "page=3&limit=37", "page=20&limit=10",
                  "page=3&limit=100", "")]

    def fetch_all() -> list[tuple[bytes, str]]:
        out = []
        for path in paths:
            resp = server.client.get(path, headers={"Accept-Encoding": "identity"})
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert (resp.headers["x-cache"], body["source"], body["cached"]) == ("MISS", "database", False), path
            out.append((resp.content, resp.headers["etag"]))
        return out

    db = connect_store(server.data_dir, isolation_level=None)
    key = "(SELECT id FROM tournaments WHERE external_id = ?)"
    assert [tuple(r) for r in db.execute(f"SELECT part, total FROM read_docs WHERE tournament_id = {key} ORDER BY part",
                                         (TEAM_BATTLE,)).fetchall()] == [(-1, 191), (0, 191), (1, 191)]
    from_docs = fetch_all()
    saved = db.execute(f"SELECT imported_at FROM read_docs WHERE tournament_id = {key} AND part = -1",
                       (TEAM_BATTLE,)).fetchone()[0]
    db.execute(f"UPDATE read_docs SET imported_at = 'x' WHERE tournament_id = {key}",
               (TEAM_BATTLE,))  # as imported without them (before migration 7, or re-imported by such a version)
    from_rows = fetch_all()
    for path, (docs_body, docs_etag), (rows_body, rows_etag) in zip(paths, from_docs, from_rows, strict=True):
        assert docs_body == rows_body, path
        assert docs_etag == rows_etag, path
    data = msgspec.json.decode(from_docs[0][0])["data"]
    assert data["importState"] == "complete" and len(data["standings"]) == 10 and data["nbPlayers"] == 193
    page = msgspec.json.decode(from_docs[1][0])
    assert page["pagination"] == {"page": 1, "limit": 100, "total": 191, "totalPages": 2}
    assert [r["rank"] for r in page["data"]] == list(range(1, 101))
    assert msgspec.json.decode(from_docs[6][0])["data"] == []  # past the end
    assert [r["rank"] for r in msgspec.json.decode(from_docs[5][0])["data"]] == [191]  # the last, alone
    db.execute(f"UPDATE read_docs SET imported_at = ? WHERE tournament_id = {key}", (saved, TEAM_BATTLE))
    assert fetch_all() == from_docs
    db.close()


def test_encode_fields_of_raw_document_is_encode_fields_of_models() -> None:
    """The envelope fields of a stored document are those of the models it was encoded from."""
    rows = _standings(3)
    raw = msgspec.Raw(msgspec.json.encode(rows))
    assert encode_fields(raw, pagination=Pagination.of(1, 3, 3)) == encode_fields(rows,
                                                                                  pagination=Pagination.of(1, 3, 3))


def test_migration_7_rewrites_the_documents_of_tournaments_imported_before(tmp_path: Path) -> None:
    """A database whose tournaments were imported before ``read_docs`` existed (migration 6's
    documents, or none) gets theirs written by migration 7's data step, in its transaction: the
    answers are the same bytes, and migration 6's copies are dropped (both engines)."""
    async def run() -> None:
        async with store_db(tmp_path) as db:
            pk = await store.import_tournament(db, _arena(), b"{}", _standings(150), [], FETCHED)
            await store.import_tournament(db, _arena("docs0002"), b"{}", _standings(3), [], FETCHED)
            want = [await store.get_standings_doc(db, "lichess", "docs0001", offset=o, limit=100) for o in (0, 100)]
            want_detail = await store.get_detail_doc(db, "lichess", "docs0001")
            for statement in (  # back to version 6, with a migration-6 document
                "DROP TABLE read_docs", "DROP INDEX tournaments_docs_key", "DROP INDEX imports_docs_key",
                "DELETE FROM schema_migrations WHERE version = 7",
                "UPDATE tournaments SET detail = x'7b7d', standings_count = 150, docs_imported_at = imported_at",
                f"INSERT INTO standings_docs (tournament_id, chunk, body, ends) VALUES ({pk}, 0, x'7b7d', x'00000000')",
            ):
                await db.execute_write(statement)
            assert await db.fetchval("SELECT count(*) FROM standings_docs") == 1
        async with store_db(tmp_path) as db:
            assert [v for v, _, at in await db.migration_status() if at is not None][-1] == 7
            assert await db.fetchval("SELECT count(*) FROM read_docs") == 3 + 2
            assert await db.fetchval("SELECT count(*) FROM standings_docs") == 0
            assert await db.fetchval("SELECT count(*) FROM tournaments WHERE detail IS NOT NULL") == 0
            got = [await store.get_standings_doc(db, "lichess", "docs0001", offset=o, limit=100) for o in (0, 100)]
            assert got == want and (await store.get_detail_doc(db, "lichess", "docs0001")) == want_detail
    asyncio.run(run())
