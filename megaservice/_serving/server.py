"""uvicorn and the process: the sockets we bind, the server's options, GC tuning."""

import gc
import socket
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from megaservice._serving.access import take_over_uvicorn_access_log

__all__ = ["bind_socket", "tune_garbage_collector", "uvicorn_config"]

_GC_YOUNG_THRESHOLD = 10_000


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket the way uvicorn does (`RuntimeError` naming the port if it is taken).

    The socket is made with `IPPROTO_TCP`, not protocol 0: asyncio's event loop sets TCP_NODELAY
    only on connections of such a socket (uvloop sets it on every TCP connection). Without it, on
    asyncio, a response written in two parts (headers, then body) waits for the client's delayed
    ACK: 40 ms per request on loopback.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    bind_host = "127.0.0.1" if host == "localhost" else host
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind_host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"port:{port} cannot be bound on {host}: {exc.strerror}") from exc
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: ASGIApp, host: str, port: int, options: dict[str, Any]) -> uvicorn.Config:
    """The server's configuration: OPEA's defaults (`info` logs, 5 s graceful shutdown), then `options`.

    The service writes the access line itself, off the response's critical path: the handlers of
    uvicorn's access logger go to the service's (`megaservice._serving.access`).
    """
    # No websockets route in a service: `ws="none"` spares importing a websockets implementation.
    defaults: dict[str, Any] = {"log_level": "info", "timeout_graceful_shutdown": 5, "ws": "none"}
    config = uvicorn.Config(app, host=host, port=port, **{**defaults, **options})  # configures logging
    take_over_uvicorn_access_log()
    return config


def tune_garbage_collector() -> None:
    """Tune the garbage collector for serving, once a service starts (unless `Settings.gc_tuning` is off).

    * What exists now (modules, models, the app) lives as long as the process, yet every full
      collection walks all of it: with FastAPI and pydantic loaded that is 70 000 objects and a
      50 ms pause of the event loop, during which every request in flight waits. Frozen
      (`gc.freeze()`), they are no longer walked.
    * Requests in flight hold a few hundred containers each, so with Python's default (a young
      collection every 700 net allocations) 32 concurrent requests trigger one every 50 ms or so.
      Nothing a request allocates is cyclic garbage (`tests/test_memory.py`), so reference
      counting frees it; young collections every 10 000 net allocations are enough.
    """
    gc.collect()  # what is already garbage is freed, not frozen
    gc.freeze()
    young, *older = gc.get_threshold()
    if young and young < _GC_YOUNG_THRESHOLD:
        gc.set_threshold(_GC_YOUNG_THRESHOLD, *older)
