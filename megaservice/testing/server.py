"""Serve an ASGI app on a real loopback socket for the duration of a block (no port race, no sleeps)."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import uvicorn
from starlette.types import ASGIApp

__all__ = ["serve"]


@contextlib.asynccontextmanager
async def serve(
    app: ASGIApp, *, host: str = "127.0.0.1", ssl_certfile: str | None = None, ssl_keyfile: str | None = None
) -> AsyncIterator[str]:
    """Serve `app` on a fresh port of `host`; yield its base URL (`http://127.0.0.1:PORT`).

    With `ssl_certfile` (PEM: the certificate chain, and the key unless `ssl_keyfile` is given) it
    serves https and yields `https://127.0.0.1:PORT`.
    """
    # IPPROTO_TCP: asyncio sets TCP_NODELAY only on connections of such a socket (without it, each
    # response written in two parts waits 40 ms for the client's delayed ACK); uvloop sets it anyway.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="auto",
        timeout_graceful_shutdown=1,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    server = uvicorn.Server(config)
    server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]  # we are inside a running loop
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # startup failed: raise it here
                raise RuntimeError("server stopped before it started")
            await asyncio.sleep(0.002)
        port = sock.getsockname()[1]
        yield f"{'https' if ssl_certfile else 'http'}://{host}:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
