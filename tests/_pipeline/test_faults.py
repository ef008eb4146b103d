"""The fault-injection suite: a megaservice in front of an upstream that fails in every way we know.

Each case writes down what the client gets (status, a body naming the node), how long it may take,
and that nothing is left behind: no task, no connection held open, no pending request counted.
"""

import asyncio
import time
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from prometheus_client import REGISTRY

from megaservice import ServiceOrchestrator, ServiceType, Timeout
from megaservice.testing import Fault, FaultyServer, serve, unused_url
from tests.helpers import gateway, node

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]

TIMEOUT = Timeout(connect=1.0, first_byte=0.5, read=0.5, total=2.0)
NODE = "faulty"


def pending() -> float:
    return REGISTRY.get_sample_value("megaservice_request_pending") or 0.0


def our_tasks() -> set[asyncio.Task[Any]]:
    """Tasks of the megaservice and its server, not of the faulty upstream (which may keep a connection)."""
    return {t for t in asyncio.all_tasks() if not t.get_coro().__qualname__.startswith("FaultyServer.")}


async def settle(upstream: FaultyServer | None, tasks: set[asyncio.Task[Any]], before: float, keepalive: bool) -> None:
    """Wait (bounded) until nothing of the failed request is left; fail if something stays."""
    deadline = time.monotonic() + 3
    while True:
        leaked = our_tasks() - tasks - {asyncio.current_task()}
        held = upstream.connections if upstream is not None else 0
        if not leaked and pending() == before and held <= (1 if keepalive else 0):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"left behind: tasks {leaked}, pending {pending() - before}, upstream connections {held}")
        await asyncio.sleep(0.01)


# fault, FaultyServer arguments, status, error type, seconds the answer may take, connection may stay pooled
JSON_CASES = [
    ("refused", None, {}, 502, "upstream_unreachable", 1.5, False),
    ("closed", Fault.CLOSE, {}, 502, "upstream_unreachable", 1.5, False),
    ("4xx", Fault.STATUS, {"status": 404}, 502, "upstream_status", 1.5, True),
    ("5xx", Fault.STATUS, {"status": 503}, 502, "upstream_status", 1.5, True),
    ("hangs-before-headers", Fault.HANG, {}, 504, "upstream_timeout", 1.5, False),
    ("stalls-mid-body", Fault.STALL, {}, 504, "upstream_timeout", 1.5, False),
    ("resets-mid-body", Fault.RESET, {}, 502, "upstream_unreachable", 1.5, False),
    ("malformed-json", Fault.BAD_JSON, {}, 502, "upstream_protocol", 1.5, True),
    ("huge-body", Fault.HUGE, {"size": 4 * 1024 * 1024}, 502, "upstream_protocol", 2.5, False),
]


@pytest.mark.parametrize(
    ("fault", "options", "status", "kind", "bound", "keepalive"),
    [case[1:] for case in JSON_CASES],
    ids=[case[0] for case in JSON_CASES],
)
async def test_a_failing_node_gets_a_bounded_answer_naming_it(
    fault, options, status, kind, bound, keepalive, scheme, monkeypatch
):
    monkeypatch.setenv("MEGASERVICE_MAX_RESPONSE_BYTES", str(1024 * 1024))
    async with FaultyServer(fault or Fault.OK, ssl=scheme.server_ssl, **options) as upstream:
        target = unused_url(scheme.name) if fault is None else upstream.url
        pipeline = ServiceOrchestrator(timeout=TIMEOUT, client=scheme.client()).add(node("faulty", target))
        async with serve(gateway(pipeline).app) as url, aiohttp.ClientSession() as session:
            tasks, before = our_tasks(), pending()
            started = time.monotonic()
            async with session.post(f"{url}/v1/chat", json={"text": "q", "stream": False}) as response:
                body = await response.json()
            elapsed = time.monotonic() - started
            await settle(upstream, tasks, before, keepalive)
    assert response.status == status
    assert (body["node"], body["type"], body["object"]) == (NODE, kind, "error")
    assert elapsed < bound
    if fault is Fault.STATUS:
        assert body["upstream_status"] == options["status"]
    if fault in (Fault.HANG, Fault.STALL):
        assert len(upstream.disconnects) == 1  # the megaservice hung up on it


