"""The TTL cache on a real diskcache directory: TTL, permanence, no pickle, cross-process invalidation."""

from __future__ import annotations

import time
from pathlib import Path

import diskcache
import msgspec

from chessstats.cache import CacheEntry, TTLCache
from chessstats.payload import Payload, encode_fields


def payload(data: object) -> Payload:
    return Payload(encode_fields(data), source="api", fetched_at=1_700_000_000.0)


def test_miss_set_hit_and_ttl(tmp_path: Path) -> None:
    cache = TTLCache(tmp_path / "c")
    assert cache.get("k") is None
    cache.set("k", payload({"a": 1}), ttl_s=300)
    hit = cache.get("k")
    assert hit is not None and (hit.cached, hit.source, hit.fields) == (True, "cache", b'"data":{"a":1}')
    assert hit.fetched_at == 1_700_000_000.0 and 299 <= hit.max_age_s() <= 300
    assert cache.get("k", now=time.time() + 301) is None  # expired, even from the memory layer
    assert (cache.hits, cache.misses) == (1, 2)


def test_permanent_entries_and_values_are_msgpack_not_pickle(tmp_path: Path) -> None:
    cache = TTLCache(tmp_path / "c")
    cache.set("k", payload([1, 2]), ttl_s=None)
    assert cache.get("k", now=time.time() + 10 * 365 * 86400) is not None
    raw = diskcache.Cache(str(tmp_path / "c")).get("k")
    assert isinstance(raw, bytes)
    entry = msgspec.msgpack.decode(raw, type=CacheEntry)
    assert entry.expires_at is None and entry.fields == b'"data":[1,2]'


def test_clear_in_one_process_drops_memory_copies_in_another(tmp_path: Path) -> None:
    worker_a, worker_b = TTLCache(tmp_path / "c"), TTLCache(tmp_path / "c")
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


def test_pattern_invalidation_and_disabled_cache(tmp_path: Path) -> None:
    cache = TTLCache(tmp_path / "c")
    for key in ("tournament:lichess:a", "tournament:lichess:b", "results:lichess:a:1:100"):
        cache.set(key, payload(key), ttl_s=None)
    assert cache.delete_pattern("tournament:*") == 2
    assert cache.get("results:lichess:a:1:100") is not None
    off = TTLCache(tmp_path / "off", enabled=False)
    off.set("k", payload(1), ttl_s=None)
    assert off.get("k") is None


def test_undecodable_entry_is_a_miss(tmp_path: Path) -> None:
    diskcache.Cache(str(tmp_path / "c")).set("k", b"\xc1 not msgpack")
    cache = TTLCache(tmp_path / "c")
    assert cache.get("k") is None
