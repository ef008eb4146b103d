import io
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from megaservice import InputError
from megaservice.guards import check_url, fetch_blocking, read_upload, safe_path
from megaservice.testing import serve


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("/etc/shadow", "shadow"),
        ("C:\\Windows\\win.ini", "win.ini"),
        ("dir/sub/notes.txt", "notes.txt"),
    ],
)
def test_safe_path_keeps_only_the_last_component(tmp_path, name, expected):
    path = safe_path(tmp_path, name)
    assert path == tmp_path.resolve() / expected
    assert path.parent == tmp_path.resolve()


@pytest.mark.parametrize("name", ["", ".", "..", "../", "a/..", "bad\x00name", "line\nbreak", "x" * 300])
def test_safe_path_refuses_names_that_are_not_files(tmp_path, name):
    with pytest.raises(InputError):
        safe_path(tmp_path, name)


class _Upload:
    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    async def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


@pytest.mark.anyio
async def test_read_upload_stops_past_the_limit():
    assert await read_upload(_Upload(b"x" * 1000), max_bytes=1000) == b"x" * 1000
    with pytest.raises(InputError) as refused:
        await read_upload(_Upload(b"x" * 200_000), max_bytes=100_000)
    assert refused.value.status_code == 413


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/admin",
        "http://localhost:8080/",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
async def test_check_url_refuses_private_addresses(url):
    with pytest.raises(InputError, match="non-public"):
        await check_url(url)
    assert await check_url(url, allow_private=True) == url


@pytest.mark.anyio
@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/", "//no-scheme/x"])
async def test_check_url_refuses_other_schemes(url):
    with pytest.raises(InputError, match="only http and https"):
        await check_url(url, allow_private=True)


@pytest.mark.anyio
async def test_check_url_refuses_credentials_and_accepts_public_addresses():
    with pytest.raises(InputError, match="credentials"):
        await check_url("http://user:pw@8.8.8.8/")
    assert await check_url("https://8.8.8.8/dns") == "https://8.8.8.8/dns"


@asynccontextmanager
async def serve_files(files: dict[str, bytes]) -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    """Serve `files` by path (anything else: 404) on a loopback port; yield it and the requests' headers."""
    seen: list[dict[str, str]] = []

    async def answer(request: Request) -> Response:
        seen.append({"path": request.url.path, **request.headers})
        body = files.get(request.url.path)
        return Response(body or b"", status_code=200 if body is not None else 404)

    async with serve(Starlette(routes=[Route("/{path:path}", answer)])) as url:
        yield int(url.rsplit(":", 1)[1]), seen


async def fetch(url: str, **options: Any) -> bytes:
    """`fetch_blocking` in a worker thread (the test's server runs on this event loop)."""
    return await anyio.to_thread.run_sync(partial(fetch_blocking, url, **options))


def _resolver(monkeypatch: pytest.MonkeyPatch, *answers: list[str]) -> list[str]:
    """`getaddrinfo` answering a name with `answers[0]` first, then `answers[1]`, ... (the last one again);
    an address is its own answer. The names asked, in order."""
    asked: list[str] = []

    def getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        if host.replace(".", "").isdigit():
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (host, port))]
        asked.append(host)
        addresses = answers[min(len(asked), len(answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.anyio
async def test_a_fetch_goes_to_the_address_that_was_checked_not_to_a_second_answer(monkeypatch):
    async with serve_files({"/red.png": b"red"}) as (port, seen):
        # the name's first answer is this machine's server; any later one is a host nobody answers on
        asked = _resolver(monkeypatch, ["127.0.0.1"], ["10.255.255.1"])
        body = await fetch(f"http://pics.example:{port}/red.png", allow_private=True, max_bytes=100, timeout=5)
    assert body == b"red"
    assert asked == ["pics.example"]  # resolved once
    assert seen[0]["host"] == f"pics.example:{port}"  # the request still names the host


@pytest.mark.anyio
async def test_a_name_with_a_private_address_is_refused_before_anything_is_sent(monkeypatch):
    async with serve_files({"/red.png": b"red"}) as (port, seen):
        _resolver(monkeypatch, ["93.184.216.34", "127.0.0.1"])
        with pytest.raises(InputError, match=r"non-public address \(127\.0\.0\.1\)"):
            await fetch(f"http://pics.example:{port}/red.png", max_bytes=100, timeout=5)
    assert seen == []


@pytest.mark.anyio
async def test_a_fetch_says_what_went_wrong():
    async with serve_files({"/big": b"x" * 101, "/ok": b"x" * 100}) as (port, _):
        base = f"http://127.0.0.1:{port}"
        assert await fetch(f"{base}/ok", allow_private=True, max_bytes=100) == b"x" * 100
        with pytest.raises(InputError, match="the page is larger than 100 bytes") as too_big:
            await fetch(f"{base}/big", allow_private=True, max_bytes=100, what="the page")
        assert too_big.value.status_code == 413
        with pytest.raises(InputError, match="the URL answered HTTP 404"):
            await fetch(f"{base}/missing", allow_private=True, max_bytes=100)
        with pytest.raises(InputError, match="only http and https"):
            await fetch(f"ftp://127.0.0.1:{port}/ok", allow_private=True, max_bytes=100)
