"""dataprep's `link_list` fetches: the address checked is the address connected to (no DNS rebinding)."""

import asyncio
import socket

import pytest

from megaservice.components.dataprep.links import LinkLimits, fetch_link
from megaservice.exceptions import InputError

pytestmark = pytest.mark.anyio

PUBLIC = "93.184.216.34"


async def test_a_name_rebound_to_a_private_address_after_the_check_is_never_connected_to(monkeypatch):
    connected: list[object] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.append(writer.get_extra_info("peername"))
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 6\r\n\r\nsecret")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    resolved: list[str] = []

    async def rebinding(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        """The name's first answer is public (the check), every later one the private server (the fetch)."""
        address = PUBLIC if not resolved else "127.0.0.1"
        resolved.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", rebinding)
    try:
        with pytest.raises(InputError, match="non-public address"):
            await fetch_link(f"http://rebind.example:{port}/notes.txt", LinkLimits(timeout=5))
    finally:
        server.close()
        await server.wait_closed()
    assert resolved[:2] == [PUBLIC, "127.0.0.1"]
    assert connected == []  # the private address was never connected to


async def test_a_name_resolving_to_a_private_address_is_refused_before_anything_is_opened(monkeypatch):
    async def private(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("10.0.0.7", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", private)
    with pytest.raises(InputError, match=r"'intranet.example' resolves to a non-public address \(10.0.0.7\)"):
        await fetch_link("https://intranet.example/page.html", LinkLimits(timeout=5))
