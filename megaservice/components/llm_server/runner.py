"""Generations on a model, at most `parallel` at once, each in a worker thread; their tokens handed to the loop.

    runner = ModelRunner(max_waiting=16, parallel=4)
    run = runner.open(produce)        # ModelBusy (503) at once if 16 requests already wait
    try:
        async for pieces in run:      # lists of what `produce` emitted since the loop last looked
            ...
    finally:
        run.close()                   # the client left, or the answer is complete

`produce(emit, stopped)` is blocking code (a generation on the model): it runs in one of the
runner's `parallel` worker threads (`_shared.blocking.Worker`), has `emit(item)` called for each
token (from any thread: the model's decoder calls it from its own), and returns once it is done or
`stopped` is set. `emit` hands the item to the event loop with
`call_soon_threadsafe`, so the loop never waits for the model and the thread never waits for the loop.

A `Run` is never cancelled while its thread works, it is told to stop (`stopped`), and its place
goes to the next run when that thread has returned. A run closed before its turn does nothing when
its turn comes. Requests wait their turn in order (FIFO).
"""

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from megaservice.components._shared.blocking import Worker
from megaservice.exceptions import InputError

__all__ = ["ModelBusy", "ModelRunner", "Produce", "Run"]

_T = TypeVar("_T")
_R = TypeVar("_R")

Produce = Callable[[Callable[[_T], None], threading.Event], _R]
"""Blocking work: `produce(emit, stopped)` emits items until done or `stopped` is set, and returns its result."""

_END: Any = object()


class ModelBusy(InputError):
    """Too many requests wait for the model: 503, try again later."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"the model is busy: {waiting} requests wait for it, try again later", status_code=503)


class ModelRunner:
    """Runs blocking work on one model, `parallel` calls at a time in worker threads; at most `max_waiting` wait."""

    def __init__(self, max_waiting: int, *, parallel: int = 1) -> None:
        self.max_waiting = max_waiting
        self.parallel = parallel
        self.pending = 0
        """Runs opened and not finished: those working, and those waiting their turn."""
        self._worker = Worker(parallel)
        self._idle = asyncio.Event()
        self._idle.set()
        self._open: set[Run[Any, Any]] = set()

    def open(self, produce: "Produce[_T, _R]") -> "Run[_T, _R]":
        """A run of `produce`, queued now; it starts when iterated and its turn comes.

        Raises:
            ModelBusy: `max_waiting` runs already wait (and `parallel` are working).
        """
        if self.pending >= self.max_waiting + self.parallel:
            raise ModelBusy(self.pending - self.parallel)
        run: Run[_T, _R] = Run(self, produce)
        self.pending += 1
        self._idle.clear()
        self._open.add(run)
        return run

    async def call(self, function: Callable[..., _R], *args: object) -> _R:
        """`function(*args)` in one of the runner's threads, in turn with the runs (loading the model, ...)."""
        return await self._worker.run(function, *args)

    def close(self) -> None:
        """Tell every open run to stop (at shutdown)."""
        for run in list(self._open):
            run.close()

    async def drained(self, timeout: float = 10.0) -> None:
        """Wait (at most `timeout` seconds) until no run is open: after `close()`, until every thread returned."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    def _done(self, run: "Run[Any, Any]") -> None:
        if run in self._open:
            self._open.discard(run)
            self.pending -= 1
            if not self.pending:
                self._idle.set()


class Run(Generic[_T, _R]):
    """One queued call of `produce`: iterate it for batches of what it emits; `result` once it is over."""

    def __init__(self, runner: ModelRunner, produce: "Produce[_T, _R]") -> None:
        self._runner = runner
        self._produce = produce
        self._stopped = threading.Event()
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[_R] | None = None
        self._over = False
        self.result: _R | None = None
        """What `produce` returned (set when iteration ends)."""

    @property
    def stopped(self) -> bool:
        """Whether the run was told to stop (`close()`)."""
        return self._stopped.is_set()

    def __aiter__(self) -> "Run[_T, _R]":
        return self

    async def __anext__(self) -> list[_T]:
        """What was emitted since the last call (at least one item); waits for the run's turn first."""
        if self._over:
            raise StopAsyncIteration
        if self._task is None:
            self._start()
        item = await self._items.get()
        batch: list[_T] = []
        while item is not _END:
            batch.append(item)
            if self._items.empty():
                return batch
            item = self._items.get_nowait()
        if batch:
            self._items.put_nowait(_END)  # the end is for the next call
            return batch
        self._over = True
        assert self._task is not None
        self.result = await self._task  # raises what `produce` raised
        raise StopAsyncIteration

    def close(self) -> None:
        """Stop: the thread stops at its next token (or never starts); its place is then free for the next run."""
        self._stopped.set()
        if self._task is None:
            self._runner._done(self)

    async def aclose(self) -> None:
        """`close()`, as an async iterator's `aclose`."""
        self.close()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        items = self._items
        stopped = self._stopped

        def emit(item: _T) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        def body() -> _R:
            try:
                if stopped.is_set():  # closed while it waited its turn
                    return None  # type: ignore[return-value]  # nobody reads the result of a closed run
                return self._produce(emit, stopped)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
                    loop.call_soon_threadsafe(items.put_nowait, _END)

        self._task = loop.create_task(self._runner._worker.run(body))
        self._task.add_done_callback(self._finished)

    def _finished(self, task: "asyncio.Task[_R]") -> None:
        self._runner._done(self)
        if not task.cancelled():
            task.exception()  # retrieved here; raised to the reader by `__anext__`
