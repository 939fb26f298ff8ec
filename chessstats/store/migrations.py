"""Numbered schema migrations, kept as Python data so the frozen executable needs no data files.

Each migration is ``(version, name, statements)``. Applied versions are recorded in
``schema_migrations``; :meth:`chessstats.store.db.Database.migrate` applies the missing ones in
order, each in its own transaction. Never edit a released migration: add a new one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

Migration = tuple[int, str, tuple[str, ...]]

MIGRATIONS: Final[tuple[Migration, ...]] = (
    (
        1,
        "initial",
        (
            # Tournaments of every platform. Times are ISO 8601 UTC text; clock in seconds.
            """CREATE TABLE tournaments (
                id INTEGER PRIMARY KEY,
                platform TEXT NOT NULL,
                external_id TEXT NOT NULL,
                system TEXT,
                name TEXT,
                status TEXT NOT NULL,
                perf_type TEXT,
                time_class TEXT,
                variant TEXT,
                clock_limit_s INTEGER,
                clock_increment_s INTEGER,
                rated INTEGER,
                starts_at TEXT,
                finishes_at TEXT,
                nb_players INTEGER,
                winner_username TEXT,
                winner_title TEXT,
                url TEXT,
                raw BLOB,
                fetched_at TEXT NOT NULL,
                imported_at TEXT,
                updated_at TEXT NOT NULL,
                UNIQUE (platform, external_id)
            )""",
            "CREATE INDEX tournaments_status_starts ON tournaments (status, starts_at DESC)",
            "CREATE INDEX tournaments_platform_starts ON tournaments (platform, starts_at DESC)",
            "CREATE INDEX tournaments_starts ON tournaments (starts_at DESC)",
            # Standings: one row per player, in rank order (position keeps upstream order on ties).
            """CREATE TABLE standings (
                tournament_id INTEGER NOT NULL REFERENCES tournaments (id) ON DELETE CASCADE,
                position INTEGER NOT NULL,
                rank INTEGER NOT NULL,
                username TEXT NOT NULL,
                title TEXT,
                rating INTEGER,
                score INTEGER,
                points REAL,
                tie_break REAL,
                performance INTEGER,
                team TEXT,
                PRIMARY KEY (tournament_id, position)
            ) WITHOUT ROWID""",
            # Players and their accounts on each platform (Lichess, Chess.com, FIDE).
            """CREATE TABLE players (
                id INTEGER PRIMARY KEY,
                name TEXT,
                fide_id INTEGER UNIQUE,
                federation TEXT,
                title TEXT,
                birth_year INTEGER,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            """CREATE TABLE player_accounts (
                id INTEGER PRIMARY KEY,
                player_id INTEGER REFERENCES players (id) ON DELETE SET NULL,
                platform TEXT NOT NULL,
                username TEXT NOT NULL,
                username_key TEXT NOT NULL,
                name TEXT,
                title TEXT,
                country TEXT,
                status TEXT,
                ratings BLOB,
                upstream_created_at TEXT,
                seen_at TEXT,
                url TEXT,
                raw BLOB,
                fetched_at TEXT NOT NULL,
                UNIQUE (platform, username_key)
            )""",
            "CREATE INDEX player_accounts_player ON player_accounts (player_id)",
            # Games; players by username (lower-cased key for lookups).
            """CREATE TABLE games (
                id INTEGER PRIMARY KEY,
                platform TEXT NOT NULL,
                external_id TEXT NOT NULL,
                tournament_id INTEGER REFERENCES tournaments (id) ON DELETE CASCADE,
                white_username TEXT,
                white_title TEXT,
                white_rating INTEGER,
                white_rating_diff INTEGER,
                black_username TEXT,
                black_title TEXT,
                black_rating INTEGER,
                black_rating_diff INTEGER,
                result TEXT NOT NULL,
                status TEXT,
                winner TEXT,
                variant TEXT,
                perf_type TEXT,
                time_class TEXT,
                rated INTEGER,
                initial_fen TEXT,
                eco TEXT,
                opening_name TEXT,
                moves TEXT,
                pgn TEXT,
                started_at TEXT,
                ended_at TEXT,
                url TEXT,
                UNIQUE (platform, external_id)
            )""",
            "CREATE INDEX games_tournament ON games (tournament_id, started_at DESC, id)",
            "CREATE INDEX games_white ON games (platform, lower(white_username), started_at DESC)",
            "CREATE INDEX games_black ON games (platform, lower(black_username), started_at DESC)",
            # Rating history: one point per account, rating pool and date (YYYY-MM-DD).
            """CREATE TABLE rating_points (
                account_id INTEGER NOT NULL REFERENCES player_accounts (id) ON DELETE CASCADE,
                perf_type TEXT NOT NULL,
                date TEXT NOT NULL,
                rating INTEGER NOT NULL,
                source TEXT NOT NULL,
                PRIMARY KEY (account_id, perf_type, date)
            ) WITHOUT ROWID""",
            # Leaderboard snapshots (entries as encoded JSON).
            """CREATE TABLE top_player_snapshots (
                id INTEGER PRIMARY KEY,
                platform TEXT NOT NULL,
                perf_type TEXT NOT NULL,
                taken_at TEXT NOT NULL,
                entries BLOB NOT NULL
            )""",
            "CREATE INDEX top_player_snapshots_lookup ON top_player_snapshots (platform, perf_type, taken_at DESC)",
            # Background job runs.
            """CREATE TABLE job_runs (
                id INTEGER PRIMARY KEY,
                job TEXT NOT NULL,
                state TEXT NOT NULL,
                trigger TEXT NOT NULL,
                attempt INTEGER NOT NULL DEFAULT 1,
                scheduled_for TEXT,
                queued_at TEXT NOT NULL,
                started_at TEXT,
                finished_at TEXT,
                duration_ms INTEGER,
                summary TEXT,
                error TEXT,
                retry_of INTEGER REFERENCES job_runs (id)
            )""",
            "CREATE INDEX job_runs_job ON job_runs (job, queued_at DESC)",
            "CREATE INDEX job_runs_state ON job_runs (state, queued_at DESC)",
        ),
    ),
    (
        2,
        "scheduler",
        (
            # Per job: the last cron tick the scheduler has accounted for (ISO 8601 UTC, ms).
            """CREATE TABLE scheduler_jobs (
                job TEXT PRIMARY KEY,
                last_tick TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            # One run per job and cron tick, whatever happens (exactly-once, enforced by SQLite).
            "CREATE UNIQUE INDEX job_runs_tick ON job_runs (job, scheduled_for) "
            "WHERE trigger IN ('schedule', 'catch-up')",
            "CREATE INDEX job_runs_due ON job_runs (state, scheduled_for)",
        ),
    ),
    (
        3,
        "imports",
        (
            # One row per tournament import: a background task recorded like a job run. ``state``:
            # queued, importing, complete, failed. The check compares what was stored with the
            # upstream's own counts; ``pending_games`` counts games whose status was not final yet
            # (refreshed at ``next_attempt_at`` until none is left). Times: ISO 8601 UTC.
            """CREATE TABLE imports (
                id INTEGER PRIMARY KEY,
                platform TEXT NOT NULL,
                external_id TEXT NOT NULL,
                state TEXT NOT NULL,
                trigger TEXT NOT NULL,
                attempt INTEGER NOT NULL DEFAULT 0,
                queued_at TEXT NOT NULL,
                started_at TEXT,
                finished_at TEXT,
                next_attempt_at TEXT,
                duration_ms INTEGER,
                expected_players INTEGER,
                expected_games INTEGER,
                stored_players INTEGER,
                stored_games INTEGER,
                skipped_games INTEGER,
                pending_games INTEGER NOT NULL DEFAULT 0,
                summary TEXT,
                error TEXT,
                UNIQUE (platform, external_id)
            )""",
            "CREATE INDEX imports_due ON imports (state, next_attempt_at)",
        ),
    ),
    (
        4,
        "players",
        (
            # When an account's rating history was last fetched (ISO 8601 UTC): refreshed at most monthly.
            "ALTER TABLE player_accounts ADD COLUMN history_fetched_at TEXT",
            # The perf types of that history in the upstream's order (JSON list: empty series are kept).
            "ALTER TABLE player_accounts ADD COLUMN history_perfs BLOB",
            # Which upstream an account's values came from (FIDE: ``lichess`` mirror or ``fide`` API).
            "ALTER TABLE player_accounts ADD COLUMN source TEXT",
            # FIDE's inactive flag (1/0; NULL when the upstream does not say).
            "ALTER TABLE player_accounts ADD COLUMN inactive INTEGER",
            "ALTER TABLE players ADD COLUMN sex TEXT",
        ),
    ),
    (
        5,
        "upstream_responses",
        (
            # The last 200 body of an upstream path with its validators, kept verbatim (the weak ETag
            # and Last-Modified, an opaque string on Chess.com): a refresh after a cache clear or a
            # restart is still a conditional request. ``checked_at``: epoch seconds of the last 200
            # or 304 (a 304 refreshes it without a new body).
            """CREATE TABLE upstream_responses (
                upstream TEXT NOT NULL,
                path TEXT NOT NULL,
                etag TEXT,
                last_modified TEXT,
                body BLOB NOT NULL,
                checked_at REAL NOT NULL,
                PRIMARY KEY (upstream, path)
            )""",
        ),
    ),
    (
        6,
        "read_docs",
        (
            # An imported tournament's answers kept encoded, so that a database read is one indexed
            # query that returns JSON bytes (no rows to models to JSON on every request). Written in
            # the import's own transaction (chessstats.store.tournaments.import_tournament), from the
            # rows it just stored; NULL / absent for a tournament imported before this migration (its
            # answers are then built from the rows, as before). ``detail``: the ``data`` of
            # GET /api/tournaments/{id} (the tournament, its first standings, importState complete);
            # ``standings_count``: how many standings rows it has; ``docs_imported_at``: the
            # ``imported_at`` of the import that wrote them (a re-import by a version without them,
            # after a downgrade, changes ``imported_at``: the documents are then ignored).
            "ALTER TABLE tournaments ADD COLUMN detail BLOB",
            "ALTER TABLE tournaments ADD COLUMN standings_count INTEGER",
            "ALTER TABLE tournaments ADD COLUMN docs_imported_at TEXT",
            # Its standings in chunks of 100 rows in rank order (chunk c: positions 100c..100c+99):
            # ``body`` the encoded rows joined by commas, ``ends`` where each row ends in ``body``
            # (uint32 little endian offsets), so that any page is sliced out of one or a few chunks.
            """CREATE TABLE standings_docs (
                tournament_id INTEGER NOT NULL REFERENCES tournaments (id) ON DELETE CASCADE,
                chunk INTEGER NOT NULL,
                body BLOB NOT NULL,
                ends BLOB NOT NULL,
                PRIMARY KEY (tournament_id, chunk)
            ) WITHOUT ROWID""",
        ),
    ),
    (
        7,
        "read_docs",
        (
            # An imported tournament's database-served answers, whole: ``body`` is the complete JSON
            # envelope of GET /api/tournaments/{id} (``part`` -1) or of its standings page ``part + 1``
            # with ``limit=100`` (``part`` c >= 0: positions 100c..100c+99), as a cache miss sends it
            # (``cached`` false, ``source`` database), with its ``etag``; ``ends``: where each standing
            # ends, counted from the first standing of the page (uint32 little endian), so that any
            # other page is sliced out of one or a few parts. ``total``: the standings count;
            # ``fetched_at`` / ``imported_at``: the tournament's, when written: a part is served only
            # while ``imported_at`` is still the tournament's (a re-import by a version without this
            # table changes it). A narrow rowid table read through ``tournaments_docs_key`` (which
            # covers the lookup of the tournament), so that a read never touches the tournament's
            # row (its upstream body overflows its page) nor walks a chunk's overflow pages through an
            # index b-tree (migration 6's WITHOUT ROWID chunks: 12.5 µs a page against 5.2).
            # Written by the import's own transaction (chessstats.store.tournaments.write_docs);
            # migration 6's documents are rewritten into it once, right after these statements.
            """CREATE TABLE read_docs (
                id INTEGER PRIMARY KEY,
                tournament_id INTEGER NOT NULL REFERENCES tournaments (id) ON DELETE CASCADE,
                part INTEGER NOT NULL,
                imported_at TEXT NOT NULL,
                fetched_at TEXT NOT NULL,
                total INTEGER NOT NULL,
                etag TEXT NOT NULL,
                ends BLOB,
                body BLOB NOT NULL,
                UNIQUE (tournament_id, part)
            )""",
            "CREATE INDEX tournaments_docs_key ON tournaments (platform, external_id, imported_at)",
            "CREATE INDEX imports_docs_key ON imports (platform, external_id, pending_games)",
        ),
    ),
)


#: The table of applied versions (SQLite's DDL; translated on PostgreSQL).
SCHEMA_MIGRATIONS_DDL: Final[str] = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


async def _rewrite_docs(conn: Any) -> None:
    """Migration 7's data step: rewrite every imported tournament's read documents (from its rows)
    into ``read_docs``, and drop migration 6's copies."""
    from chessstats.store.tournaments import rewrite_all_docs  # the store imports this module

    await rewrite_all_docs(conn)


#: Data steps run after a migration's statements, in the same transaction, by version.
AFTER: Final[dict[int, Callable[[Any], Awaitable[None]]]] = {7: _rewrite_docs}


async def apply_pending(conn: Any) -> list[int]:
    """Apply the migrations not yet recorded in ``schema_migrations``, in order, on ``conn`` (a write
    connection inside a transaction, of either engine: ``execute`` / ``execute_fetchall`` taking SQLite's
    SQL); returns the versions applied now."""
    await conn.execute(SCHEMA_MIGRATIONS_DDL)
    done = {row[0] for row in await conn.execute_fetchall("SELECT version FROM schema_migrations")}
    applied_now: list[int] = []
    for version, name, statements in MIGRATIONS:
        if version in done:
            continue
        for statement in statements:
            await conn.execute(statement)
        after = AFTER.get(version)
        if after is not None:
            await after(conn)
        await conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                           (version, name, datetime.now(UTC).isoformat()))
        applied_now.append(version)
    return applied_now


async def migrate_db(db: Any) -> list[int]:
    """Apply the pending migrations of ``db`` (a :class:`~chessstats.store.db.Database` or
    :class:`~chessstats.store.postgres.PostgresDatabase`) in one write transaction of that engine;
    returns the versions applied now (ascending). Raises what the engine's ``transaction`` raises
    (``StorageUnavailable`` on a storage fault)."""
    async with db.transaction() as conn:
        return await apply_pending(conn)


async def migration_status_of(db: Any) -> list[tuple[int, str, str | None]]:
    """Every known migration of ``db`` (either engine, as for :func:`migrate_db`) as ``(version, name,
    applied_at)``, in version order; ``applied_at`` is the ISO 8601 UTC time it was applied, None when
    it is pending."""
    rows = await db.fetchall("SELECT version, applied_at FROM schema_migrations")
    applied = {row[0]: row[1] for row in rows}
    return [(v, n, applied.get(v)) for v, n, _ in MIGRATIONS]
