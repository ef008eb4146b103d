"""In-process HTTP against an ASGI app: no sockets (use it for content, never for timing: it buffers bodies)."""

import contextlib
from collections.abc import AsyncIterator

import httpx
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp

__all__ = ["client_for"]


@contextlib.asynccontextmanager
async def client_for(app: ASGIApp, base_url: str = "http://testserver") -> AsyncIterator[httpx.AsyncClient]:
    """An `httpx.AsyncClient` talking to `app` in process, with its lifespan running."""
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client
