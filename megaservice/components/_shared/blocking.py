"""Blocking work (model inference, a synchronous library) off the event loop, in bounded worker threads."""

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

__all__ = ["Loader", "Worker"]

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


class Loader:
    """A model loaded once, in its worker: what every in-process backend's `start()` and `ready()` do.

    `start()` runs `load` in `worker`; a load that fails is kept, and `ready()` raises it (so
    `/v1/ready` says why), else tells whether `loaded()`.
    """

    __slots__ = ("_failure", "_load", "_loaded", "_worker")

    def __init__(self, worker: Worker, load: Callable[[], object], loaded: Callable[[], bool]) -> None:
        self._worker = worker
        self._load = load
        self._loaded = loaded
        self._failure: BaseException | None = None

    async def start(self) -> None:
        """Load in the worker thread; a failure is kept (and raised here too)."""
        try:
            await self._worker.run(self._load)
        except Exception as exc:
            self._failure = exc
            raise

    def ready(self) -> bool:
        """Whether the model is loaded (raises what stopped it from loading)."""
        if self._failure is not None:
            raise self._failure
        return self._loaded()
