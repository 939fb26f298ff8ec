"""The TTL cache on a real diskcache directory and on a real Redis (``make`` builds both): TTL,
permanence, no pickle, cross-process invalidation. The storage-fault tests are diskcache's own."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import diskcache
import msgspec
import pytest

import chessstats.cache as cache_module
from chessstats.cache import CacheEntry, TTLCache
from chessstats.cache_redis import RedisTTLCache
from chessstats.payload import Payload, encode_fields
from chessstats.redisconn import RedisBackend
from tests.fsfault import fill, remount, tmpfs
from tests.redis_server import redis_server

Make = Callable[..., Any]


@pytest.fixture(params=["diskcache", "redis"])
def make(request: pytest.FixtureRequest) -> Iterator[Make]:
    """``make(directory, **kw)``: a cache on the backend of the parameter. diskcache: ``TTLCache(directory)``
    (two caches on one dir are two workers); redis: a ``RedisTTLCache`` with its own connection on the
    test Redis (two caches are two processes or hosts; ``directory`` is ignored)."""
    if request.param == "diskcache":
        yield TTLCache
        return
    try:
        server = redis_server()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    server.flush()
    backends: list[RedisBackend] = []

    def build(directory: Path, **kwargs: Any) -> RedisTTLCache:
        backend = RedisBackend(server.url)
        backends.append(backend)
        return RedisTTLCache(backend, **kwargs)

    yield build
    for backend in backends:
        backend.close()


def stored(cache: Any, key: str) -> bytes | None:
    """The raw bytes the backend holds under ``key`` (diskcache file or Redis key)."""
    if isinstance(cache, RedisTTLCache):
        return cache.client.get(cache.backend.key("c:" + key))
    return diskcache.Cache(str(cache.directory)).get(key)


def plant(cache: Any, key: str, raw: bytes) -> None:
    """Store raw bytes under ``key`` behind the cache's back."""
    if isinstance(cache, RedisTTLCache):
        cache.client.set(cache.backend.key("c:" + key), raw)
    else:
        diskcache.Cache(str(cache.directory)).set(key, raw)


def payload(data: object) -> Payload:
    return Payload(encode_fields(data), source="api", fetched_at=1_700_000_000.0)


def test_miss_set_hit_and_ttl(tmp_path: Path, make: Make) -> None:
    cache = make(tmp_path / "c")
    assert cache.get("k") is None
    cache.set("k", payload({"a": 1}), ttl_s=300)
    hit = cache.get("k")
    assert hit is not None and (hit.cached, hit.source, hit.fields) == (True, "cache", b'"data":{"a":1}')
    assert hit.fetched_at == 1_700_000_000.0 and 299 <= hit.max_age_s() <= 300
    assert cache.get("k", now=time.time() + 301) is None  # expired, even from the memory layer
    assert (cache.hits, cache.misses) == (1, 2)


def test_permanent_entries_and_values_are_msgpack_not_pickle(tmp_path: Path, make: Make) -> None:
    cache = make(tmp_path / "c")
    cache.set("k", payload([1, 2]), ttl_s=None)
    assert cache.get("k", now=time.time() + 10 * 365 * 86400) is not None
    raw = stored(cache, "k")
    assert isinstance(raw, bytes)
    entry = msgspec.msgpack.decode(raw, type=CacheEntry)
    assert entry.expires_at is None and entry.fields == b'"data":[1,2]'


def test_clear_in_one_process_drops_memory_copies_in_another(tmp_path: Path, make: Make) -> None:
    worker_a, worker_b = make(tmp_path / "c"), make(tmp_path / "c")
    worker_a.set("k", payload(1), ttl_s=None)
    assert worker_b.get("k") is not None  # now in b's memory layer
    time.sleep(0.11)
    assert worker_a.clear() == 1
    assert worker_b.get("k") is None
    worker_a.set("k2", payload(2), ttl_s=None)
    worker_b.get("k2")
    time.sleep(0.11)
    assert worker_a.delete("k2") is True
    assert worker_b.get("k2") is None
    worker_a.set("k3", payload("old"), ttl_s=None)
    assert worker_b.get("k3").fields == b'"data":"old"'  # type: ignore[union-attr]
    time.sleep(0.11)
    worker_a.set("k3", payload("new"), ttl_s=None)  # a refresh replaces the entry
    assert worker_b.get("k3").fields == b'"data":"new"'  # type: ignore[union-attr]


def test_pattern_invalidation_and_disabled_cache(tmp_path: Path, make: Make) -> None:
    cache = make(tmp_path / "c")
    for key in ("tournament:lichess:a", "tournament:lichess:b", "results:lichess:a:1:100"):
        cache.set(key, payload(key), ttl_s=None)
    assert cache.delete_pattern("tournament:*") == 2
    assert cache.get("results:lichess:a:1:100") is not None
    off = make(tmp_path / "off", enabled=False)
    off.set("k", payload(1), ttl_s=None)
    assert off.get("k") is None


