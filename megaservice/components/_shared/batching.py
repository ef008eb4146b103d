"""Dynamic batching: the texts of concurrent requests go to the model together, in bounded batches.

    batcher = Batcher(model.embed, worker, max_batch=32)
    vectors = await batcher.submit(texts)     # from any number of concurrent requests

One task collects what the requests submitted; while the model works on a batch, the next one
fills up (at most `max_batch` items). A request's items may be split over several batches and
come back in order. Beyond `max_pending` items waiting, a request is refused at once
(`BatcherFull`, a 503), so a flood queues in the client, not in memory.
"""

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from megaservice.components._shared.blocking import Worker
from megaservice.exceptions import InputError

__all__ = ["Batcher", "BatcherFull"]

_In = TypeVar("_In")
_Out = TypeVar("_Out")


class BatcherFull(InputError):
    """Too many items wait for the model; try again later (503)."""

    def __init__(self, pending: int) -> None:
        super().__init__(f"busy: {pending} items wait for the model, try again later", status_code=503)


@dataclass(slots=True)
class _Request(Generic[_In, _Out]):
    items: Sequence[_In]
    done: "asyncio.Future[list[_Out]]"
    results: list[_Out] = field(default_factory=list)
    taken: int = 0


class Batcher(Generic[_In, _Out]):
    """Run `model` (sync, `list[In] -> list[Out]`, one output per input) on batches drawn from concurrent requests."""

    def __init__(
        self,
        model: Callable[[list[_In]], list[_Out]],
        worker: Worker,
        *,
        max_batch: int = 32,
        max_pending: int = 4096,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._model = model
        self._worker = worker
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._on_batch = on_batch
        self._queue: deque[_Request[_In, _Out]] = deque()
        self._pending = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[_In]) -> list[_Out]:
        """The model's outputs for `items`, in order (raises what the model raised)."""
        if not items:
            return []
        if self._pending + len(items) > self.max_pending:
            raise BatcherFull(self._pending)
        loop = asyncio.get_running_loop()
        request: _Request[_In, _Out] = _Request(items, loop.create_future())
        self._queue.append(request)
        self._pending += len(items)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            # Its own empty context: the task outlives this request, whose trace (and span) it must not keep.
            self._task = loop.create_task(self._run(), context=contextvars.Context())
        assert self._wake is not None
        self._wake.set()
        try:
            return await request.done
        except asyncio.CancelledError:
            request.taken = len(request.items)  # what is not yet in a batch is dropped
            raise

    def _next_batch(self) -> tuple[list[_In], list[tuple[_Request[_In, _Out], int]]]:
        batch: list[_In] = []
        shares: list[tuple[_Request[_In, _Out], int]] = []
        while self._queue and len(batch) < self.max_batch:
            request = self._queue[0]
            if request.done.done():  # cancelled while waiting
                self._queue.popleft()
                self._pending -= len(request.items) - request.taken
                continue
            take = min(self.max_batch - len(batch), len(request.items) - request.taken)
            batch.extend(request.items[request.taken : request.taken + take])
            request.taken += take
            shares.append((request, take))
            if request.taken == len(request.items):
                self._queue.popleft()
        self._pending -= len(batch)
        return batch, shares

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch, shares = self._next_batch()
            if not batch:
                continue
            started = loop.time()
            try:
                outputs = await self._worker.run(self._model, batch)
            except Exception as exc:  # noqa: BLE001  # the requests of this batch get the error
                for request, _ in shares:
                    if not request.done.done():
                        request.done.set_exception(exc)
                continue
            if self._on_batch is not None:
                self._on_batch(len(batch), loop.time() - started)
            start = 0
            for request, take in shares:
                request.results.extend(outputs[start : start + take])
                start += take
                if len(request.results) == len(request.items) and not request.done.done():
                    request.done.set_result(request.results)

    async def aclose(self) -> None:
        """Stop the collecting task (requests still waiting are cancelled)."""
        if self._task is not None:
            self._task.cancel()
            for request in self._queue:
                request.done.cancel()
            self._queue.clear()
            self._pending = 0