# fault, FaultyServer arguments, status, error type (None: no error), seconds
STREAM_CASES = [
    ("refused", None, {}, 502, "upstream_unreachable", 1.5),
    ("5xx-before-stream", Fault.STATUS, {"status": 500}, 502, "upstream_status", 1.5),
    ("4xx-before-stream", Fault.STATUS, {"status": 400}, 502, "upstream_status", 1.5),
    ("hangs-before-headers", Fault.HANG, {}, 504, "upstream_timeout", 1.5),
    ("stalls-mid-stream", Fault.STALL, {}, 200, "upstream_timeout", 1.5),
    ("resets-mid-stream", Fault.RESET, {}, 200, "upstream_unreachable", 1.5),
    ("endless-sse-event", Fault.BAD_SSE, {"size": 4 * 1024 * 1024}, 200, "upstream_protocol", 2.5),
    ("non-json-sse-event", Fault.BAD_JSON, {}, 200, None, 1.5),
    ("long-stream", Fault.HUGE, {"size": 2 * 1024 * 1024}, 200, None, 5.0),
]


@pytest.mark.parametrize(
    ("fault", "options", "status", "kind", "bound"),
    [case[1:] for case in STREAM_CASES],
    ids=[case[0] for case in STREAM_CASES],
)
async def test_a_failing_llm_stream_gets_a_bounded_answer_naming_it(fault, options, status, kind, bound, scheme):
    async with FaultyServer(fault or Fault.OK, ssl=scheme.server_ssl, **options) as upstream:
        target = unused_url(scheme.name) if fault is None else upstream.url
        pipeline = ServiceOrchestrator(timeout=TIMEOUT, client=scheme.client()).add(
            node("faulty", target, ServiceType.LLM)
        )
        async with serve(gateway(pipeline).app) as url, aiohttp.ClientSession() as session:
            tasks, before = our_tasks(), pending()
            started = time.monotonic()
            async with session.post(f"{url}/v1/chat", json={"text": "q", "stream": True}) as response:
                raw = await response.read()
            elapsed = time.monotonic() - started
            await settle(upstream, tasks, before, keepalive=fault in (Fault.STATUS, Fault.HUGE))
    assert response.status == status
    assert elapsed < bound
    if status != 200:
        body = orjson.loads(raw)
        assert (body["node"], body["type"]) == (NODE, kind)
        return
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    if kind is None:
        assert b"event: error" not in raw
        assert events[-1] == b"data: [DONE]"
        return
    assert events[-1].startswith(b"event: error\ndata: ")
    error = orjson.loads(events[-1].split(b"data: ", 1)[1])
    assert (error["node"], error["type"]) == (NODE, kind)


# -- a client that leaves cancels the upstream work of its request ------------------------------


async def post_then_leave(url: str, body: bytes, *, leave_when) -> float:
    """Send a request on a raw socket, wait for `leave_when()`, close the socket; return when it closed."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    with anyio.fail_after(3):
        while not await leave_when(reader):
            await asyncio.sleep(0.005)
    writer.close()
    return time.monotonic()


@pytest.mark.parametrize("stream", [False, True], ids=["non-streaming", "streaming"])
async def test_a_client_that_disconnects_cancels_upstream_work_within_100ms(stream):
    fault = Fault.STALL if stream else Fault.HANG  # a stream that started, or a node still thinking
    async with FaultyServer(fault) as upstream:
        kind = ServiceType.LLM if stream else ServiceType.UNDEFINED
        pipeline = ServiceOrchestrator(timeout=Timeout(read=30)).add(node("faulty", upstream.url, kind))
        async with serve(gateway(pipeline).app) as url:
            tasks, before = our_tasks(), pending()

            async def upstream_busy(reader: asyncio.StreamReader) -> bool:
                if stream:  # wait for the first event to reach the client
                    return b"partial" in await reader.read(65536)
                return upstream.requests == 1

            body = orjson.dumps({"text": "q", "stream": stream})
            left = await post_then_leave(url, body, leave_when=upstream_busy)
            with anyio.fail_after(3):
                while not upstream.disconnects:
                    await asyncio.sleep(0.001)
            await settle(upstream, tasks, before, keepalive=False)
    assert upstream.disconnects[0] - left < 0.1


async def test_a_disconnect_cancels_every_branch_of_a_fan_out():
    async with FaultyServer(Fault.HANG) as first, FaultyServer(Fault.HANG) as second:
        a, b = node("a", first.url), node("b", second.url)
        pipeline = ServiceOrchestrator(timeout=Timeout(read=30)).add(a).add(b)
        async with serve(gateway(pipeline).app) as url:

            async def both_busy(reader: asyncio.StreamReader) -> bool:
                return first.requests == 1 and second.requests == 1

            left = await post_then_leave(url, b'{"text": "q", "stream": false}', leave_when=both_busy)
            with anyio.fail_after(3):
                while not (first.disconnects and second.disconnects):
                    await asyncio.sleep(0.001)
    assert max(first.disconnects[0], second.disconnects[0]) - left < 0.1
