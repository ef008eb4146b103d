"""A lean HTTP/1.1 client for the calls a megaservice makes to plain-`http` nodes.

Connections are kept alive and pooled per host; each carries one request at a time; responses are
parsed by httptools (llhttp, the parser uvicorn serves with). Per POST it costs about a quarter of
the CPU of `aiohttp.ClientSession.post` (docs/performance.md, sixth round), which a five-hop pipeline
pays five times per request. `https` nodes keep going through aiohttp.

    Pool.post(...)  ->  Response  (status, content_type, read(), iter_any(), release(), close())
      └── Connection  an asyncio protocol: the request out, httptools callbacks in, one timer

Failures are raised as `UpstreamError` subclasses naming the node, as `client.upstream_errors` does
for aiohttp: refused or lost connections `UpstreamConnectError`, timeouts `UpstreamTimeout`, an
unparsable or oversized answer `UpstreamProtocolError`.
"""

import asyncio
import contextlib
import socket
import zlib
from collections.abc import Mapping
from typing import NamedTuple, cast
from urllib.parse import urlsplit

import httptools

from megaservice._version import __version__
from megaservice.exceptions import UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout

__all__ = ["Pool", "Response", "Target", "target"]

_HIGH_WATER = 256 * 1024
"""Bytes of unread body after which a connection stops reading from its socket."""
_NO_BODY_STATUSES = (204, 304)


class Target(NamedTuple):
    """Where a plain-http URL points: the pool key and the first two lines of a POST to it."""

    host: str
    port: int
    head: bytes


_targets: dict[str, Target | None] = {}


def target(url: str) -> Target | None:
    """The `Target` of `url`, or `None` when this client does not serve it (https, or not a plain URL)."""
    try:
        return _targets[url]
    except KeyError:
        pass
    parts = urlsplit(url)
    found = None
    if parts.scheme == "http" and parts.hostname and not parts.username and not parts.password:
        try:
            port = parts.port or 80
        except ValueError:
            port = 0
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if port and path.isascii() and _clean(path) and _clean(parts.netloc):
            host = parts.hostname
            found = Target(host, port, f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode("ascii"))
    if len(_targets) < 4096:
        _targets[url] = found
    return found


def _clean(text: str) -> bool:
    return not any(c in text for c in "\r\n\0 ")


_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_header_blocks: dict[tuple[tuple[str, str], ...], bytes] = {}


def _header_lines(headers: Mapping[str, str], length: int) -> bytes:
    """The request's header lines after `Host`, and the blank line."""
    key = tuple(headers.items())
    block = _header_blocks.get(key)
    if block is None:
        lines = [f"User-Agent: megaservice/{__version__}\r\n"]
        for name, value in key:
            if not _clean(name) or "\r" in value or "\n" in value or "\0" in value:
                raise ValueError(f"header {name!r} has a line break or NUL in it")
            if name.lower() not in _RESERVED:  # this client frames the request itself
                lines.append(f"{name}: {value}\r\n")
        block = "".join(lines).encode("latin-1")
        if len(_header_blocks) < 1024:
            _header_blocks[key] = block
    return b"Content-Length: %d\r\n%s\r\n" % (length, block)


class _Failure(NamedTuple):
    kind: type[UpstreamError]
    reason: str


_TIMED_OUT = _Failure(UpstreamTimeout, "")


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
        self.failure: _Failure | None = None
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
            self._fail(_Failure(UpstreamProtocolError, "it switched protocols"))
            self.abort()
        except httptools.HttpParserError as exc:
            if self.failure is None:
                self._fail(_Failure(UpstreamProtocolError, f"an invalid HTTP response: {exc}"))
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
                self._fail(_Failure(UpstreamConnectError, reason))
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
                    self._fail(_Failure(UpstreamProtocolError, str(exc)))
        self.eof_body = not chunked and self.content_length is None and status not in _NO_BODY_STATUSES
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.failure is not None or self.complete:
            return
        if self._decoder is not None:
            try:
                body = self._decoder.decompress(body)
            except zlib.error as exc:
                self._fail(_Failure(UpstreamProtocolError, f"a body that does not decompress: {exc}"))
                return
        self.received += len(body)
        if self.limit and self.received > self.limit:
            self._fail(_Failure(UpstreamProtocolError, f"more than the {self.limit} bytes accepted"))
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

    def _fail(self, failure: _Failure) -> None:
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


