"""A client that leaves before its answer is complete cancels its request, on either path."""

import asyncio
import urllib.parse

import anyio
import pytest
from fastapi import Request

from megaservice import MicroService
from megaservice.testing import serve

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("origin", [b"", b"origin: http://ui\r\n"], ids=["direct", "fastapi"])
async def test_a_client_that_leaves_cancels_its_request(origin: bytes) -> None:
    service = MicroService("slow", port=0)
    entered, cancelled = asyncio.Event(), asyncio.Event()

    async def wait(request: Request) -> dict[str, str]:
        await request.json()  # once the body is in, the service watches for the client leaving
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    service.add_route("/v1/wait", wait)
    async with serve(service.app) as url:
        parts = urllib.parse.urlsplit(url)
        _, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(b"POST /v1/wait HTTP/1.1\r\nhost: t\r\n" + origin + b"content-length: 2\r\n\r\n{}")
        with anyio.fail_after(5):
            await entered.wait()
            writer.close()
            await cancelled.wait()
            while service.app.inflight:  # type: ignore[attr-defined]
                await asyncio.sleep(0.01)


async def test_a_request_answered_in_full_is_not_cancelled_by_the_client_leaving() -> None:
    service = MicroService("quick", port=0)
    finished = asyncio.Event()

    async def answer(request: Request) -> dict[str, str]:
        finished.set()
        return {"ok": "yes"}

    service.add_route("/v1/answer", answer)
    async with serve(service.app) as url:
        parts = urllib.parse.urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(b"POST /v1/answer HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}")
        with anyio.fail_after(5):
            head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert finished.is_set()
