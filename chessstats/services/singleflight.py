"""One upstream call per key, however many requests wait for it (in one process)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class SingleFlight:
    """Coalesce concurrent calls by key: the first caller runs ``fn``; the others await its outcome.

    The outcome (value or exception) is shared by every caller that arrived while the call ran;
    the next call after it finished runs ``fn`` again.
    """

    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Future[Any]] = {}

    async def do(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` once for every concurrent caller of ``key`` and return its value (or raise)."""
        running = self._calls.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls[key] = future
        try:
            value = await fn()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        else:
            future.set_result(value)
            return value
        finally:
            del self._calls[key]

    def __len__(self) -> int:
        return len(self._calls)
