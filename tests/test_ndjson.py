"""NDJSON streams: records split across chunks, blank lines, truncated last record."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest

from chessstats.upstream.http import TruncatedStream, iter_ndjson
from tests.replay import FIXTURES

RESULTS = (FIXTURES / "lichess" / "tournament_sH24g2zH_results_sheet.ndjson").read_bytes()
decoder = msgspec.json.Decoder(dict)


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def collect(data: bytes, size: int) -> list[dict]:
    async def run() -> list[dict]:
        return [r async for r in iter_ndjson(chunks(data, size), decoder)]
    return asyncio.run(run())


@pytest.mark.parametrize("size", [1, 7, 64, 700, 4096, len(RESULTS)])
def test_records_split_across_chunks(size: int) -> None:
    rows = collect(RESULTS, size)
    assert len(rows) == 191 and [r["rank"] for r in rows] == list(range(1, 192))


def test_blank_lines_and_missing_final_newline() -> None:
    data = b"\n" + RESULTS.replace(b"\n", b"\n\n", 3) + b"\n\n"
    assert len(collect(data, 100)) == 191
    assert len(collect(RESULTS.rstrip(b"\n"), 100)) == 191  # a whole last record without newline is fine


@pytest.mark.parametrize("cut", [2, 40, 100])
def test_truncated_last_record_is_an_error(cut: int) -> None:
    with pytest.raises(TruncatedStream):
        collect(RESULTS[:-cut], 333)


def test_broken_record_in_the_middle_is_an_error() -> None:
    lines = RESULTS.split(b"\n")
    lines[5] = lines[5][:20]
    with pytest.raises(msgspec.DecodeError):
        collect(b"\n".join(lines), 500)


def test_truncated_pgn_export_is_an_error() -> None:
    from chessstats.upstream.pgn import parse_pgn_games

    text = (FIXTURES / "lichess" / "tournament_sH24g2zH_games.pgn").read_text(encoding="utf-8")
    with pytest.raises(TruncatedStream):
        parse_pgn_games(text[: len(text) // 2])
