"""The relay loop (`megaservice._pipeline.relay`): what goes to the client, in how many writes."""

import aiohttp
import anyio
import pytest

from megaservice import ServiceOrchestrator, ServiceType
from megaservice.testing import serve
from tests.helpers import Scripted, gateway, node

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]

TOKENS = b"".join(b'data: {"choices":[{"delta":{"content":"%s"}}]}\n\n' % t for t in (b"a", b"b"))


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(body), body)


async def whole_answer_in_one_write(request, writer) -> bool:
    """The LLM's whole answer, the end of the body included, in one TCP write: one read for the relay."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    writer.write(head + chunked(TOKENS) + chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    await writer.drain()
    return True


class Recorder:
    """An ASGI wrapper recording the body messages the service sends to the server."""

    def __init__(self, app) -> None:
        self.app = app
        self.bodies: list[tuple[bytes, bool]] = []

    async def __call__(self, scope, receive, send):
        async def recording(message):
            if message["type"] == "http.response.body":
                self.bodies.append((message.get("body", b""), message.get("more_body", False)))
            await send(message)

        await self.app(scope, receive, recording)


async def test_the_last_events_and_the_end_of_the_body_go_out_in_one_write():
    # issue 14: the [DONE] frame and the end of the body were two writes after the bookkeeping
    llm = Scripted(whole_answer_in_one_write)
    async with llm.running() as llm_url:
        pipeline = ServiceOrchestrator().add(node("llm", llm_url.rsplit("/v1", 1)[0], ServiceType.LLM))
        recorder = Recorder(gateway(pipeline).app)
        async with serve(recorder) as url, aiohttp.ClientSession() as session:
            with anyio.fail_after(5):
                async with session.post(f"{url}/v1/chat", json={"text": "q", "stream": True}) as response:
                    body = await response.read()
    assert body == TOKENS + b"data: [DONE]\n\n"
    assert recorder.bodies == [(body, False)]
