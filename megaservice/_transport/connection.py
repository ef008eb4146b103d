"""One keep-alive HTTP/1.1 connection to a node, as an asyncio protocol parsed by httptools.

The connection carries one exchange at a time: `send()` writes a request and arms its timer; the
httptools callbacks collect the status, headers and body; `wait()` sleeps until something new
arrived. Failures are kept as a `Failure` (kind and reason) until the reader turns them into an
`UpstreamError` naming the node (`error()`).
"""

import asyncio
import contextlib
import socket
import zlib
from typing import NamedTuple, cast

import httptools

from megaservice.exceptions import UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout

__all__ = ["LOST", "Connection", "Failure", "error"]

_HIGH_WATER = 256 * 1024
"""Bytes of unread body after which a connection stops reading from its socket."""
_NO_BODY_STATUSES = (204, 304)


class Failure(NamedTuple):
    """Why an exchange failed: the `UpstreamError` subclass to raise, and the reason."""

    kind: type[UpstreamError]
    reason: str


_TIMED_OUT = Failure(UpstreamTimeout, "")


class _Detached:
    """The protocol of the parser a closed connection keeps: nothing to call back."""


_DETACHED = httptools.HttpResponseParser(_Detached())


class Connection(asyncio.Protocol):
    """One keep-alive connection to a node and the state of the exchange it is carrying."""

    __slots__ = (
        "_deadline",
        "_decoder",
        "_first_byte_by",
        "_interim",
        "_loop",
        "_paused",
        "_read_timeout",
        "_timer",
        "_waiter",
        "_writable",
        "answered",
        "buffered",
        "chunks",
        "closed",
        "complete",
        "content_length",
        "eof_body",
        "exchanges",
        "failure",
        "headers",
        "idle_since",
        "in_use",
        "keep_alive",
        "key",
        "last_read",
        "limit",
        "parser",
        "received",
        "status",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[str, int]) -> None:
        self._loop = loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.in_use = False
        self.exchanges = 0
        self.idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._reset(None, None, None, 0)

    def _reset(
        self, deadline: float | None, first_byte_by: float | None, read_timeout: float | None, limit: int
    ) -> None:
        """Start a new exchange."""
        self.status = 0
        self.answered = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.received = 0
        self.complete = False
        self.keep_alive = False
        self.eof_body = False
        self.failure: Failure | None = None
        self.limit = limit
        self._interim = False
        self._paused = False
        self._decoder: zlib._Decompress | None = None
        self._deadline = deadline
        self._first_byte_by = first_byte_by
        self._read_timeout = read_timeout
        self.last_read = self._loop.time()

    # -- the exchange ---------------------------------------------------------------------------

    def send(
        self, head: bytes, body: bytes, deadline: float | None, first_byte: float | None, read: float | None, limit: int
    ) -> None:
        """Write a request (`head` ends with the blank line) and arm the timer of its answer."""
        now = self._loop.time()
        self._reset(deadline, None if first_byte is None else now + first_byte, read, limit)
        self.in_use = True
        self.exchanges += 1
        assert self.transport is not None
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        self._arm(now)

    @property
    def write_paused(self) -> bool:
        """Whether the socket holds more of the request than it takes at once (see `drain`)."""
        return self._writable is not None

    async def drain(self) -> None:
        """Wait until the socket took the request (a large body waits for the peer to read it)."""
        while self._writable is not None and not self.closed:
            await asyncio.shield(self._writable)

    async def wait(self) -> None:
        """Wait for the next event of the exchange (headers, body bytes, its end, a failure)."""
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def take(self) -> bytes:
        """The body bytes received and not read yet."""
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.buffered = 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.last_read = self._loop.time()
            self.transport.resume_reading()
            if self._timer is None and not self.complete:
                self._arm(self.last_read)
        return data

    def finish(self) -> None:
        """The exchange is over: stop its timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def abort(self) -> None:
        """Drop the connection (an exchange that did not end cleanly cannot be reused)."""
        self.finish()
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    # -- timer ----------------------------------------------------------------------------------

    def _next_deadline(self) -> float | None:
        when = self._deadline
        if not self.status and self._first_byte_by is not None and (when is None or self._first_byte_by < when):
            when = self._first_byte_by
        if self._read_timeout is not None and not self._paused:
            idle_by = self.last_read + self._read_timeout
            if when is None or idle_by < when:
                when = idle_by
        return when

    def _arm(self, now: float) -> None:
        when = self._next_deadline()
        if when is not None:
            self._timer = self._loop.call_at(max(when, now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.complete or self.failure is not None:
            return
        now = self._loop.time()
        when = self._next_deadline()
        if when is not None and when <= now:
            self._fail(_TIMED_OUT)
            self.abort()
        else:
            self._arm(now)

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not registered subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # not TCP (a test's socket pair)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self.in_use or self.complete:  # bytes nobody asked for: the connection cannot be trusted
            self.abort()
            return
        self.last_read = self._loop.time()
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Failure(UpstreamProtocolError, "it switched protocols"))
            self.abort()
        except httptools.HttpParserError as exc:
            if self.failure is None:
                self._fail(Failure(UpstreamProtocolError, f"an invalid HTTP response: {exc}"))
            self.abort()

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        # The parser holds this connection's callbacks: without this, a closed connection would be
        # a reference cycle, freed only by a full collection (rare once a service has started).
        self.parser = _DETACHED
        self.finish()
        if self._writable is not None:
            self._writable.set_result(None)
            self._writable = None
        if not self.complete and self.failure is None:
            if self.eof_body and self.status and exc is None:
                self.complete = True  # a body delimited by the end of the connection
                self._flush_decoder()
            else:
                reason = str(exc) if exc is not None else "the connection closed before the answer was complete"
                self._fail(Failure(UpstreamConnectError, reason))
        self._wake()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None:
            self._writable.set_result(None)
            self._writable = None

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request: nothing on this connection can be trusted
            self.keep_alive = False
            self.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: an interim answer, the real one follows on the same connection
            self._interim = True
            self.headers = []
            return
        self.status = status
        chunked = False
        for name, value in self.headers:
            if name == b"content-length":
                self.content_length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"content-encoding":
                try:
                    self._decoder = _decoder(value)
                except ValueError as exc:
                    self._fail(Failure(UpstreamProtocolError, str(exc)))
        self.eof_body = not chunked and self.content_length is None and status not in _NO_BODY_STATUSES
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.failure is not None or self.complete:
            return
        if self._decoder is not None:
            try:
                body = self._decoder.decompress(body)
            except zlib.error as exc:
                self._fail(Failure(UpstreamProtocolError, f"a body that does not decompress: {exc}"))
                return
        self.received += len(body)
        if self.limit and self.received > self.limit:
            self._fail(Failure(UpstreamProtocolError, f"more than the {self.limit} bytes accepted"))
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.complete:
            return
        if self._interim:
            self._interim = False
            return
        self._flush_decoder()
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self.finish()
        self._wake()

    def _flush_decoder(self) -> None:
        if self._decoder is not None and self.failure is None:
            rest = self._decoder.flush()
            if rest:
                self.chunks.append(rest)
                self.buffered += len(rest)

    def _fail(self, failure: Failure) -> None:
        if self.failure is None and not self.complete:
            self.failure = failure
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _decoder(encoding: bytes) -> "zlib._Decompress | None":
    value = encoding.strip().lower()
    if value in (b"gzip", b"x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if value == b"deflate":
        return zlib.decompressobj()
    if value in (b"", b"identity"):
        return None
    raise ValueError(f"an unsupported Content-Encoding {encoding.decode('latin-1')!r}")


LOST = Failure(UpstreamConnectError, "the connection closed before the answer was complete")


def error(failure: Failure, node: str, url: str) -> UpstreamError:
    """`failure` as the `UpstreamError` to raise, naming `node`."""
    kind, reason = failure
    if kind is UpstreamTimeout:
        return UpstreamTimeout(f"{node} did not answer in time ({url})", node=node, url=url)
    if kind is UpstreamProtocolError:
        return UpstreamProtocolError(f"{node} sent {reason}", node=node, url=url)
    return UpstreamConnectError(f"connection to {node} failed: {reason}", node=node, url=url)
