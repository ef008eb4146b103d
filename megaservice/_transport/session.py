"""`SessionTransport`: calls to `https` nodes through one aiohttp session; imported on a client's first https call.

Plain-http nodes go through `megaservice._transport.pool`. aiohttp adds about 9 MiB to a process when it
is imported, which a pipeline of plain-http nodes never pays. Every aiohttp failure leaves here
as an `UpstreamError` subclass naming the node (the httpx `map_exceptions` idea), the body of a
stream included.
"""

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from functools import lru_cache
from typing import TypeVar

import aiohttp
import aiohttp.abc

from megaservice._transport.base import NO_CONTENT, no_content
from megaservice.exceptions import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from megaservice.resilience import Timeout

__all__ = ["Answer", "SessionTransport", "upstream_errors"]

_T = TypeVar("_T")


@contextlib.contextmanager
def upstream_errors(node: str, url: str) -> Iterator[None]:
    """Re-raise aiohttp's exceptions as `UpstreamError` subclasses naming `node`."""
    try:
        yield
    except UpstreamError:
        raise
    except TimeoutError as exc:  # aiohttp's ServerTimeoutError/ConnectionTimeoutError subclass TimeoutError
        raise UpstreamTimeout(f"{node} did not answer in time ({url})", node=node, url=url) from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamConnectError(f"cannot reach {node} at {url}: {exc.os_error}", node=node, url=url) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise UpstreamConnectError(f"connection to {node} failed: {exc}", node=node, url=url) from exc
    except aiohttp.ClientResponseError as exc:
        raise UpstreamProtocolError(f"{node} sent an invalid HTTP response: {exc}", node=node, url=url) from exc
    except aiohttp.ClientError as exc:
        raise UpstreamConnectError(f"request to {node} failed: {exc}", node=node, url=url) from exc


@lru_cache(maxsize=256)
def _client_timeout(timeout: Timeout, stream: bool) -> aiohttp.ClientTimeout:
    total = None if stream else timeout.total  # a long answer is not a failure
    return aiohttp.ClientTimeout(total=total, sock_connect=timeout.connect, sock_read=timeout.read)


class Answer:
    """A streaming node's answer over aiohttp, with its failures named after the node (a `StreamedAnswer`)."""

    __slots__ = ("_node", "_response", "_url", "status")

    def __init__(self, response: aiohttp.ClientResponse, node: str, url: str) -> None:
        self._response = response
        self._node = node
        self._url = url
        self.status = response.status

    @property
    def content(self) -> "Answer":
        """The body reader (this answer)."""
        return self

    async def iter_any(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives, everything received so far in one piece."""
        with upstream_errors(self._node, self._url):
            async for chunk in self._response.content.iter_any():
                yield chunk

    def release(self) -> None:
        """The body was read to its end: the connection may carry another request."""
        self._response.release()

    def close(self) -> None:
        """Drop the connection (the rest of the body is not wanted)."""
        _drop(self._response)


def _drop(response: aiohttp.ClientResponse) -> None:
    """Close the connection at once: no TLS close_notify exchange for a node that may not answer it.

    aiohttp's `close()` shuts TLS down gracefully, which keeps the socket until the node answers
    (up to asyncio's 30 s `ssl_shutdown_timeout`); an answer we stopped reading is not worth that.
    """
    connection = response.connection
    if connection is not None and connection.protocol is not None:
        connection.protocol.abort()
    response.close()


class SessionTransport:
    """The `Transport` of https nodes: one aiohttp session, pooled, no proxy variables or `~/.netrc`, no redirects.

    The session is created on first use, inside the running event loop.
    """

    def __init__(
        self,
        *,
        limit: int,
        keepalive_timeout: float,
        ssl_context: ssl.SSLContext | None,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> None:
        """`resolver`: how host names become the addresses connected to (default: aiohttp's, cached 300 s)."""
        self._options = (limit, keepalive_timeout, ssl_context)
        self._resolver = resolver
        self._client: aiohttp.ClientSession | None = None

    @property
    def _session(self) -> aiohttp.ClientSession:
        session = self._client
        if session is None or session.closed:
            limit, keepalive_timeout, ssl_context = self._options
            connector = aiohttp.TCPConnector(
                limit=limit,
                keepalive_timeout=keepalive_timeout,
                ttl_dns_cache=300,
                enable_cleanup_closed=False,
                ssl=ssl_context if ssl_context is not None else True,
                resolver=self._resolver,
            )
            session = self._client = aiohttp.ClientSession(connector=connector, trust_env=False, raise_for_status=False)
        return session

    def _send(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeout, *, stream: bool, method: str = "POST"
    ) -> Awaitable[aiohttp.ClientResponse]:
        pending = self._session.request(
            method, url, data=body, headers=headers, timeout=_client_timeout(timeout, stream), allow_redirects=False
        )
        return pending if timeout.first_byte is None else _within(timeout.first_byte, pending)

    async def post(
        self, node: str, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeout, limit: int
    ) -> tuple[str, bytes]:
        """POST `body`; return `(content_type, body)` of a 2xx answer of at most `limit` bytes."""
        return await self._call("POST", node, url, body, headers, timeout, limit)

    async def get(
        self, node: str, url: str, headers: Mapping[str, str], timeout: Timeout, limit: int
    ) -> tuple[str, bytes]:
        """GET `url`; return `(content_type, body)` of a 2xx answer of at most `limit` bytes."""
        return await self._call("GET", node, url, b"", headers, timeout, limit)

    async def _call(
        self, method: str, node: str, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeout, limit: int
    ) -> tuple[str, bytes]:
        with upstream_errors(node, url):
            response = await self._send(url, body, headers, timeout, stream=False, method=method)
            try:
                data = await _read_limited(node, url, response, limit)
            except BaseException:
                _drop(response)
                raise
            response.release()
            if response.status >= 300:
                raise UpstreamStatusError(node=node, url=url, status=response.status, body=data)
            if response.status in NO_CONTENT:
                raise no_content(node, url, response.status)
            return response.content_type, data

    async def open_stream(
        self, node: str, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeout
    ) -> Answer:
        """POST `body`; return the answer once its headers arrived (the caller reads and releases it)."""
        with upstream_errors(node, url):
            response = await self._send(url, body, headers, timeout, stream=True)
            if response.status >= 300:
                try:
                    data = await response.content.read(UpstreamStatusError.body_limit)
                finally:
                    _drop(response)
                raise UpstreamStatusError(node=node, url=url, status=response.status, body=data)
            return Answer(response, node, url)

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._client is not None and not self._client.closed:
            await self._client.close()
        self._client = None


async def _read_limited(node: str, url: str, response: aiohttp.ClientResponse, limit: int) -> bytes:
    length = response.content_length
    if length is not None:
        if length > limit:
            raise UpstreamProtocolError(
                f"{node} answered {length} bytes, more than the {limit} accepted", node=node, url=url
            )
        return await response.read()
    chunks = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise UpstreamProtocolError(f"{node} answered more than the {limit} bytes accepted", node=node, url=url)
        chunks.append(chunk)
    return b"".join(chunks)


async def _within(seconds: float, pending: Awaitable[_T]) -> _T:
    async with asyncio.timeout(seconds):
        return await pending
