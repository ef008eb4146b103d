"""The pooled upstream HTTP client: one per event loop, keep-alive, no env lookups.

Plain-`http` nodes are called through `megaservice._http` (httptools, a quarter of aiohttp's CPU
per call); `https` nodes through one `aiohttp` session. Every call names the node it is for, and
every failure of either is raised as an `UpstreamError` subclass naming that node (the httpx
`map_exceptions` idea).
"""

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import aiohttp
import orjson
from pydantic import BaseModel

from megaservice import _http
from megaservice.exceptions import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from megaservice.resilience import Timeout

__all__ = ["StreamedAnswer", "Timeout", "UpstreamClient", "close_client", "dumps", "get_client", "upstream_errors"]

_T = TypeVar("_T")
_ERROR_BODY_LIMIT = 64 * 1024
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class _Body(Protocol):
    def iter_any(self) -> AsyncIterator[bytes]: ...


class StreamedAnswer(Protocol):
    """A streaming node's answer, its headers in, its body read as it arrives (`UpstreamClient.open_stream`)."""

    status: int

    @property
    def content(self) -> _Body:
        """The body: `content.iter_any()` yields what arrived so far, a piece per read."""

    def release(self) -> Any:
        """The body was read to its end: the connection may carry another request."""

    def close(self) -> None:
        """Drop the connection (the rest of the body is not wanted)."""


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> bytes:
    """Serialise a payload to JSON bytes (orjson; pydantic models and sets accepted)."""
    return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


@contextlib.contextmanager
def upstream_errors(node: str, url: str) -> Iterator[None]:
    """Re-raise the HTTP library's exceptions as `UpstreamError` subclasses naming `node`."""
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


