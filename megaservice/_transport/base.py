"""The seam between a megaservice's client and the wire: what a transport does for one node call.

    Transport.post(node, url, body, headers, timeout, limit)   -> (content type, body) of a 2xx answer
    Transport.get(node, url, headers, timeout, limit)          -> the same for a GET (model lists, /info, health)
    Transport.open_stream(node, url, body, headers, timeout)   -> StreamedAnswer, once its headers are in
    Transport.aclose()

Three transports implement it: `PoolTransport` (plain http, httptools), `SessionTransport`
(https, aiohttp) and `ASGITransport` (an ASGI app in the same process, no socket). Each raises
every failure as an `UpstreamError` subclass naming the node: a non-2xx answer as
`UpstreamStatusError`, a 2xx answer without content (204, 205) as `UpstreamProtocolError`, since a
pipeline node must answer something for the next one.
"""

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from megaservice.exceptions import UpstreamProtocolError
from megaservice.resilience import Timeout

__all__ = ["NO_CONTENT", "StreamedAnswer", "Transport", "no_content"]

NO_CONTENT = (204, 205)


class _Body(Protocol):
    def iter_any(self) -> AsyncIterator[bytes]: ...


class StreamedAnswer(Protocol):
    """A streaming node's answer, its headers in, its body read as it arrives.

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


class Transport(Protocol):
    """Carries a megaservice's calls to its nodes (see the module docstring)."""

    async def post(
        self, node: str, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeout, limit: int
    ) -> tuple[str, bytes]:
        """POST `body`; return `(content_type, body)` of a 2xx answer of at most `limit` bytes."""

    async def get(
        self, node: str, url: str, headers: Mapping[str, str], timeout: Timeout, limit: int
    ) -> tuple[str, bytes]:
        """GET `url`; return `(content_type, body)` of a 2xx answer of at most `limit` bytes."""

    async def open_stream(
        self, node: str, url: str, body: bytes, headers: Mapping[str, str], timeout: Timeout
    ) -> StreamedAnswer:
        """POST `body`; return the answer once its headers arrived (no total time limit)."""

    async def aclose(self) -> None:
        """Close the transport's connections."""


def no_content(node: str, url: str, status: int) -> UpstreamProtocolError:
    """The error for a node that answered a pipeline call with no content."""
    return UpstreamProtocolError(
        f"{node} answered {status} with no content; a pipeline node must answer a body", node=node, url=url
    )