def test_undecodable_entry_is_a_miss(tmp_path: Path, make: Make) -> None:
    cache = make(tmp_path / "c")
    plant(cache, "k", b"\xc1 not msgpack")
    assert cache.get("k") is None


# --- stale window, tags, add ---------------------------------------------------------------------


def test_stale_window_get_stale_and_permanent(tmp_path: Path, make: Make) -> None:
    cache = make(tmp_path / "c")
    p = payload({"a": 1})
    cache.set("k", p, ttl_s=1, stale_s=60)
    assert p.expires_at is not None and abs(p.expires_at - (time.time() + 1)) < 1
    fresh = cache.get_stale("k")
    assert fresh is not None and fresh.stale is False and fresh.cached is True
    later = time.time() + 5
    assert cache.get("k", now=later) is None  # get: fresh entries only
    stale = cache.get_stale("k", now=later)
    assert stale is not None
    assert (stale.stale, stale.cached, stale.source, stale.fields) == (True, True, "cache", b'"data":{"a":1}')
    assert stale.fetched_at == 1_700_000_000.0 and stale.expires_at == p.expires_at
    assert "k" not in cache._memory  # a stale payload never enters the memory layer
    assert stored(cache, "k") is not None  # kept on disk (in Redis) for ttl + stale
    # past ttl + stale the entry is gone from disk too
    cache.set("short", payload(1), ttl_s=0.05, stale_s=0.1)
    time.sleep(0.2)
    assert cache.get_stale("short") is None and cache.get("short") is None
    # permanent entries: expires_at None, returned by both
    cache.set("perm", payload(2), ttl_s=None, stale_s=10)
    assert cache.get_stale("perm").expires_at is None  # type: ignore[union-attr]
    assert cache.get_stale("absent") is None


def test_evict_tag_removes_tagged_entries_in_every_worker(tmp_path: Path, make: Make) -> None:
    worker_a, worker_b = make(tmp_path / "c"), make(tmp_path / "c")
    worker_a.set("t:1", payload(1), ttl_s=None, tag="tournament:x")
    worker_a.set("t:2", payload(2), ttl_s=300, stale_s=60, tag="tournament:x")
    worker_a.set("t:3", payload(3), ttl_s=None, tag="tournament:y")
    worker_a.set("t:4", payload(4), ttl_s=None)
    if isinstance(worker_a, TTLCache):
        assert diskcache.Cache(str(tmp_path / "c")).get("t:1", tag=True) == (
            diskcache.Cache(str(tmp_path / "c")).get("t:1"), "tournament:x")
    assert worker_b.get("t:1") is not None  # in b's memory layer
    time.sleep(0.11)
    assert worker_a.evict_tag("tournament:x") == 2
    assert worker_b.get("t:1") is None and worker_b.get_stale("t:2") is None
    assert worker_b.get("t:3") is not None and worker_b.get("t:4") is not None
    assert worker_a.evict_tag("tournament:x") == 0 and worker_a.evict_tag("nothing") == 0


def test_add_first_writer_wins_across_workers(tmp_path: Path, make: Make) -> None:
    worker_a, worker_b = make(tmp_path / "c"), make(tmp_path / "c")
    first = payload("a")
    assert worker_a.add("marker", first, ttl_s=0.2) is True
    assert first.expires_at is not None
    assert worker_b.add("marker", payload("b"), ttl_s=0.2) is False
    assert worker_b.get("marker").fields == b'"data":"a"'  # type: ignore[union-attr]
    time.sleep(0.25)  # expired: the next writer wins
    assert worker_b.add("marker", payload("b"), ttl_s=None) is True
    assert worker_a.get("marker").fields == b'"data":"b"'  # type: ignore[union-attr]
    assert make(tmp_path / "off", enabled=False).add("m", payload(1), ttl_s=1) is False


# --- storage faults: the cache never raises -----------------------------------------------------