class Response:
    """A node's answer: the status and headers, then its body read whole or as it arrives.

    The aiohttp spelling the orchestrator streams with is kept: `content.iter_any()`,
    `release()` (read to the end: the connection goes back to the pool) and `close()` (drop it).
    """

    __slots__ = ("_conn", "_done", "_node", "_pool", "_url", "content_type", "headers", "status")

    def __init__(self, pool: "Pool", conn: Connection, node: str, url: str) -> None:
        self._pool = pool
        self._conn = conn
        self._node = node
        self._url = url
        self._done = False
        self.status = conn.status
        self.headers = conn.headers
        self.content_type = "application/octet-stream"
        for name, value in conn.headers:
            if name == b"content-type":
                self.content_type = value.decode("latin-1").split(";", 1)[0].strip().lower()

    @property
    def content(self) -> "Response":
        """The body reader (this response: aiohttp's `response.content`)."""
        return self

    @property
    def content_length(self) -> int | None:
        """The length the node announced, if it did."""
        return self._conn.content_length

    def error(self) -> UpstreamError:
        """The failure of this exchange as an `UpstreamError` naming the node."""
        failure = self._conn.failure
        assert failure is not None
        return _error(failure, self._node, self._url)

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body (or its first `limit` bytes, which is all that is read then)."""
        conn = self._conn
        while not conn.complete:
            if conn.failure is not None:
                raise self.error()
            if limit is not None and conn.buffered >= limit:
                return conn.take()[:limit]
            if conn.closed:
                raise _error(_LOST, self._node, self._url)
            await conn.wait()
        if conn.failure is not None:
            raise self.error()
        data = conn.take()
        return data if limit is None else data[:limit]

    def iter_any(self) -> "Response":
        """Iterate over the body as it arrives, everything received so far in one piece."""
        return self

    def __aiter__(self) -> "Response":
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        while True:
            if conn.chunks:
                return conn.take()
            if conn.failure is not None:
                raise self.error()
            if conn.complete:
                raise StopAsyncIteration
            if conn.closed:
                raise _error(_LOST, self._node, self._url)
            await conn.wait()

    def release(self) -> None:
        """The body was read: keep the connection for the next request if the exchange ended cleanly."""
        if self._done:
            return
        self._done = True
        self._pool.done(self._conn)

    def close(self) -> None:
        """Drop the connection (the rest of the body is not wanted, or the exchange failed)."""
        if self._done:
            return
        self._done = True
        self._conn.abort()
        self._pool.forget(self._conn)


_LOST = _Failure(UpstreamConnectError, "the connection closed before the answer was complete")


def _error(failure: _Failure, node: str, url: str) -> UpstreamError:
    kind, reason = failure
    if kind is UpstreamTimeout:
        return UpstreamTimeout(f"{node} did not answer in time ({url})", node=node, url=url)
    if kind is UpstreamProtocolError:
        return UpstreamProtocolError(f"{node} sent {reason}", node=node, url=url)
    return UpstreamConnectError(f"connection to {node} failed: {reason}", node=node, url=url)


async def _next_event(conn: Connection, node: str, url: str) -> None:
    """Wait for the exchange's next event; raise its failure, or the loss of the connection."""
    if conn.failure is not None:
        raise _error(conn.failure, node, url)
    if conn.closed:
        raise _error(_LOST, node, url)
    await conn.wait()


