"""The request's exchange with the server: its answer's status and size, and the client's disconnect.

While a request runs, its `Exchange` stands between the app and the server: `send` records the
status and `Content-Length` (for the `http_*` metrics) and whether the answer is complete;
`receive`, once the body is in, hands the server's `receive` to a watcher task that cancels the
request when the client goes away first.
"""

import asyncio
from typing import Any

from starlette.types import Message, Receive, Send

__all__ = ["SERVER_SEND", "WATCHED", "Exchange"]

_DISCONNECT: Message = {"type": "http.disconnect"}
WATCHED = "megaservice.disconnect_watch"
"""Scope key set while the app watches for the client's disconnect (responses need not watch themselves)."""
SERVER_SEND = "megaservice.server_send"
"""Scope key of the server's own `send`, set when only the service stands between the server and the response.

A stream may write the chunks in the middle of its body with it, one coroutine less per chunk; its
start and its last chunk still go through the `send` it was given, which records the status and the end.
"""


class Exchange:
    """One request's `send` (recording the status and length for the `http_*` metrics) and `receive`.

    Once armed with the request's task (`watch`), it also cancels that task when the client goes
    away before the answer is complete: after the request body is in, a watcher task owns the
    server's `receive` and waits for `http.disconnect`; if that comes before the last byte of the
    answer was sent, the request's task is cancelled, and with it every upstream call it is making
    (their connections are closed, which is how the nodes learn the work is no longer wanted).
    Whoever else calls `receive` after the body (a streaming response's own watcher,
    `Request.is_disconnected`) gets the disconnect from the watcher.
    """

    __slots__ = (
        "_receive",
        "_send",
        "_task",
        "_watcher",
        "cancelled",
        "complete",
        "request_bytes",
        "response_bytes",
        "status",
    )

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._task: asyncio.Task[Any] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.complete = False
        self.cancelled = False
        self.status = 0
        self.request_bytes = 0
        self.response_bytes = 0

    def watch(self, task: "asyncio.Task[Any]", receive: Receive) -> None:
        """Cancel `task` on a disconnect; read the request through `receive` (the body-limited one) from now on."""
        self._task = task
        self._receive = receive

    async def receive(self) -> Message:
        watcher = self._watcher
        if watcher is not None:
            await asyncio.shield(watcher)
            return _DISCONNECT
        message = await self._receive()
        if self._task is not None and message["type"] == "http.request" and not message.get("more_body", False):
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not message.get("more_body", False):
                self.complete = True
        elif kind == "http.response.start":
            self.status = message["status"]
            for name, value in message.get("headers", ()):
                if name == b"content-length":
                    self.response_bytes = int(value) if value.isdigit() else 0
                    break
        await self._send(message)

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if not self.complete and self._task is not None:
            self.cancelled = True
            self._task.cancel()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            # The cancelled watcher's traceback keeps its frame, which refers to this exchange: drop
            # the exchange's references to the tasks so that no reference cycle is left for the
            # garbage collector (one per request otherwise, freed only by full collections).
            self._watcher = None
        if self.cancelled and self._task is not None:
            self._task.uncancel()
        self._task = None
