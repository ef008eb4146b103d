"""`ASGITransport`: call an ASGI app in the same process, as if over a socket, streams included.

The app runs as a task per call, fed the request body through `receive` and answering through
`send`; the answer is handed out as it is sent, so a stream arrives event by event (unlike
`httpx.ASGITransport`, which buffers the whole body). What a socket would show is kept:

* an app that fails before it answers is a `500 Internal Server Error`, one that fails after is a
  connection lost mid-answer (`UpstreamConnectError`);
* closing an answer early tells the app `http.disconnect` and cancels it, as a client that hangs up;
* the first-byte, read and total time limits of `Timeout` apply (the connect one has no meaning).

No lifespan is run: wrap an app that needs one (`asgi_lifespan.LifespanManager`), as
`megaservice.testing.in_process()` does.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message

from megaservice._transport.base import NO_CONTENT, no_content
from megaservice.exceptions import UpstreamConnectError, UpstreamProtocolError, UpstreamStatusError, UpstreamTimeout
from megaservice.resilience import Timeout

__all__ = ["ASGIAnswer", "ASGITransport"]

_SERVER_ERROR = b"Internal Server Error"


class ASGIAnswer:
    """An ASGI app's answer to one call (a `StreamedAnswer`): status and headers in, the body as it is sent."""

    __slots__ = (
        "_chunks",
        "_complete",
        "_disconnect",
        "_failure",
        "_node",
        "_read",
        "_started",
        "_task",
        "_url",
        "_wake",
        "content_type",
        "headers",
        "status",
    )

    def __init__(self, node: str, url: str, read: float | None) -> None:
        self._node = node
        self._url = url
        self._read = read
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_type = "application/octet-stream"
        self._chunks: list[bytes] = []
        self._complete = False
        self._failure: BaseException | None = None
        self._started = asyncio.Event()
        self._wake = asyncio.Event()
        self._disconnect = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the app's side ---------------------------------------------------------------------------

    async def run(self, app: ASGIApp, scope: dict[str, Any], body: bytes) -> None:
        sent_body = False

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await self._disconnect.wait()
            return {"type": "http.disconnect"}

        try:
            await app(scope, receive, self._send)
        except Exception as exc:  # noqa: BLE001  # what a server makes of an app's failure
            if not self.status:
                self.status = 500
                self._chunks.append(_SERVER_ERROR)
                self._complete = True
            elif not self._complete:
                self._failure = exc
        finally:
            if not self._complete and self._failure is None:
                self._failure = ConnectionError("the app returned before its answer was complete")
            self._started.set()
            self._wake.set()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
            for name, value in self.headers:
                if name == b"content-type":
                    self.content_type = value.decode("latin-1").split(";", 1)[0].strip().lower()
            self._started.set()
        elif kind == "http.response.body":
            chunk = message.get("body", b"")
            if chunk:
                self._chunks.append(bytes(chunk))
            if not message.get("more_body", False):
                self._complete = True
            self._wake.set()

    # -- the caller's side --------------------------------------------------------------------------

    async def started(self, first_byte: float | None) -> None:
        """Wait for the status and headers (`UpstreamTimeout` after `first_byte` seconds)."""
        try:
            async with asyncio.timeout(first_byte):
                await self._started.wait()
        except TimeoutError:
            self.close()
            raise UpstreamTimeout(
                f"{self._node} did not answer in time ({self._url})", node=self._node, url=self._url
            ) from None
        if not self.status:
            raise self._lost()

    @property
    def content(self) -> "ASGIAnswer":
        """The body reader (this answer)."""
        return self

    async def iter_any(self) -> AsyncIterator[bytes]:
        """Yield the body as it is sent, everything sent so far in one piece."""
        while True:
            if self._chunks:
                chunks, self._chunks = self._chunks, []
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
                continue
            if self._complete:
                return
            if self._failure is not None:
                raise self._lost()
            self._wake.clear()
            try:
                async with asyncio.timeout(self._read):
                    await self._wake.wait()
            except TimeoutError:
                raise UpstreamTimeout(
                    f"{self._node} did not answer in time ({self._url})", node=self._node, url=self._url
                ) from None

    async def read(self, limit: int, *, truncate: bool = False) -> bytes:
        """The whole body; past `limit` bytes (0: any), its start if `truncate`, else `UpstreamProtocolError`."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in self.iter_any():
            size += len(chunk)
            if limit and size > limit:
                self.close()
                if truncate:
                    return b"".join([*chunks, chunk])[:limit]
                raise UpstreamProtocolError(
                    f"{self._node} answered more than the {limit} bytes accepted", node=self._node, url=self._url
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _lost(self) -> UpstreamConnectError:
        return UpstreamConnectError(
            f"connection to {self._node} failed: {self._failure}", node=self._node, url=self._url
        )

    def release(self) -> None:
        """The body was read to its end."""

    def close(self) -> None:
        """Hang up: the app gets `http.disconnect`, then is cancelled if it is still running."""
        self._disconnect.set()
        task = self._task
        if task is not None and not task.done():
            asyncio.get_running_loop().call_soon(task.cancel)


class ASGITransport:
    """A `Transport` that calls `app` in process (see the module docstring).

    Mount it on a client for the URLs the app stands for:
    `UpstreamClient(mounts={"http://embedding:6000": ASGITransport(embedding.app)})`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._tasks: set[asyncio.Task[None]] = set()

    def _call(
        self, node: str, url: str, body: bytes, headers: Mapping[str, str], read: float | None, method: str = "POST"
    ) -> ASGIAnswer:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        raw = [(b"host", parts.netloc.encode()), (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": parts.scheme,
            "path": parts.path or "/",
            "raw_path": (parts.path or "/").encode(),
            "query_string": parts.query.encode(),
            "root_path": "",
            "headers": raw,
            "client": ("127.0.0.1", 0),
            "server": (parts.hostname or "", port),
            "state": {},
        }
        answer = ASGIAnswer(node, url, read)
        task = asyncio.get_running_loop().create_task(answer.run(self.app, scope, body))
        answer._task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return answer

    async def post(
        self, node: str, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeout, limit: int
    ) -> tuple[str, bytes]:
        """POST `body` to the app; return `(content_type, body)` of a 2xx answer."""
        return await self._whole(self._call(node, url, body, headers, timeout.read), node, url, timeout, limit)

    async def get(
        self, node: str, url: str, headers: Mapping[str, str], timeout: Timeout, limit: int
    ) -> tuple[str, bytes]:
        """GET `url` from the app; return `(content_type, body)` of a 2xx answer."""
        answer = self._call(node, url, b"", headers, timeout.read, method="GET")
        return await self._whole(answer, node, url, timeout, limit)

    async def _whole(self, answer: ASGIAnswer, node: str, url: str, timeout: Timeout, limit: int) -> tuple[str, bytes]:
        try:
            async with asyncio.timeout(timeout.total):
                await answer.started(timeout.first_byte if timeout.first_byte is not None else timeout.read)
                data = await answer.read(limit)
        except TimeoutError:
            answer.close()
            raise UpstreamTimeout(f"{node} did not answer in time ({url})", node=node, url=url) from None
        except BaseException:
            answer.close()
            raise
        if answer.status >= 300:
            raise UpstreamStatusError(node=node, url=url, status=answer.status, body=data)
        if answer.status in NO_CONTENT:
            raise no_content(node, url, answer.status)
        return answer.content_type, data

    async def open_stream(
        self, node: str, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeout
    ) -> ASGIAnswer:
        """POST `body` to the app; return the answer once its headers are in."""
        answer = self._call(node, url, body, headers, timeout.read)
        try:
            await answer.started(timeout.first_byte if timeout.first_byte is not None else timeout.read)
        except BaseException:
            answer.close()
            raise
        if answer.status >= 300:
            data = await answer.read(UpstreamStatusError.body_limit, truncate=True)
            raise UpstreamStatusError(node=node, url=url, status=answer.status, body=data)
        return answer

    async def aclose(self) -> None:
        """Cancel the calls still running."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
