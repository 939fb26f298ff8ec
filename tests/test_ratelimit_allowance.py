"""Allowances (``chessstats.ratelimit``, "Allowances"): a client far from its limit claims part of what
is left for the rest of the second, spends it without touching the shared table, and gives back what
it did not spend; with one worker nothing of it shows, with several the limit still holds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from chessstats.config import load_config
from chessstats.ratelimit import CLAIM_MIN, CLAIM_SHARE, RateLimiter, Refusal, SharedWindows
from tests.test_ratelimit import (
    assert_both_workers_answered,
    assert_workers_answered,
    limited,
    remaining,
    settle,
    take_over,
)
from tests.test_ratelimit_inline import inlined


def counted(path: Path, client: str, now: float, workers: int = 1) -> int:
    """The client's general count in the table at ``path`` over ``workers`` columns, read without counting."""
    table = SharedWindows(path, 60, 300, columns_read=workers)
    try:
        words, t, g = table._words, table._find(*table.locate(client), now), int(now // 60)
        return sum(words[t + c + 1] for c in table._columns if words[t + c] == g)
    finally:
        table.close()


def two_workers(path: Path, limit: int) -> tuple[RateLimiter, RateLimiter]:
    """Two workers' limiters (columns 0 and 1) on the table at ``path``, at ``limit`` requests a minute."""
    config = load_config(None, env={"CHESSSTATS_RATELIMIT_MAX_REQUESTS": str(limit)})
    return (RateLimiter(config.ratelimit, path, column=0, workers=2),
            RateLimiter(config.ratelimit, path, column=1, workers=2))


def second_start(now: float) -> float:
    """A time early in a second of the window (an allowance lasts until the whole seconds left change)."""
    return int(now) + 0.01


def one_worker(path: Path, limit: int) -> tuple[RateLimiter, Any, list[int], float]:
    """One worker's limiter on the table at ``path`` at ``limit`` requests a minute, its inlined path
    (``guard`` and the list of its fallbacks to ``admit``: :func:`tests.test_ratelimit_inline.inlined`), and
    a time early in a second with the window's end 10 s away or more."""
    config = load_config(None, env={"CHESSSTATS_RATELIMIT_MAX_REQUESTS": str(limit)})
    limiter = RateLimiter(config.ratelimit, path)
    guard, fell = inlined(limiter)
    settle(60)
    return limiter, guard, fell, second_start(time.time())


def test_one_worker_spends_its_allowance_without_the_table_and_shows_every_count(tmp_path: Path) -> None:
    limiter, guard, fell, now = one_worker(tmp_path / "t", 10000)
    first = guard("192.0.2.1", now)  # admit: counted, and 9,999 // 8 = 1,249 more claimed
    claim = 9999 // CLAIM_SHARE
    assert remaining(first) == b"9999" and len(fell) == 1
    assert counted(tmp_path / "t", "192.0.2.1", now) == 1 + claim  # the allowance is counted at once
    answers = [guard("192.0.2.1", now) for _ in range(claim)]
    assert [int(remaining(a)) for a in answers] == list(range(9998, 9998 - claim, -1))  # one by one, exact
    assert len(fell) == 1  # spent inline: no call of admit
    assert counted(tmp_path / "t", "192.0.2.1", now) == 1 + claim  # and nothing written to the table
    # spent: the next request goes through admit, which counts it and claims again
    assert remaining(guard("192.0.2.1", now)) == b"%d" % (9998 - claim) and len(fell) == 2
    again = (9998 - claim) // CLAIM_SHARE
    assert counted(tmp_path / "t", "192.0.2.1", now) == 2 + claim + again
    for _ in range(10):
        guard("192.0.2.1", now)
    # the second ends: what was not spent is given back, the table holds the requests made
    assert limiter.release_claims(now + 0.5) == 0  # still this second: kept
    assert limiter.release_claims(now + 1) == 1
    assert counted(tmp_path / "t", "192.0.2.1", now + 1) == 2 + claim + 10
    assert remaining(guard("192.0.2.1", now + 1)) == b"%d" % (10000 - (3 + claim + 10))
    limiter.close()


def test_the_first_request_of_the_next_second_gives_every_allowance_back(tmp_path: Path) -> None:
    # without the 1-s task: a request of another client in the next second ends this second's allowances
    limiter, guard, fell, now = one_worker(tmp_path / "t", 10000)
    for _ in range(5):
        guard("192.0.2.1", now)
    assert counted(tmp_path / "t", "192.0.2.1", now) == 1 + 9999 // CLAIM_SHARE  # one counted, the rest claimed
    guard("192.0.2.1", now + 1)  # the next second: the inlined path sees it ended and falls back to admit,
    assert len(fell) == 2  # which gives the unspent 1,245 back, counts this request and claims anew
    assert counted(tmp_path / "t", "192.0.2.1", now + 1) == 6 + (10000 - 6) // CLAIM_SHARE
    guard("192.0.2.2", now + 1)  # another client, in the same second: the first one's allowance is kept
    assert counted(tmp_path / "t", "192.0.2.1", now + 1) == 6 + (10000 - 6) // CLAIM_SHARE
    # the second after, through the other client first: the first client's allowance is given back too
    guard("192.0.2.2", now + 2)
    assert counted(tmp_path / "t", "192.0.2.1", now + 2) == 6 and limiter._allowed.keys() == {"192.0.2.2"}
    limiter.close()


def test_no_allowance_near_the_limit_so_the_default_limit_counts_every_request(tmp_path: Path) -> None:
    # under CLAIM_MIN x CLAIM_SHARE x workers left nothing is claimed: the default 100 a minute never is
    config = load_config(None, env={})
    assert config.ratelimit.max_requests < CLAIM_MIN * CLAIM_SHARE
    limiter = RateLimiter(config.ratelimit, tmp_path / "t")
    guard, fell = inlined(limiter)
    settle(60)
    now = second_start(time.time())
    for i in range(5):
        guard("192.0.2.1", now)
        assert counted(tmp_path / "t", "192.0.2.1", now) == i + 1
    assert limiter._claims == {} and len(fell) == 1  # counted inline in the table after the first
    limiter.close()


def test_two_workers_never_allow_more_than_the_limit(tmp_path: Path) -> None:
    # two workers of one table answer a client in turn within one second: each claims for itself;
    # the other's unspent allowance counts as used, so together they never allow more than the limit
    limit = 2000
    a, b = two_workers(tmp_path / "t", limit)
    (guard_a, fell_a), (guard_b, fell_b) = inlined(a), inlined(b)
    settle(60)
    now = second_start(time.time())
    answers = [(guard_a if i % 3 else guard_b)("192.0.2.1", now) for i in range(30)]
    assert a._claims and b._claims  # both claimed
    answers += [(guard_a if i % 3 else guard_b)("192.0.2.1", now) for i in range(30, limit + 50)]
    allowed = [x for x in answers if type(x) is not Refusal]
    assert limit - 2 * (limit // (CLAIM_SHARE * 2)) <= len(allowed) <= limit
    assert all(int(remaining(x)) >= 0 for x in allowed)
    assert len(fell_a) + len(fell_b) < len(answers) // 4  # most were spent inline
    # the next second: both give back what they did not spend; the table then holds every request made
    # (the refused ones too: a client that keeps trying gets no more)
    a.release_claims(now + 1)
    b.release_claims(now + 1)
    assert counted(tmp_path / "t", "192.0.2.1", now + 1, workers=2) == len(answers)
    for x in (a, b):
        x.close()


def test_four_workers_never_allow_more_than_the_limit(tmp_path: Path) -> None:
    # four workers' limiters (columns 0-3) of one table answer a client in turn: each claims an eighth
    # of a quarter of what is left; together they never allow more than the limit, and once each has
    # given back what it did not spend the table holds exactly the requests made
    limit = 4000
    config = load_config(None, env={"CHESSSTATS_RATELIMIT_MAX_REQUESTS": str(limit)})
    workers = [RateLimiter(config.ratelimit, tmp_path / "t", column=c, workers=4) for c in range(4)]
    guards = [inlined(w) for w in workers]
    settle(60)
    now = second_start(time.time())
    answers = [guards[i % 4][0]("192.0.2.1", now) for i in range(8)]
    assert all(w._claims for w in workers)  # every worker claimed
    answers += [guards[i % 4][0]("192.0.2.1", now) for i in range(8, limit + 100)]
    allowed = [x for x in answers if type(x) is not Refusal]
    assert limit - 4 * (limit // (CLAIM_SHARE * 4)) <= len(allowed) <= limit
    assert sorted(int(remaining(x)) for x in allowed) == sorted(set(int(remaining(x)) for x in allowed))
    assert sum(len(fell) for _, fell in guards) < len(answers) // 4  # most were spent inline
    for w in workers:
        w.release_claims(now + 1)
    assert counted(tmp_path / "t", "192.0.2.1", now + 1, workers=4) == len(answers)
    for w in workers:
        w.close()


def test_refused_requests_count_and_an_unspent_allowance_is_given_back(tmp_path: Path) -> None:
    # within one second worker a claims, worker b is refused early because of it; a second later a
    # has given it back, but b's refused requests counted too: the window stays full
    limit = 400
    a, b = two_workers(tmp_path / "t", limit)
    guard_a, _ = inlined(a)
    guard_b, _ = inlined(b)
    settle(60)
    now = second_start(time.time())
    assert remaining(guard_a("192.0.2.1", now)) == b"399"
    claim = 399 // (CLAIM_SHARE * 2)
    assert claim >= CLAIM_MIN
    seen = [guard_b("192.0.2.1", now) for _ in range(limit)]
    allowed_b = sum(type(x) is not Refusal for x in seen)
    assert allowed_b == limit - 1 - claim  # a's allowance counted as used: refused that many early
    a.release_claims(now + 1)
    late = [guard_b("192.0.2.1", now + 1) for _ in range(limit)]
    # given back, but b's refused requests counted too (a client that keeps trying gets no more)
    assert sum(type(x) is not Refusal for x in late) == 0
    assert counted(tmp_path / "t", "192.0.2.1", now + 1, workers=2) == 1 + limit + limit
    for x in (a, b):
        x.close()


def test_an_allowance_is_void_when_its_slot_is_taken_over(tmp_path: Path) -> None:
    limiter, guard, fell, now = one_worker(tmp_path / "t", 10000)
    guard("192.0.2.1", now)
    assert limiter._claims
    other, t = take_over(limiter, "192.0.2.1", now)
    guard("192.0.2.1", now)  # spends the allowance (inline: no admit): nothing is written anywhere
    assert len(fell) == 1 and list(other._words[t + 2:t + 4]) == [int(now // 60), 1]
    assert limiter.release_claims(now + 1) == 1
    assert list(other._words[t + 2:t + 4]) == [int(now // 60), 1]  # not given back into the other's slot
    # the next admit sees the take-over: another slot, counted from its request on
    assert remaining(limiter.admit("192.0.2.1", None, False, now + 1)) == b"9999"
    assert list(other._words[t + 2:t + 4]) == [int(now // 60), 1]
    limiter.close()
    other.close()


def test_an_expensive_route_gives_the_allowance_back_first(tmp_path: Path) -> None:
    config = load_config(None, env={"CHESSSTATS_RATELIMIT_MAX_REQUESTS": "10000",
                                    "CHESSSTATS_RATELIMIT_EXPENSIVE_MAX_REQUESTS": "5000"})
    limiter = RateLimiter(config.ratelimit, tmp_path / "t")
    guard, _ = inlined(limiter)
    settle(60, 300)
    now = second_start(time.time())
    for _ in range(3):
        guard("192.0.2.1", now)
    verdict = limiter.admit("192.0.2.1", None, True, now)  # general 4 of 10,000; expensive 1 of 5,000
    assert remaining(verdict) == b"4999"
    assert limiter._claims == {} and counted(tmp_path / "t", "192.0.2.1", now) == 4
    limiter.close()


@pytest.mark.parametrize("workers", [2, 4])
def test_a_route_with_a_high_limit_counts_exactly_across_workers(start_server, workers: int) -> None:
    # a real server: allowances claimed by every worker are given back within about a second, after
    # which the table holds exactly the requests made (each worker's keep-alive connection included)
    server = start_server("--workers", str(workers), "--no-jobs", env=limited(100000))
    settle(60, margin_s=30)  # every count of this test within one window
    url = server.url + "/api/tournaments?limit=5"
    made = 0
    for _ in range(3 * workers):
        with httpx.Client(timeout=30) as client:  # new connections: the kernel spreads them over the workers
            for _ in range(50):
                r = client.get(url)
                assert r.status_code == 200
                made += 1
    if workers == 2:
        assert_both_workers_answered(server)  # (its /metrics requests are not under /api: not counted)
    else:
        assert_workers_answered(server, at_least=2)
    time.sleep(2.5)  # every allowance's second has ended and the release ran in every worker
    r = httpx.get(url, timeout=30)
    assert int(r.headers["ratelimit-remaining"]) == 100000 - made - 1
    # one keep-alive connection to one worker: every count shown, one by one
    with httpx.Client(timeout=30) as client:
        shown = [int(client.get(url).headers["ratelimit-remaining"]) for _ in range(40)]
    assert [x - y for x, y in zip(shown, shown[1:], strict=False)] == [1] * 39, shown
    # a stop gives back what the workers did not spend: a restart counts on from the requests made
    server.stop()
    again = start_server("--workers", str(workers), "--no-jobs", data_dir=server.data_dir, env=limited(100000))
    assert int(httpx.get(url.replace(server.url, again.url), timeout=30).headers["ratelimit-remaining"]) == \
        100000 - made - 1 - 40 - 1


def test_the_release_loop_gives_back_an_idle_workers_allowance_and_survives_a_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import logging

    from chessstats.api import observe

    limiter, guard, fell, _ = one_worker(tmp_path / "t", 10000)
    now = time.time()
    guard("192.0.2.1", now)  # counted, and an allowance claimed for the rest of this second
    assert counted(tmp_path / "t", "192.0.2.1", now) == 1 + 9999 // CLAIM_SHARE
    calls: list[str] = []
    real = limiter.release_claims

    def release_claims(when: float | None = None) -> int:
        calls.append("failed" if not calls else "ran")
        if len(calls) == 1:
            raise OSError(28, "No space left on device")  # the first call fails
        return real(when)

    monkeypatch.setattr(limiter, "release_claims", release_claims)
    monkeypatch.setattr(observe, "RELEASE_S", 0.05)

    async def run() -> None:
        task = asyncio.create_task(observe._release_loop(limiter))
        try:
            deadline = time.monotonic() + 5
            while counted(tmp_path / "t", "192.0.2.1", time.time()) > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not task.done()  # still running after the failure
        finally:
            task.cancel()

    with caplog.at_level(logging.ERROR, logger="chessstats.api.observe"):
        asyncio.run(run())
    assert calls[0] == "failed" and "ran" in calls
    assert counted(tmp_path / "t", "192.0.2.1", time.time()) == 1  # given back: the table holds the request made
    assert any("releasing allowances failed" in r.getMessage() and r.exc_info for r in caplog.records)
    assert len(fell) == 1
