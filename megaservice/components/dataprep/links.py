"""The pages `link_list` names, fetched behind megaservice's URL guards.

    page = await fetch_link("https://example.org/guide.html", LinkLimits())
    page.body, page.format      # the bytes (at most `max_bytes`) and what they are (html, pdf, text, ...)

Each URL is checked first (`megaservice.guards.check_url`): http or https, no credentials, and
every address its host resolves to public, unless `allow_private` (`MEGASERVICE_ALLOW_PRIVATE_URLS=1`).
The page is then fetched over a connection to an address checked when it was made: the host is
resolved once more, by `PublicResolver`, and only to addresses that are all public (a name that
answered a public address to the check and a private one to the fetch, DNS rebinding, is refused).
With `allow_private` nothing is refused, and the pooled client fetches. Redirects are not followed
(a 3xx is refused): give the final URL. Every failure is an `InputError` (400) naming the URL or
its host: the link was the client's input.
"""

import socket
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiohttp.abc

from megaservice._transport.session import SessionTransport
from megaservice.client import Timeout, UpstreamClient, get_client
from megaservice.components.dataprep.documents import format_of, format_of_content_type
from megaservice.exceptions import InputError, UpstreamError, UpstreamStatusError, UpstreamTimeout
from megaservice.guards import check_url, public_addresses

__all__ = ["LinkLimits", "Page", "PublicResolver", "fetch_link"]

_ACCEPT = "text/html,application/xhtml+xml,text/plain,text/markdown,application/pdf,application/json,*/*;q=0.5"
_USER_AGENT = "megaservice-dataprep"


@dataclass(frozen=True, slots=True)
class LinkLimits:
    """Where links may point and how much of them is read."""

    allow_private: bool = False
    max_bytes: int = 32 * 1024 * 1024
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Page:
    """A fetched link."""

    url: str
    body: bytes
    format: str
    """The document format to read it as (from `Content-Type`, else the URL's suffix, else html)."""


class PublicResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's name resolution for links: the host's addresses if all are public, else `InputError`.

    The connection is made to what this returns, so the address checked is the address connected to.
    """

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        """The host's addresses (all public), in aiohttp's shape."""
        infos = await public_addresses(host, port, family)
        return [
            {
                "hostname": host,
                "host": str(address[0]).split("%", 1)[0],
                "port": port,
                "family": found_family,
                "proto": proto,
                "flags": socket.AI_NUMERICHOST,
            }
            for found_family, _, proto, _, address in infos
        ]

    async def close(self) -> None:
        """Nothing to release."""


def _format(url: str, content_type: str, body: bytes) -> str:
    found = format_of_content_type(content_type) if content_type else None
    if found is not None:
        return found
    path = unquote(urlsplit(url).path)
    found = format_of(path.rsplit("/", 1)[-1])
    if found is not None:
        return found
    if body.startswith(b"%PDF"):
        return "pdf"
    raise InputError(
        f"{url}: answered {content_type or 'no Content-Type'}, which dataprep does not read", status_code=415
    )


async def fetch_link(url: str, limits: LinkLimits, client: UpstreamClient | None = None) -> Page:
    """The page at `url` (module docstring); `client` fetches it only with `allow_private`."""
    await check_url(url, allow_private=limits.allow_private)  # a clear 400 before anything is opened
    timeout = Timeout(connect=min(10.0, limits.timeout), read=limits.timeout, total=limits.timeout)
    headers = {"accept": _ACCEPT, "user-agent": _USER_AGENT}
    try:
        if limits.allow_private:
            transport = (client or get_client()).transport_for(url)
            content_type, body = await transport.get("link", url, headers, timeout, limits.max_bytes)
        else:
            checked = SessionTransport(limit=1, keepalive_timeout=1.0, ssl_context=None, resolver=PublicResolver())
            try:
                content_type, body = await checked.get("link", url, headers, timeout, limits.max_bytes)
            finally:
                await checked.aclose()
    except UpstreamStatusError as exc:
        hint = " (redirects are not followed: give the final URL)" if 300 <= exc.upstream_status < 400 else ""
        raise InputError(f"{url}: answered HTTP {exc.upstream_status}{hint}") from None
    except UpstreamTimeout:
        raise InputError(f"{url}: no answer within {limits.timeout:g} s") from None
    except UpstreamError as exc:
        raise InputError(f"{url}: cannot be fetched ({exc})") from None
    if len(body) > limits.max_bytes:  # a transport that does not bound the body itself
        raise InputError(f"{url}: more than {limits.max_bytes} bytes", status_code=413)
    if not body.strip():
        raise InputError(f"{url}: the page is empty")
    return Page(url, body, _format(url, content_type, body))
