"""The pooled upstream HTTP client: one per event loop, keep-alive, no env lookups.

Plain-`http` nodes are called through `megaservice._http` (httptools, a quarter of aiohttp's CPU
per call); `https` nodes through one aiohttp session (`megaservice._https`, imported on the first
https call). Every call names the node it is for, and every failure of either is raised as an
`UpstreamError` subclass naming that node.
"""

import asyncio
import ssl
import weakref
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import orjson
from pydantic import BaseModel

from megaservice import _http
from megaservice.exceptions import UpstreamStatusError
from megaservice.resilience import Timeout
from megaservice.settings import EnvSettings, variable

if TYPE_CHECKING:
    from megaservice._https import Session

__all__ = ["ClientSettings", "StreamedAnswer", "Timeout", "UpstreamClient", "close_client", "dumps", "get_client"]


@dataclass(frozen=True, slots=True)
class ClientSettings(EnvSettings):
    """How a megaservice's client treats its nodes' answers."""

    env_prefix: ClassVar[str] = "MEGASERVICE_"

    max_response_bytes: int = variable(
        "MAX_RESPONSE_BYTES",
        64 * 1024 * 1024,
        minimum=1,
        help="Largest non-streaming answer accepted from a node, in bytes; a larger one is a 502 naming the node.",
    )
    """Largest non-streaming answer accepted from a node; a larger one is an `UpstreamProtocolError`."""


class _Body(Protocol):
    def iter_any(self) -> AsyncIterator[bytes]: ...


class StreamedAnswer(Protocol):
    """A streaming node's answer, its headers in, its body read as it arrives (`UpstreamClient.open_stream`).

    Reading the body raises `UpstreamError` subclasses naming the node.
    """

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
    data = orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    # orjson's bytes keep the buffer it reserved: 64 KiB for an embedding of 7.6 KB, 4 KiB for `{}`.
    # A body lives as long as its node call (a retry resends it), so it is copied to its own size.
    return bytes(memoryview(data))


class UpstreamClient:
    """A pooled client for calls from a megaservice to its nodes.

    It owns a `megaservice._http.Pool` for plain-http nodes and one aiohttp session for https
    nodes, both created on first use inside the running event loop. Proxy variables and
    `~/.netrc` are not consulted (OPEA's per-hop thread hop); connections are kept alive and
    reused across requests. Redirects are not followed: a 3xx is the node's error.

    **Parameters:**

    * **limit** - most connections open at once per transport (0: no limit).
    * **keepalive_timeout** - seconds an idle connection is kept.
    * **max_response_bytes** - largest non-streaming answer accepted (default: `ClientSettings`, from the
      environment); a larger one is an `UpstreamProtocolError`.
    * **ssl_context** - how https nodes are verified (default: the system's trusted CAs).
    """

    def __init__(
        self,
        *,
        limit: int = 0,
        keepalive_timeout: float = 75.0,
        max_response_bytes: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._limit = limit
        if max_response_bytes is None:
            max_response_bytes = ClientSettings.from_env().max_response_bytes
        self.max_response_bytes = max_response_bytes
        self._keepalive_timeout = keepalive_timeout
        self._ssl_context = ssl_context
        self._session: Session | None = None
        self._pool: _http.Pool | None = None

    @property
    def pool(self) -> _http.Pool:
        """The plain-http connection pool (created on first use, in the running loop)."""
        if self._pool is None or self._pool.closed:
            self._pool = _http.Pool(keepalive_timeout=self._keepalive_timeout, limit=self._limit)
        return self._pool

    @property
    def session(self) -> "Session":
        """The https session (created on first use, in the running loop)."""
        if self._session is None or self._session.closed:
            from megaservice._https import Session

            self._session = Session(
                limit=self._limit, keepalive_timeout=self._keepalive_timeout, ssl_context=self._ssl_context
            )
        return self._session

    async def post(
        self, node: str, url: str, body: bytes, *, headers: Mapping[str, str], timeout: Timeout
    ) -> tuple[str, bytes]:
        """POST `body` and return `(content_type, body)` of a 2xx answer; raise `UpstreamError` otherwise.

        `timeout.total` bounds the whole call, `timeout.first_byte` the wait for the response headers.
        """
        to = _http.target(url)
        if to is None:
            return await self.session.post(node, url, body, headers, timeout, self.max_response_bytes)
        answer = await self._pool_post(node, url, to, body, headers, timeout, timeout.total, self.max_response_bytes)
        try:
            data = await answer.read()
        except BaseException:
            answer.close()
            raise
        answer.release()
        if answer.status >= 300:
            raise UpstreamStatusError(node=node, url=url, status=answer.status, body=data)
        return answer.content_type, data

    def _pool_post(
        self,
        node: str,
        url: str,
        to: _http.Target,
        body: bytes,
        headers: Mapping[str, str],
        timeout: Timeout,
        total: float | None,
        limit: int,
    ) -> Awaitable[_http.Response]:
        return self.pool.post(
            node,
            url,
            to,
            body,
            headers,
            connect=timeout.connect,
            total=total,
            read=timeout.read,
            first_byte=timeout.first_byte,
            limit=limit,
        )

    async def open_stream(
        self, node: str, url: str, body: bytes, *, headers: Mapping[str, str], timeout: Timeout
    ) -> StreamedAnswer:
        """POST `body` and return the answer once its headers arrived; the caller reads and releases it.

        A stream has no total time limit (`timeout.total` is not applied): a long answer is not a failure.
        """
        to = _http.target(url)
        if to is None:
            return await self.session.open_stream(node, url, body, headers, timeout)
        answer = await self._pool_post(node, url, to, body, headers, timeout, None, 0)
        if answer.status >= 300:
            try:
                data = await answer.read(UpstreamStatusError.body_limit)
            finally:
                answer.close()
            raise UpstreamStatusError(node=node, url=url, status=answer.status, body=data)
        return answer

    async def aclose(self) -> None:
        """Close the pool and the https session with their connections."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


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
