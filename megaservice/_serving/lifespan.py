"""What runs while a service runs: startup tasks, shutdown callbacks, readiness checks."""

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from megaservice import tracing
from megaservice._serving.server import tune_garbage_collector
from megaservice.client import close_client

if TYPE_CHECKING:
    from megaservice.tracing import TracingSettings

__all__ = ["Lifecycle", "ReadinessCheck"]

ReadinessCheck = Callable[[], Awaitable[bool] | bool]
"""A check `GET /v1/ready` runs: sync or async, true when ready; one that raises means not ready."""


class Lifecycle:
    """A service's startup tasks, shutdown callbacks and readiness checks, and its ASGI lifespan running them."""

    def __init__(
        self, *, gc_tuning: bool = True, tracing: "TracingSettings | None" = None, service_name: str = "megaservice"
    ) -> None:
        self.startup: list[Callable[[], Awaitable[Any]] | Awaitable[Any]] = []
        """Run as background tasks from startup to shutdown (coroutines, or async functions)."""
        self.shutdown: list[Callable[[], Awaitable[Any] | Any]] = []
        """Called, in order, once the background tasks are cancelled."""
        self.readiness: list[ReadinessCheck] = []
        """What `status()` checks once the service started."""
        self.started = False
        """Whether the lifespan is between its startup and its shutdown."""
        self._gc_tuning = gc_tuning
        self._tracing = tracing
        self._service_name = service_name
        self._background: list[asyncio.Task[Any]] = []

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """The app's lifespan: tracing on (if set), tune the GC, start the startup tasks; at shutdown the reverse."""
        traced = self._tracing is not None and tracing.start(self._tracing, self._service_name)
        if self._gc_tuning:
            tune_garbage_collector()
        for item in self.startup:
            awaitable = item() if callable(item) else item
            self._background.append(asyncio.ensure_future(awaitable))
        self.started = True
        try:
            yield
        finally:
            self.started = False
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            self._background.clear()
            for callback in self.shutdown:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            await close_client()
            if traced:
                await asyncio.to_thread(tracing.stop)  # exports the last spans: not on the event loop

    async def status(self) -> dict[str, str]:
        """`{"status": "ready"}`; else `starting`, or `not ready` with the `reason` (the first check failing)."""
        if not self.started:
            return {"status": "starting"}
        for check in self.readiness:
            try:
                result = check()
                ready = await result if inspect.isawaitable(result) else result
            except Exception as exc:  # noqa: BLE001  # a failing check means "not ready", with the reason
                return {"status": "not ready", "reason": f"{type(exc).__name__}: {exc}"}
            if not ready:
                return {"status": "not ready", "reason": f"{getattr(check, '__qualname__', repr(check))} failed"}
        return {"status": "ready"}