@pytest.mark.files_only("diskcache's own files and faults")
def test_corrupt_db_at_open_is_recreated(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    TTLCache(directory).set("k", payload(1), ttl_s=None)
    (directory / "cache.db").write_bytes(b"this is not a sqlite database " * 200)
    for suffix in ("-wal", "-shm"):
        (directory / f"cache.db{suffix}").unlink(missing_ok=True)
    cache = TTLCache(directory)
    assert cache.get("k") is None  # the old entries went with the corrupt file
    cache.set("k", payload(2), ttl_s=None)
    assert cache.get("k").fields == b'"data":2'  # type: ignore[union-attr]
    assert TTLCache(directory, memory_entries=0).get("k") is not None


@pytest.mark.files_only("diskcache's own files and faults")
def test_corrupt_db_while_running_is_rebuilt(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    cache = TTLCache(directory, memory_entries=0)
    for i in range(200):
        cache.set(f"k{i}", payload("v" * 500), ttl_s=None)
    cache._disk._sql("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]  # noqa: SLF001
    with open(directory / "cache.db", "r+b") as f:  # garbage over the open db
        f.write(b"\xde\xad\xbe\xef" * 8192)
    assert [cache.get(f"k{i}") for i in range(5)] == [None] * 5  # misses, never an error
    assert cache.errors == 1 and cache.last_error is None and cache.healthy  # rebuilt at once
    cache.set("after", payload("ok"), ttl_s=None)
    assert cache.get("after") is not None
    assert TTLCache(directory, memory_entries=0).get("after") is not None  # a sound db on disk


@pytest.mark.files_only("diskcache's own files and faults")
def test_deleted_dir_while_running(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    cache, other = TTLCache(directory), TTLCache(directory)
    cache.set("k", payload(1), ttl_s=None)
    assert other.get("k") is not None
    shutil.rmtree(directory)
    assert cache.clear() >= 0  # no error although the dir is gone
    assert cache.delete("k") is False
    assert cache.delete_pattern("*") == 0
    assert cache.evict_tag("t") == 0
    time.sleep(0.11)
    assert other.get("k") is None  # the other worker dropped its memory copy
    cache.set("k2", payload(2), ttl_s=None)
    assert (directory / "cache.db").exists()
    time.sleep(0.11)
    assert other.get("k2") is not None and cache.get("k2") is not None  # both on the recreated db
    shutil.rmtree(directory)
    time.sleep(0.11)
    assert cache.get("k2") is None  # a lookup notices and recreates it
    cache.set("k3", payload(3), ttl_s=None)
    assert cache.get("k3") is not None and (directory / "cache.db").exists()


@pytest.mark.files_only("diskcache's own files and faults")
def test_timeout_is_a_counted_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = TTLCache(tmp_path / "c", memory_entries=0)
    cache.set("k", payload(1), ttl_s=None)

    def timeout(*args: object, **kwargs: object) -> None:
        raise diskcache.Timeout

    cache._disk.get = timeout  # type: ignore[union-attr,method-assign]  # noqa: SLF001
    cache._disk.set = timeout  # type: ignore[union-attr,method-assign]  # noqa: SLF001
    with caplog.at_level(logging.WARNING, logger="chessstats.cache"):
        for _ in range(20):
            assert cache.get("k") is None
            cache.set("k", payload(2), ttl_s=None)
    assert cache.errors == 40 and not cache.healthy and "timeout" in (cache.last_error or "")
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1  # once per burst
    assert cache.stats()["errors"] == 40


@pytest.mark.files_only("diskcache's own files and faults")
def test_full_disk(tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "REOPEN_INTERVAL_S", 0.05)
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        cache = TTLCache(mnt / "c")
        cache.set("old", payload("old"), ttl_s=None)
        filler = fill(mnt)
        big = payload("x" * 300_000)
        with caplog.at_level(logging.WARNING, logger="chessstats.cache"):
            for i in range(10):
                cache.set(f"big{i}", big, ttl_s=None)  # never raises
        assert cache.get("big0") is None
        assert cache.errors >= 1 and not cache.healthy and cache.last_error == "write: disk full"
        assert not cache.check()
        assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1
        assert cache.get("old") is not None  # reads still work
        cache.delete("old")  # removing on a full disk: the entry is gone either way
        assert cache.get("old") is None and TTLCache(mnt / "c", memory_entries=0).get("old") is None
        assert cache.clear() >= 0
        filler.unlink()  # space comes back: no restart needed
        time.sleep(0.06)
        cache.set("big0", big, ttl_s=None)
        assert cache.get("big0") is not None and cache.healthy and cache.last_error is None
        cache.close()


@pytest.mark.files_only("diskcache's own files and faults")
def test_read_only_file_system(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        cache = TTLCache(mnt / "c")
        cache.set("k", payload(1), ttl_s=None)
        cache.close()
        if not remount(mnt, "ro"):
            pytest.skip("cannot remount the tmpfs read-only")
        try:
            ro = TTLCache(mnt / "c")  # opens (or runs without its disk layer), never raises
            assert ro.get("nope") is None
            ro.set("k2", payload(2), ttl_s=None)
            assert ro.get("k2") is None
            assert ro.clear() >= 0 and ro.delete("k") in (True, False) and ro.evict_tag("t") == 0
            assert not ro.healthy and ro.last_error is not None and "read-only" in ro.last_error
            assert ro.stats()["errors"] >= 1
            ro.close()
        finally:
            remount(mnt, "rw")
        again = TTLCache(mnt / "c")
        again.set("k3", payload(3), ttl_s=None)
        assert again.get("k3") is not None and again.healthy
        again.close()
