"""Guards for services that accept uploads and URLs (dataprep and the like).

    safe_path(directory, filename)     a path inside `directory`, whatever the client sent
    read_upload(upload, max_bytes)     an upload's bytes, refused past `max_bytes`
    check_url(url, allow_private=...)  an http(s) URL whose host does not resolve to a private address
    public_addresses(hostname, port)   the host's addresses, all of them public (what to connect to)
    fetch_blocking(url, ...)           a URL's bytes, from the address that was checked (blocking)

Each refusal raises `InputError` (an HTTP 400/413 with a message saying what was wrong).
"""

import asyncio
import http.client
import ipaddress
import os
import socket
import ssl
import unicodedata
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from megaservice.exceptions import InputError

__all__ = ["check_url", "check_url_blocking", "fetch_blocking", "public_addresses", "read_upload", "safe_path"]

_CHUNK = 64 * 1024


def safe_path(directory: str | os.PathLike[str], filename: str) -> Path:
    r"""Return `directory/<name>`, where `<name>` is `filename` stripped of every directory part.

    `../../etc/passwd`, `/etc/passwd`, `C:\x`, names with NUL or control characters, `.`, `..`
    and empty names are refused or reduced to their last component, so the result is always a
    direct child of `directory`.
    """
    name = unicodedata.normalize("NFC", filename).replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or name in {".", ".."} or any(unicodedata.category(c) == "Cc" for c in name):
        raise InputError(f"invalid file name {filename!r}")
    if len(name.encode()) > 255:
        raise InputError(f"file name too long ({len(name.encode())} bytes, at most 255)")
    base = Path(directory).resolve()
    path = (base / name).resolve()
    if path.parent != base:
        raise InputError(f"invalid file name {filename!r}")
    return path


class _Upload(Protocol):
    async def read(self, size: int = -1) -> bytes: ...


async def read_upload(upload: _Upload, max_bytes: int) -> bytes:
    """Read an upload (e.g. Starlette's `UploadFile`) chunk by chunk; `InputError` (413) past `max_bytes`."""
    chunks = []
    size = 0
    while chunk := await upload.read(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise InputError(f"upload larger than {max_bytes} bytes", status_code=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"))
    )


def _split_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise InputError(f"only http and https URLs are accepted, not {parts.scheme or 'no scheme'!r}")
    if not parts.hostname:
        raise InputError(f"URL without a host: {url!r}")
    if parts.username or parts.password:
        raise InputError("URLs with credentials are not accepted")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InputError(f"invalid port in {url!r}") from exc
    return parts.hostname, port


def _check_addresses(hostname: str, infos: list[Any]) -> None:
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        if not _is_public(address):
            raise InputError(f"{hostname!r} resolves to a non-public address ({address}); refused")


async def check_url(url: str, *, allow_private: bool = False) -> str:
    """Return `url` if it is http(s) and its host resolves only to public addresses; else raise `InputError`.

    Every address the host resolves to is checked (a name with one public and one private
    address is refused). `allow_private=True` allows loopback, link-local and private ranges
    (an intranet crawler, a test). The caller should fetch with redirects off, or check each hop,
    and connect only to addresses `public_addresses()` returned: the name may resolve to another
    address a moment later (DNS rebinding).
    """
    hostname, port = _split_url(url)
    if allow_private:
        return url
    await public_addresses(hostname, port)
    return url


async def public_addresses(hostname: str, port: int, family: int = socket.AF_UNSPEC) -> list[Any]:
    """`getaddrinfo()`'s answers for `hostname` if every address is public; else raise `InputError`.

    Connect to these addresses (not to the name, which is resolved again) to fetch what was checked.
    """
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(hostname, port, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve {hostname!r}") from exc
    _check_addresses(hostname, infos)
    return infos


def check_url_blocking(url: str, *, allow_private: bool = False) -> str:
    """`check_url` for synchronous code (it resolves the host with a blocking call: not on the event loop)."""
    hostname, port = _split_url(url)
    if not allow_private:
        _resolve_blocking(hostname, port, allow_private=False)
    return url


def _resolve_blocking(hostname: str, port: int, *, allow_private: bool) -> list[Any]:
    """`getaddrinfo()`'s answers for `hostname`, every address public unless `allow_private`."""
    try:
        infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve {hostname!r}") from exc
    if not allow_private:
        _check_addresses(hostname, infos)
    return infos


def fetch_blocking(
    url: str,
    *,
    allow_private: bool = False,
    max_bytes: int,
    timeout: float = 10.0,
    accept: str = "*/*",
    ssl_context: ssl.SSLContext | None = None,
    what: str = "the URL",
) -> bytes:
    """The body of a 200 answer to `GET url`, fetched from an address checked to be public.

    The host is resolved once, every address is checked (unless `allow_private`), and the request
    goes to the first of them: a second DNS answer (rebinding) cannot point it elsewhere. https is
    verified against the URL's host name (`ssl_context`, default: the system's CAs). Redirects are
    not followed. Blocking: call it in a worker thread. Refusals and failures are `InputError`s
    naming `what` (413 past `max_bytes`).
    """
    hostname, port = _split_url(url)
    infos = _resolve_blocking(hostname, port, allow_private=allow_private)
    address = str(infos[0][4][0]).split("%", 1)[0]
    parts = urlsplit(url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl_context or ssl.create_default_context()
        connection = _PinnedHTTPS(address, port, hostname, timeout, context)
    else:
        connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", path, headers={"Host": parts.netloc, "Accept": accept})
        answer = connection.getresponse()
        if answer.status != 200:
            raise InputError(f"{what} answered HTTP {answer.status} (redirects are not followed)")
        body = answer.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(f"cannot fetch {what} at {url}: {exc}") from None
    finally:
        connection.close()
    if len(body) > max_bytes:
        raise InputError(f"{what} is larger than {max_bytes} bytes", status_code=413)
    return body


class _PinnedHTTPS(http.client.HTTPSConnection):
    """https to a given address, verifying the certificate against the URL's host name."""

    def __init__(self, address: str, port: int, server_name: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(address, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self._server_name)
