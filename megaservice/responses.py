"""`StreamingResponse` that never uses a thread per chunk and stops its source when the client leaves."""

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse as _StarletteStreamingResponse
from starlette.types import Receive, Scope, Send

from megaservice._serving.disconnect import SERVER_SEND, WATCHED

__all__ = ["StreamingResponse", "aclose", "flatten", "join"]


class StreamingResponse(_StarletteStreamingResponse):
    """A Starlette `StreamingResponse` over an async iterable (what OPEA handlers return and check for).

    While it streams, a watcher waits for the client's `http.disconnect`; when it comes, the
    streaming task is cancelled and the body iterator closed, so the upstream request that feeds
    it (an LLM generating tokens) is closed too instead of running on for nobody.
    """

    def __init__(
        self,
        content: AsyncIterable[str | bytes],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = "text/event-stream",
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(content, status_code, headers, media_type, background)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream the body; stop at once (closing the body iterator) if the client disconnects."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if scope.get(WATCHED):  # the service cancels the request when its client leaves
            try:
                await self._stream(send, scope.get(SERVER_SEND, send))
            finally:
                await self._close_source()
            if self.background is not None:
                await self.background()
            return
        task = asyncio.current_task()
        assert task is not None
        state = {"finished": False, "disconnected": False}

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not state["finished"]:
                        state["disconnected"] = True
                        task.cancel()
                    return

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self._stream(send, send)
            state["finished"] = True
        except asyncio.CancelledError:
            if not state["disconnected"]:
                raise
            task.uncancel()
        finally:
            state["finished"] = True
            watcher.cancel()
            await self._close_source()
        if self.background is not None and not state["disconnected"]:
            await self.background()

    async def _stream(self, send: Send, chunks: Send) -> None:
        """Write the response: its start and its end with `send`, the chunks in between with `chunks`."""
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        charset = self.charset
        async for chunk in self.body_iterator:
            body = chunk if isinstance(chunk, bytes) else chunk.encode(charset)  # type: ignore[union-attr]
            await chunks({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _close_source(self) -> None:
        aclose = getattr(self.body_iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


def join(batch: list[Any]) -> bytes:
    """One write's worth of bytes from a batch of `str`/`bytes` chunks."""
    if len(batch) == 1:
        item = batch[0]
        return item if isinstance(item, bytes) else str(item).encode()
    return b"".join(item if isinstance(item, bytes) else str(item).encode() for item in batch)


async def flatten(batches: AsyncIterator[list[Any]]) -> AsyncIterator[Any]:
    """The items of `batches`, one at a time."""
    try:
        async for batch in batches:
            for item in batch:
                yield item
    finally:
        await aclose(batches)


async def aclose(iterator: Any) -> None:
    """Close an async iterator if it can be closed."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
