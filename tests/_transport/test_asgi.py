"""`ASGITransport` (through `megaservice.testing.InProcess`): what a socket would show, without one."""

import asyncio
from typing import Any

import anyio
import orjson
import pytest

from megaservice import (
    LLMParams,
    MicroService,
    ServiceOrchestrator,
    ServiceType,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from megaservice.resilience import Timeout
from megaservice.testing import FakeLLM, InProcess
from tests.helpers import node

pytestmark = pytest.mark.anyio

TIMEOUT = Timeout(connect=1, read=1, total=2)


async def test_a_microservice_app_answers_in_process():
    service = MicroService("echo", port=0, endpoint="/v1/echo")

    async def echo(request: dict[str, Any]) -> dict[str, Any]:
        return {"echo": request}

    service.add_route("/v1/echo", echo, methods=["POST"])
    async with InProcess() as nodes, nodes.serve(service.app) as url:
        content_type, body = await nodes.client.post(
            "echo", f"{url}/v1/echo", b'{"a": 1}', headers={"Content-Type": "application/json"}, timeout=TIMEOUT
        )
    assert (content_type, orjson.loads(body)) == ("application/json", {"echo": {"a": 1}})


async def test_a_stream_arrives_as_it_is_sent():
    llm = FakeLLM(tokens=["a", "b", "c"], token_delay=0.05)
    async with InProcess() as nodes, nodes.serve(llm) as url:
        answer = await nodes.client.open_stream(
            "llm", f"{url}/v1/chat/completions", b'{"stream": true}', headers={}, timeout=TIMEOUT
        )
        pieces = [piece async for piece in answer.content.iter_any()]
        answer.release()
    assert len(pieces) >= 3  # one write per token, not one buffered body
    assert b"".join(pieces).count(b"data: ") == 4


async def test_hanging_up_tells_the_app_it_was_disconnected():
    llm = FakeLLM(tokens=["a"] * 100, token_delay=0.02)
    async with InProcess() as nodes, nodes.serve(llm) as url:
        answer = await nodes.client.open_stream("llm", f"{url}/v1/x", b'{"stream": true}', headers={}, timeout=TIMEOUT)
        await anext(aiter(answer.content.iter_any()))
        answer.close()
        with anyio.fail_after(2):
            while llm.active:
                await asyncio.sleep(0.01)
    assert (llm.cancelled, llm.completed) == (1, 0)


async def _fails_before(scope, receive, send):
    if scope["type"] != "http":
        return
    raise RuntimeError("bug")


async def _fails_after(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    await send({"type": "http.response.body", "body": b"data: a\n\n", "more_body": True})
    raise RuntimeError("bug")


async def _hangs(scope, receive, send):
    if scope["type"] != "http":
        return
    await asyncio.sleep(10)


async def _no_content(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 204, "headers": [(b"content-type", b"image/png")]})
    await send({"type": "http.response.body", "body": b""})


async def test_an_app_failing_before_it_answers_is_a_500_and_after_a_lost_connection():
    async with InProcess() as nodes, nodes.serve(_fails_before) as before, nodes.serve(_fails_after) as after:
        with pytest.raises(UpstreamStatusError) as status:
            await nodes.client.post("n", f"{before}/x", b"{}", headers={}, timeout=TIMEOUT)
        answer = await nodes.client.open_stream("n", f"{after}/x", b"{}", headers={}, timeout=TIMEOUT)
        with pytest.raises(UpstreamConnectError, match="connection to n failed"):
            async for _ in answer.content.iter_any():
                pass
    assert status.value.upstream_status == 500


async def test_the_time_limits_apply():
    async with InProcess() as nodes, nodes.serve(_hangs) as url:
        with anyio.fail_after(2), pytest.raises(UpstreamTimeout, match="slow did not answer in time"):
            await nodes.client.post("slow", f"{url}/x", b"{}", headers={}, timeout=Timeout(first_byte=0.1))


async def test_a_node_answering_no_content_is_a_protocol_error_not_an_empty_answer():
    # regression (issue 14): a 204 from a node became b'' passed downstream as if it were an answer
    async with InProcess() as nodes, nodes.serve(_no_content) as url:
        pipeline = ServiceOrchestrator(client=nodes.client).add(node("blank", url, ServiceType.EMBEDDING))
        with pytest.raises(UpstreamProtocolError, match="blank answered 204 with no content"):
            await pipeline.schedule({"text": "hi"}, llm_parameters=LLMParams(stream=False))


async def test_a_get_is_a_get():
    seen = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        seen.append(scope["method"])
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    async with InProcess() as nodes, nodes.serve(app) as url:
        with pytest.raises(UpstreamStatusError) as caught:
            await nodes.client.get("n", f"{url}/v1/models", timeout=TIMEOUT)
    assert (seen, caught.value.upstream_status) == (["GET"], 404)