class UpstreamClient:
    """A pooled client for calls from a megaservice to its nodes.

    It owns a `megaservice._http.Pool` for plain-http nodes and one `aiohttp.ClientSession` for
    https nodes, both created on first use inside the running event loop. Proxy variables and
    `~/.netrc` are not consulted (OPEA's per-hop thread hop); connections are kept alive and
    reused across requests. Redirects are not followed: a 3xx is the node's error.
    """

    def __init__(
        self, *, limit: int = 0, keepalive_timeout: float = 75.0, max_response_bytes: int | None = None
    ) -> None:
        self._limit = limit
        if max_response_bytes is None:
            max_response_bytes = int(os.environ.get("MEGASERVICE_MAX_RESPONSE_BYTES", "") or MAX_RESPONSE_BYTES)
        self.max_response_bytes = max_response_bytes
        """Largest non-streaming answer accepted from a node (env `MEGASERVICE_MAX_RESPONSE_BYTES`, default 64 MiB);
        a larger one is an `UpstreamProtocolError`."""
        self._keepalive_timeout = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None
        self._pool: _http.Pool | None = None

    @property
    def pool(self) -> _http.Pool:
        """The plain-http connection pool (created on first use, in the running loop)."""
        if self._pool is None or self._pool.closed:
            self._pool = _http.Pool(keepalive_timeout=self._keepalive_timeout, limit=self._limit)
        return self._pool

    @property
    def session(self) -> aiohttp.ClientSession:
        """The underlying session (created on first use, in the running loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                keepalive_timeout=self._keepalive_timeout,
                ttl_dns_cache=300,
                enable_cleanup_closed=False,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, json_serialize=lambda o: dumps(o).decode(), raise_for_status=False
            )
        return self._session

    async def post(
        self,
        node: str,
        url: str,
        body: bytes,
        *,
        headers: Mapping[str, str],
        timeout: aiohttp.ClientTimeout,
        first_byte: float | None = None,
    ) -> tuple[str, bytes]:
        """POST `body` and return `(content_type, body)` of a 2xx answer; raise `UpstreamError` otherwise.

        `first_byte` bounds the wait for the response headers (`timeout` bounds the rest).
        """
        to = _http.target(url)
        if to is not None:
            answer = await self._pool_post(node, url, to, body, headers, timeout, first_byte, self.max_response_bytes)
            try:
                data = await answer.read()
            except BaseException:
                answer.close()
                raise
            answer.release()
            if answer.status >= 300:
                raise UpstreamStatusError(
                    node=node, url=url, status=answer.status, body=data[:_ERROR_BODY_LIMIT].decode(errors="replace")
                )
            return answer.content_type, data
        with upstream_errors(node, url):
            response = await self._send(url, body, headers, timeout, first_byte)
            async with response:
                length = response.content_length
                if length is not None and length <= self.max_response_bytes:
                    data = await response.read()
                else:
                    data = await self._read_limited(node, url, response)
                if response.status >= 300:
                    raise UpstreamStatusError(
                        node=node,
                        url=url,
                        status=response.status,
                        body=data[:_ERROR_BODY_LIMIT].decode(errors="replace"),
                    )
                return response.content_type, data

    def _pool_post(
        self,
        node: str,
        url: str,
        to: _http.Target,
        body: bytes,
        headers: Mapping[str, str],
        timeout: aiohttp.ClientTimeout,
        first_byte: float | None,
        limit: int,
    ) -> Awaitable[_http.Response]:
        return self.pool.post(
            node,
            url,
            to,
            body,
            headers,
            connect=timeout.sock_connect if timeout.sock_connect is not None else timeout.connect,
            total=timeout.total,
            read=timeout.sock_read,
            first_byte=first_byte,
            limit=limit,
        )

    def _send(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: aiohttp.ClientTimeout,
        first_byte: float | None,
    ) -> Awaitable[aiohttp.ClientResponse]:
        """POST; the awaitable gives the response once its headers arrived (within `first_byte` seconds if set).

        Without `first_byte` it is aiohttp's own awaitable: no coroutine of ours in between.
        """
        pending = self.session.post(url, data=body, headers=headers, timeout=timeout)
        return pending if first_byte is None else _within(first_byte, pending)

    async def _read_limited(self, node: str, url: str, response: aiohttp.ClientResponse) -> bytes:
        limit = self.max_response_bytes
        if response.content_length is not None:
            response.close()
            raise UpstreamProtocolError(
                f"{node} answered {response.content_length} bytes, more than the {limit} accepted", node=node, url=url
            )
        chunks = []
        size = 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > limit:
                response.close()
                raise UpstreamProtocolError(f"{node} answered more than the {limit} bytes accepted", node=node, url=url)
            chunks.append(chunk)
        return b"".join(chunks)

    async def open_stream(
        self,
        node: str,
        url: str,
        body: bytes,
        *,
        headers: Mapping[str, str],
        timeout: aiohttp.ClientTimeout,
        first_byte: float | None = None,
    ) -> StreamedAnswer:
        """POST `body` and return the response once its headers arrived; the caller reads and releases it."""
        to = _http.target(url)
        if to is not None:
            answer = await self._pool_post(node, url, to, body, headers, timeout, first_byte, 0)
            if answer.status >= 300:
                try:
                    data = await answer.read(_ERROR_BODY_LIMIT)
                finally:
                    answer.close()
                raise UpstreamStatusError(node=node, url=url, status=answer.status, body=data.decode(errors="replace"))
            return answer
        with upstream_errors(node, url):
            response = await self._send(url, body, headers, timeout, first_byte)
            if response.status >= 300:
                try:
                    data = await response.content.read(_ERROR_BODY_LIMIT)
                finally:
                    response.close()
                raise UpstreamStatusError(
                    node=node, url=url, status=response.status, body=data.decode(errors="replace")
                )
            return response

    async def aclose(self) -> None:
        """Close the session and its pooled connections."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


async def _within(seconds: float, pending: Awaitable[_T]) -> _T:
    async with asyncio.timeout(seconds):
        return await pending


_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, UpstreamClient]" = weakref.WeakKeyDictionary()


def get_client() -> UpstreamClient:
    """Return the process's upstream client for the running event loop (one pool per loop)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = UpstreamClient()
    return client


async def close_client() -> None:
    """Close the running loop's upstream client, if one was created."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
