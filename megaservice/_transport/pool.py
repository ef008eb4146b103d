"""A lean HTTP/1.1 client for the calls a megaservice makes to plain-`http` nodes.

Connections are kept alive and pooled per host; each carries one request at a time; responses are
parsed by httptools (llhttp, the parser uvicorn serves with). Per POST it costs about a quarter of
the CPU of `aiohttp.ClientSession.post` (docs/performance.md, sixth round), which a five-hop pipeline
pays five times per request. `https` nodes keep going through aiohttp.

    PoolTransport   the `Transport` of plain-http nodes: post() / open_stream() on a Pool
    Pool.post(...)  ->  Response  (status, content_type, read(), iter_any(), release(), close())
      └── Connection  an asyncio protocol: the request out, httptools callbacks in, one timer

Failures are raised as `UpstreamError` subclasses naming the node, as `_transport.session` does
for aiohttp: refused or lost connections `UpstreamConnectError`, timeouts `UpstreamTimeout`, an
unparsable or oversized answer `UpstreamProtocolError`.
"""

import asyncio
from collections.abc import Coroutine, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from megaservice._transport.base import NO_CONTENT, no_content
from megaservice._transport.connection import LOST, Connection, error
from megaservice._version import __version__
from megaservice.exceptions import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from megaservice.resilience import Timeout

__all__ = ["Pool", "PoolTransport", "Response", "Target", "target"]


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
_TRACE_HEADERS = ("traceparent", "tracestate")
_USER_AGENT = f"User-Agent: megaservice/{__version__}\r\n"
_header_blocks: dict[tuple[tuple[str, str], ...], bytes] = {}


def _header_lines(headers: Mapping[str, str], length: int) -> bytes:
    """The request's header lines after `Host`, and the blank line."""
    key = tuple(headers.items())
    block = _header_blocks.get(key)
    if block is None:
        if "traceparent" in headers:  # new in every request: the node's own headers are kept, not these
            return _traced_lines(headers, length)
        block = _encode(key)
        if len(_header_blocks) < 1024:
            _header_blocks[key] = block
    return b"Content-Length: %d\r\n%s\r\n" % (length, block)


def _encode(headers: tuple[tuple[str, str], ...], *, agent: bool = True) -> bytes:
    lines = [_USER_AGENT] if agent else []
    for name, value in headers:
        if not _clean(name) or "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"header {name!r} has a line break or NUL in it")
        if name.lower() not in _RESERVED:  # this client frames the request itself
            lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


def _traced_lines(headers: Mapping[str, str], length: int) -> bytes:
    """The header lines of a traced call: the node's own (cached), then the trace context's (`megaservice.tracing`)."""
    own = {name: value for name, value in headers.items() if name not in _TRACE_HEADERS}
    trace = _encode(tuple((name, headers[name]) for name in _TRACE_HEADERS if name in headers), agent=False)
    return _header_lines(own, length)[:-2] + trace + b"\r\n"


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

    def finished(self) -> bool:
        """Whether the whole answer is in and read: the next read ends the body without waiting."""
        conn = self._conn
        return conn.complete and not conn.chunks and conn.failure is None

    def error(self) -> UpstreamError:
        """The failure of this exchange as an `UpstreamError` naming the node."""
        failure = self._conn.failure
        assert failure is not None
        return error(failure, self._node, self._url)

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body (or its first `limit` bytes, which is all that is read then)."""
        conn = self._conn
        while not conn.complete:
            if conn.failure is not None:
                raise self.error()
            if limit is not None and conn.buffered >= limit:
                return conn.take()[:limit]
            if conn.closed:
                raise error(LOST, self._node, self._url)
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
                raise error(LOST, self._node, self._url)
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


async def _next_event(conn: Connection, node: str, url: str) -> None:
    """Wait for the exchange's next event; raise its failure, or the loss of the connection."""
    if conn.failure is not None:
        raise error(conn.failure, node, url)
    if conn.closed:
        raise error(LOST, node, url)
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


class PoolTransport:
    """The `Transport` of plain-http nodes: a `Pool` of httptools connections, created in the running loop."""

    def __init__(self, *, keepalive_timeout: float = 75.0, limit: int = 0) -> None:
        self._keepalive_timeout = keepalive_timeout
        self._limit = limit
        self._pool: Pool | None = None

    @staticmethod
    def serves(url: str) -> bool:
        """Whether this transport can carry a request to `url` (plain http, a clean URL)."""
        return target(url) is not None

    @property
    def pool(self) -> Pool:
        """The connection pool (created on first use, in the running loop)."""
        pool = self._pool
        if pool is None or pool.closed:
            pool = self._pool = Pool(keepalive_timeout=self._keepalive_timeout, limit=self._limit)
        return pool

    def post(
        self, node: str, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeout, limit: int
    ) -> Coroutine[Any, Any, tuple[str, bytes]]:
        """POST `body`; return `(content_type, body)` of a 2xx answer of at most `limit` bytes."""
        # Not a coroutine itself: the caller awaits `_call` directly (no coroutine layer per node call).
        to = target(url)
        assert to is not None, url
        return self._call(node, url, to, body, headers, timeout, limit)

    def get(
        self, node: str, url: str, headers: Mapping[str, str], timeout: Timeout, limit: int
    ) -> Coroutine[Any, Any, tuple[str, bytes]]:
        """GET `url`; return `(content_type, body)` of a 2xx answer of at most `limit` bytes."""
        to = target(url)
        assert to is not None, url
        return self._call(node, url, Target(to.host, to.port, b"GET" + to.head[4:]), b"", headers, timeout, limit)

    async def _call(
        self, node: str, url: str, to: Target, body: bytes, headers: Mapping[str, str], timeout: Timeout, limit: int
    ) -> tuple[str, bytes]:
        answer = await self.pool.post(
            node,
            url,
            to,
            body,
            headers,
            connect=timeout.connect,
            total=timeout.total,
            read=timeout.read,
            first_byte=timeout.first_byte,
            limit=limit,
        )
        try:
            data = await answer.read()
        except BaseException:
            answer.close()
            raise
        answer.release()
        if answer.status >= 300:
            raise UpstreamStatusError(node=node, url=url, status=answer.status, body=data)
        if answer.status in NO_CONTENT:
            raise no_content(node, url, answer.status)
        return answer.content_type, data

    async def open_stream(
        self, node: str, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeout
    ) -> Response:
        """POST `body`; return the answer once its headers arrived (no total limit: a long stream is no failure)."""
        to = target(url)
        assert to is not None, url
        answer = await self.pool.post(
            node,
            url,
            to,
            body,
            headers,
            connect=timeout.connect,
            total=None,
            read=timeout.read,
            first_byte=timeout.first_byte,
            limit=0,
        )
        if answer.status >= 300:
            try:
                data = await answer.read(UpstreamStatusError.body_limit)
            finally:
                answer.close()
            raise UpstreamStatusError(node=node, url=url, status=answer.status, body=data)
        return answer

    async def aclose(self) -> None:
        """Close every connection."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
