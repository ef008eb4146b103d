"""`FaultyServer`: an upstream that misbehaves on purpose, on a real socket, for fault-injection tests.

It is a small HTTP/1.1 server written on `asyncio` streams rather than an ASGI app, because the
faults worth testing are below what ASGI can express: a connection reset, a body cut short, a
response that never starts. Each request is answered in the wire format the caller asked for: a
JSON body, or, when the request body has `"stream": true`, an OpenAI-style SSE stream.

    async with FaultyServer("stall") as upstream:
        ...  # point a node at upstream.url; upstream.disconnects says when the caller gave up
"""

import asyncio
import contextlib
import enum
import socket
import ssl
import struct
import time
from types import TracebackType

import orjson

__all__ = ["Fault", "FaultyServer", "unused_url"]

_OK_TOKENS = ("Hello", " from", " the", " fake", " upstream", ".")


class Fault(enum.StrEnum):
    """What a `FaultyServer` does with each request."""

    OK = "ok"
    """Answer correctly (a JSON echo, or a short SSE stream)."""
    CLOSE = "close"
    """Read the request, then close the connection without a word."""
    STATUS = "status"
    """Answer `status` with a JSON error body."""
    HANG = "hang"
    """Read the request and never answer (no headers)."""
    STALL = "stall"
    """Send the headers and part of the body, then nothing more."""
    RESET = "reset"
    """Send the headers and part of the body, then reset the connection (TCP RST)."""
    BAD_JSON = "bad_json"
    """Answer 200 `application/json` with a body that is not JSON (a stream request gets an SSE stream with one)."""
    BAD_SSE = "bad_sse"
    """Answer a stream request with `text/event-stream` bytes that never end an event."""
    HUGE = "huge"
    """Answer 200 with a body of `size` bytes."""


class FaultyServer:
    """A loopback HTTP server that answers every request with `fault` (see `Fault`).

    **Parameters:**

    * **fault** - what to do (a `Fault` or its value).
    * **status** - the status of `Fault.STATUS`.
    * **size** - the body size of `Fault.HUGE` and `Fault.BAD_SSE`.
    * **fail_first** - answer with `fault` only this many times, then correctly (a node that recovers);
      `None`: always.
    * **ssl** - serve https with this server context (`url` is then `https://…`).

    Counters for assertions: `requests` (received), `connections` (open now), and `disconnects`
    (the `time.monotonic()` of each connection the caller closed while the server was holding it).
    """

    def __init__(
        self,
        fault: Fault | str = Fault.OK,
        *,
        status: int = 500,
        size: int = 32 * 1024 * 1024,
        fail_first: int | None = None,
        ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.fault = Fault(fault)
        self.ssl = ssl
        self.status = status
        self.size = size
        self.fail_first = fail_first
        self.requests = 0
        self.connections = 0
        self.disconnects: list[float] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> "FaultyServer":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.ssl else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self.requests += 1
                fault = self.fault
                if self.fail_first is not None and self.requests > self.fail_first:
                    fault = Fault.OK
                keep_open = await self._answer(fault, request, reader, writer)
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            return
        finally:
            self.connections -= 1
            self._handlers.discard(task)
            writer.close()

    async def _answer(
        self, fault: Fault, request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; return whether the connection may serve another."""
        stream = _wants_stream(request)
        if fault is Fault.OK:
            if stream:
                await _send_stream(writer, [_chunk(t) for t in _OK_TOKENS] + [b"data: [DONE]\n\n"])
                return False
            _send(writer, 200, b"application/json", request or b"{}")
            await writer.drain()
            return True
        if fault is Fault.CLOSE:
            return False
        if fault is Fault.STATUS:
            _send(writer, self.status, b"application/json", orjson.dumps({"detail": f"fault: status {self.status}"}))
            await writer.drain()
            return True
        if fault is Fault.HANG:
            await self._hold(reader)
            return False
        if fault in (Fault.STALL, Fault.RESET):
            await self._break_off(fault, stream, reader, writer)
            return False
        return await self._bad_body(fault, stream, writer)

    async def _break_off(
        self, fault: Fault, stream: bool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Start an answer, then stall or reset."""
        if stream:
            writer.write(_stream_head())
            writer.write(_chunked(_chunk("partial")))
        else:
            writer.write(_head(200, b"application/json", 1000) + b'{"text": "part')
        await writer.drain()
        if fault is Fault.STALL:
            await self._hold(reader)
        else:
            _reset(writer)

    async def _bad_body(self, fault: Fault, stream: bool, writer: asyncio.StreamWriter) -> bool:
        """Answer with a body that is wrong: not JSON, endless SSE, or huge."""
        if fault is Fault.BAD_JSON:
            if stream:
                await _send_stream(writer, [_chunk("ok"), b"data: {not json\n\n", b"data: [DONE]\n\n"])
                return False
            _send(writer, 200, b"application/json", b"{not json")
            await writer.drain()
            return True
        if fault is Fault.BAD_SSE:
            writer.write(_stream_head())
            await _write_in_pieces(writer, b"data: ", self.size, chunked=True)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return False
        assert fault is Fault.HUGE
        if stream:
            writer.write(_stream_head())
            event = _chunked(_chunk("x" * 1000))
            for _ in range(max(1, self.size // len(event))):  # whole events, `size` bytes in all
                writer.write(event)
                await writer.drain()
            writer.write(_chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        else:
            writer.write(_head(200, b"application/json", self.size + 2))
            writer.write(b'["')
            await _write_in_pieces(writer, b"", self.size - 2, chunked=False)
            writer.write(b'"]')
        await writer.drain()
        return True

    async def _hold(self, reader: asyncio.StreamReader) -> None:
        """Keep the connection open until the caller closes it; note when it did."""
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        self.disconnects.append(time.monotonic())


def unused_url(scheme: str = "http") -> str:
    """A loopback URL nothing listens on: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}"


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """Read one request; return its body, or `None` when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return await reader.readexactly(length) if length else b""
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def _wants_stream(body: bytes) -> bool:
    try:
        request = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return False
    return isinstance(request, dict) and request.get("stream") is True


def _head(status: int, content_type: bytes, length: int) -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: ".encode()
        + content_type
        + f"\r\ncontent-length: {length}\r\n\r\n".encode()
    )


def _send(writer: asyncio.StreamWriter, status: int, content_type: bytes, body: bytes) -> None:
    writer.write(_head(status, content_type, len(body)) + body)


def _stream_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _chunk(token: str) -> bytes:
    payload = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": token}}]}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _send_stream(writer: asyncio.StreamWriter, events: list[bytes]) -> None:
    writer.write(_stream_head())
    for event in events:
        writer.write(_chunked(event))
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _write_in_pieces(
    writer: asyncio.StreamWriter, first: bytes, size: int, *, chunked: bool, piece: bytes = b"x" * 65536
) -> None:
    """Write `first`, then `size` bytes in pieces, giving the caller the chance to give up."""
    written = 0
    data = first
    while written < size:
        if not data:
            data = piece[: size - written]
        writer.write(_chunked(data) if chunked else data)
        written += len(data)
        data = b""
        await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
