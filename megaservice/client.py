"""The pooled upstream client: one per event loop, keep-alive, no env lookups, one transport per URL.

A call names the node it is for; the client picks the transport that carries it (`megaservice._transport`):

    a mount whose prefix the URL starts with   UpstreamClient(mounts={"http://embedding:6000": ASGITransport(app)})
    http://…                                   PoolTransport: pooled httptools connections (a quarter of aiohttp's CPU)
    https://…                                  SessionTransport: one aiohttp session, imported on the first https call

Every failure of any transport is raised as an `UpstreamError` subclass naming that node. While
tracing is on, a call made inside a trace is a client span, and its `traceparent` header carries
the trace to the node (`megaservice.tracing`), whatever the transport.
"""

import asyncio
import ssl
import weakref
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from pydantic import BaseModel

from megaservice import tracing
from megaservice._transport.base import StreamedAnswer, Transport
from megaservice._transport.pool import Pool, PoolTransport
from megaservice.resilience import Timeout
from megaservice.settings import EnvSettings, variable

if TYPE_CHECKING:
    from megaservice._transport.session import SessionTransport

__all__ = [
    "ClientSettings",
    "StreamedAnswer",
    "Timeout",
    "Transport",
    "UpstreamClient",
    "close_client",
    "dumps",
    "get_client",
]


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

    Connections are kept alive and reused across requests; proxy variables and `~/.netrc` are not
    consulted (OPEA's per-hop thread hop). Redirects are not followed: a 3xx is the node's error.

    **Parameters:**

    * **limit** - most connections open at once per transport (0: no limit).
    * **keepalive_timeout** - seconds an idle connection is kept.
    * **max_response_bytes** - largest non-streaming answer accepted (default: `ClientSettings`, from the
      environment); a larger one is an `UpstreamProtocolError`.
    * **ssl_context** - how https nodes are verified (default: the system's trusted CAs).
    * **mounts** - transports for URL prefixes, tried longest first before the scheme's own
      (`{"http://embedding:6000": ASGITransport(app)}` calls that app in process).
    """

    def __init__(
        self,
        *,
        limit: int = 0,
        keepalive_timeout: float = 75.0,
        max_response_bytes: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        mounts: Mapping[str, Transport] | None = None,
    ) -> None:
        if max_response_bytes is None:
            max_response_bytes = ClientSettings.from_env().max_response_bytes
        self.max_response_bytes = max_response_bytes
        self._limit = limit
        self._keepalive_timeout = keepalive_timeout
        self._ssl_context = ssl_context
        self._mounts = sorted((mounts or {}).items(), key=lambda item: -len(item[0]))
        self._plain = PoolTransport(keepalive_timeout=keepalive_timeout, limit=limit)
        self._tls: SessionTransport | None = None
        self._routes: dict[str, Transport] = {}

    def mount(self, prefix: str, transport: Transport) -> None:
        """Carry calls to URLs starting with `prefix` by `transport` (a longer prefix wins)."""
        self._mounts = sorted([*self._mounts, (prefix, transport)], key=lambda item: -len(item[0]))
        self._routes.clear()

    @property
    def pool(self) -> "Pool":
        """The plain-http connection pool (created on first use, in the running loop)."""
        return self._plain.pool

    def transport_for(self, url: str) -> Transport:
        """The transport that carries calls to `url`."""
        transport = self._routes.get(url)
        if transport is None:
            transport = self._route(url)
            if len(self._routes) < 4096:
                self._routes[url] = transport
        return transport

    def _route(self, url: str) -> Transport:
        for prefix, mounted in self._mounts:
            if url.startswith(prefix):
                return mounted
        if PoolTransport.serves(url):
            return self._plain
        if self._tls is None:
            from megaservice._transport.session import SessionTransport

            self._tls = SessionTransport(
                limit=self._limit, keepalive_timeout=self._keepalive_timeout, ssl_context=self._ssl_context
            )
        return self._tls

    def post(
        self, node: str, url: str, body: bytes, *, headers: Mapping[str, str], timeout: Timeout
    ) -> Awaitable[tuple[str, bytes]]:
        """POST `body` and return `(content_type, body)` of a 2xx answer; raise `UpstreamError` otherwise.

        `timeout.total` bounds the whole call, `timeout.first_byte` the wait for the response headers.
        """
        # Not a coroutine itself: the transport's coroutine is awaited directly (one layer less per call).
        transport = self.transport_for(url)
        if tracing.tracer is not None:
            limit = self.max_response_bytes
            return tracing.tracer.client(
                "POST", node, url, headers, lambda sent: transport.post(node, url, body, sent, timeout, limit)
            )
        return transport.post(node, url, body, headers, timeout, self.max_response_bytes)

    def get(
        self, node: str, url: str, *, headers: Mapping[str, str] | None = None, timeout: Timeout
    ) -> Awaitable[tuple[str, bytes]]:
        """GET `url` and return `(content_type, body)` of a 2xx answer; raise `UpstreamError` otherwise."""
        transport = self.transport_for(url)
        if tracing.tracer is not None:
            limit = self.max_response_bytes
            return tracing.tracer.client(
                "GET", node, url, headers or {}, lambda sent: transport.get(node, url, sent, timeout, limit)
            )
        return transport.get(node, url, headers or {}, timeout, self.max_response_bytes)

    def open_stream(
        self, node: str, url: str, body: bytes, *, headers: Mapping[str, str], timeout: Timeout
    ) -> Awaitable[StreamedAnswer]:
        """POST `body` and return the answer once its headers arrived; the caller reads and releases it.

        A stream has no total time limit (`timeout.total` is not applied): a long answer is not a failure.
        Traced, its client span ends when the headers are in.
        """
        transport = self.transport_for(url)
        if tracing.tracer is not None:
            return tracing.tracer.client(
                "POST", node, url, headers, lambda sent: transport.open_stream(node, url, body, sent, timeout)
            )
        return transport.open_stream(node, url, body, headers, timeout)

    async def aclose(self) -> None:
        """Close every transport with its connections (mounted ones included)."""
        await self._plain.aclose()
        if self._tls is not None:
            await self._tls.aclose()
            self._tls = None
        for _, mounted in self._mounts:
            await mounted.aclose()
        self._routes.clear()


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
