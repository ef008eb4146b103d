"""Blocking work (model inference, a synchronous library) off the event loop, in bounded worker threads."""

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

__all__ = ["Worker"]

_T = TypeVar("_T")


class Worker:
    """At most `threads` calls run at once in worker threads; the others wait their turn (not the event loop).

    One per model: a model object is seldom safe to call from two threads at once, and two
    inferences on a 2-core machine only slow each other down.
    """

    def __init__(self, threads: int = 1) -> None:
        self._limiter = anyio.CapacityLimiter(threads)

    async def run(self, function: Callable[..., _T], *args: object) -> _T:
        """`function(*args)` in a worker thread; the result, or what it raised."""
        return await anyio.to_thread.run_sync(function, *args, limiter=self._limiter)
