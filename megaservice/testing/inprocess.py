"""In-process HTTP: call ASGI apps without sockets, from a test client or from an orchestrator.

client_for(app)         an httpx client for one app (buffers bodies: use it for content, not timing)
InProcess()             apps served at made-up URLs through `ASGITransport` (streams as they are sent),
                        reached by `InProcess.client`, an `UpstreamClient` to give an orchestrator
"""

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from types import TracebackType

import httpx
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from megaservice._transport.asgi import ASGITransport
from megaservice.client import UpstreamClient

__all__ = ["ASGITransport", "InProcess", "client_for"]

_numbers = itertools.count(1)


@contextlib.asynccontextmanager
async def client_for(app: ASGIApp, base_url: str = "http://testserver") -> AsyncIterator[httpx.AsyncClient]:
    """An `httpx.AsyncClient` talking to `app` in process, with its lifespan running."""
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


class InProcess:
    """Serve ASGI apps in this process for an orchestrator to call, no socket involved.

    ```python
    async with InProcess() as nodes, nodes.serve(FakeLLM(token_delay=0.01)) as llm_url:
        orchestrator = ServiceOrchestrator(client=nodes.client).add(node("llm", llm_url, ServiceType.LLM))
        results, _ = await orchestrator.schedule({"text": "hi"}, llm_parameters=LLMParams(stream=True))
    ```

    Each app gets a URL of its own (`http://app-<n>.inprocess`) and its lifespan runs while it is
    served. Streams arrive as the app sends them, timeouts and disconnects behave as over a
    socket (`megaservice._transport.asgi`).
    """

    def __init__(self) -> None:
        self.client = UpstreamClient()

    @contextlib.asynccontextmanager
    async def serve(self, app: ASGIApp) -> AsyncIterator[str]:
        """Serve `app` for the duration of the block; yield its base URL."""
        url = f"http://app-{next(_numbers)}.inprocess"
        async with _Lifespan(app) as running:
            self.client.mount(url, ASGITransport(running))
            yield url

    async def __aenter__(self) -> "InProcess":
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.client.aclose()


class _Lifespan:
    """Run `app`'s lifespan around a block, as uvicorn's `lifespan="auto"` does; calling it passes its state on.

    An app that returns or fails before it reads the first lifespan message does not use the
    lifespan protocol (bare ASGI apps): it is served without one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._state: dict[str, object] = {}
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._used = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"] = dict(self._state)
        await self._app(scope, receive, send)

    async def _receive(self) -> Message:
        self._used = True
        return await self._inbox.get()

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self._state}
        try:
            await self._app(scope, self._receive, self._outbox.put)
        except Exception:
            if self._used:
                raise
        finally:
            await self._outbox.put({"type": "lifespan.returned"})

    async def _step(self, message: str) -> None:
        await self._inbox.put({"type": message})
        answer = await self._outbox.get()
        if answer["type"].endswith(".failed"):
            raise RuntimeError(f"{message} failed: {answer.get('message', '')}")
        if answer["type"] == "lifespan.returned":
            self._outbox.put_nowait(answer)
            assert self._task is not None
            await self._task  # an app that failed after it started the protocol raises here

    async def __aenter__(self) -> "_Lifespan":
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._step("lifespan.startup")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        if not self._task.done():
            await self._step("lifespan.shutdown")
        await self._task