class Pool:
    """Keep-alive connections to plain-http nodes, reused most-recently-used first.

    **Parameters:**

    * **keepalive_timeout** - seconds an idle connection is kept.
    * **limit** - most connections open at once (0: no limit); a request waits for a free one.
    """

    def __init__(self, *, keepalive_timeout: float = 75.0, limit: int = 0) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle: dict[tuple[str, int], list[Connection]] = {}
        self._keepalive = keepalive_timeout
        self._slots = asyncio.Semaphore(limit) if limit > 0 else None
        self._active: set[Connection] = set()
        self.closed = False

    async def post(
        self,
        node: str,
        url: str,
        to: Target,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect: float | None,
        total: float | None,
        read: float | None,
        first_byte: float | None,
        limit: int,
    ) -> Response:
        """POST `body` to `to` and return the response once its headers arrived.

        `total` bounds the whole exchange (the body too), `read` the wait for the headers and
        between two reads, `first_byte` the wait for the headers; `limit` is the largest body
        accepted (0: any). The caller reads the body and then calls `release()` or `close()`.
        """
        if self.closed:
            raise RuntimeError("the connection pool is closed")
        head = to.head + _header_lines(headers, len(body))
        deadline = None if total is None else self._loop.time() + total
        for attempt in range(2):
            if self._slots is not None:
                await self._slots.acquire()
            try:
                conn = await self._connection(node, url, to, connect, deadline, pooled=attempt == 0)
            except BaseException:
                if self._slots is not None:
                    self._slots.release()
                raise
            try:
                conn.send(head, body, deadline, first_byte, read, limit)
                if conn.write_paused:
                    await conn.drain()
                while not conn.status:
                    await _next_event(conn, node, url)
            except UpstreamConnectError:
                conn.abort()
                self.forget(conn)
                if attempt or conn.exchanges == 1 or conn.answered:
                    raise
                # A kept-alive connection that ended without a byte of answer: the node closed it
                # while it was idle (its keep-alive ran out as we sent), so it never saw the request.
                # Sent again once, on a new connection.
                continue
            except BaseException:
                conn.abort()
                self.forget(conn)
                raise
            break
        if limit and conn.content_length is not None and conn.content_length > limit:
            conn.abort()
            self.forget(conn)
            raise UpstreamProtocolError(
                f"{node} answered {conn.content_length} bytes, more than the {limit} accepted", node=node, url=url
            )
        return Response(self, conn, node, url)

    async def _connection(
        self, node: str, url: str, to: Target, connect: float | None, deadline: float | None, *, pooled: bool
    ) -> Connection:
        key = (to.host, to.port)
        idle = self._idle.get(key) if pooled else None
        now = self._loop.time()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._keepalive:
                self._active.add(conn)
                return conn
            conn.abort()
        limit = connect
        if deadline is not None:
            left = deadline - now
            limit = left if limit is None else min(limit, left)
        try:
            async with asyncio.timeout(limit):
                _, conn = await self._loop.create_connection(lambda: Connection(self._loop, key), to.host, to.port)
        except TimeoutError:
            raise UpstreamTimeout(f"{node} did not answer in time ({url})", node=node, url=url) from None
        except OSError as exc:
            raise UpstreamConnectError(f"cannot reach {node} at {url}: {exc}", node=node, url=url) from exc
        self._active.add(conn)
        return conn

    def done(self, conn: Connection) -> None:
        """An exchange ended: pool its connection if it can carry another one, else close it."""
        conn.finish()
        conn.in_use = False
        if conn.complete and conn.keep_alive and not conn.closed and not self.closed and conn.failure is None:
            conn.idle_since = self._loop.time()
            self._active.discard(conn)
            self._idle.setdefault(conn.key, []).append(conn)
            if self._slots is not None:
                self._slots.release()
        else:
            conn.abort()
            self.forget(conn)

    def forget(self, conn: Connection) -> None:
        """A connection was dropped."""
        if conn in self._active:
            self._active.discard(conn)
            if self._slots is not None:
                self._slots.release()

    def close(self) -> None:
        """Close every connection (requests in flight fail)."""
        self.closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
        for conn in list(self._active):
            conn.abort()
