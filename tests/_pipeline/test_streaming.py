"""Real loopback sockets: streaming through a megaservice, TTFT, disconnects, errors after the first byte."""

import asyncio
import threading
import time

import aiohttp
import anyio
import orjson
import pytest
from fastapi import Request
from prometheus_client import REGISTRY

from megaservice import MicroService, ServiceOrchestrator, ServiceRoleType, ServiceType
from megaservice.testing import FakeGuardrail, FakeLLM, FakeService, serve
from tests.helpers import gateway, node

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]


def llm_only(llm_url: str) -> ServiceOrchestrator:
    return ServiceOrchestrator().add(node("llm", llm_url, ServiceType.LLM, endpoint="/v1/chat/completions"))


def pending() -> float:
    return REGISTRY.get_sample_value("megaservice_request_pending") or 0.0


async def read_events(response: aiohttp.ClientResponse) -> list[bytes]:
    return [line.rstrip(b"\n") async for line in response.content if line.strip()]


async def test_first_token_reaches_the_client_before_the_llm_finishes():
    llm = FakeLLM(tokens=["a", "b", "c", "d"], token_delay=0.2)
    async with serve(llm) as llm_url, serve(gateway(llm_only(llm_url)).app) as url:
        async with aiohttp.ClientSession() as session:
            with anyio.fail_after(5):
                started = time.monotonic()
                async with session.post(f"{url}/v1/chat", json={"text": "q"}) as response:
                    first = await response.content.readuntil(b"\n\n")
                    first_after = time.monotonic() - started
                    rest = await response.content.read()
    assert b'"content":"a"' in first
    assert first_after < 0.6  # one token delay plus slack, far below the 0.8 s of the whole stream
    assert rest.endswith(b"data: [DONE]\n\n")


async def test_a_sync_align_generator_sees_whole_events_on_the_loop_thread():
    loop_thread = threading.get_ident()
    threads = set()

    class Reframe(ServiceOrchestrator):
        def align_generator(self, gen, **kwargs):
            for event in gen:
                threads.add(threading.get_ident())
                assert event.endswith(b"\n\n")
                if b"[DONE]" not in event:
                    yield f"data: {len(event)}\n\n"
            yield "data: [DONE]\n\n"

    llm = FakeLLM(tokens=["x"] * 5)
    async with serve(llm) as llm_url:
        orchestrator = Reframe().add(node("llm", llm_url, ServiceType.LLM))
        results, _ = await orchestrator.schedule({"text": "q"})
        frames = [frame async for frame in results["llm/MicroService"].body_iterator]
    assert len(frames) == 6
    assert frames[-1] == "data: [DONE]\n\n"
    assert threads == {loop_thread}


async def test_an_async_align_generator_is_used_directly():
    class Upper(ServiceOrchestrator):
        async def align_generator(self, gen, **kwargs):
            async for event in gen:
                yield event.upper()

    async with serve(FakeLLM(tokens=["x"])) as llm_url:
        results, _ = await Upper().add(node("llm", llm_url, ServiceType.LLM)).schedule({"text": "q"})
        frames = [frame async for frame in results["llm/MicroService"].body_iterator]
    assert frames[-1] == b"DATA: [DONE]\n\n"


async def test_a_client_disconnect_cancels_the_upstream_llm_request():
    llm = FakeLLM(tokens=["t"] * 100, token_delay=0.05)
    before = pending()
    async with serve(llm) as llm_url, serve(gateway(llm_only(llm_url)).app) as url:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/chat", json={"text": "q"}) as response:
                await response.content.readuntil(b"\n\n")
            # the client is gone after one token
        with anyio.fail_after(3):
            while llm.cancelled == 0:
                await asyncio.sleep(0.02)
            while pending() != before:
                await asyncio.sleep(0.02)
    assert llm.cancelled == 1
    assert llm.completed == 0


async def test_an_llm_error_before_the_stream_is_a_502_naming_the_node():
    async with serve(FakeLLM(status=500)) as llm_url, serve(gateway(llm_only(llm_url)).app) as url:
        async with aiohttp.ClientSession() as session, session.post(f"{url}/v1/chat", json={"text": "q"}) as r:
            body = await r.json()
    assert r.status == 502
    assert body["node"] == "llm"
    assert body["upstream_status"] == 500


async def test_an_unreachable_node_is_a_502_and_a_slow_one_a_504():
    slow = FakeService(delay=2)
    async with serve(slow) as slow_url:
        unreachable = ServiceOrchestrator().add(node("gone", "http://127.0.0.1:9"))
        too_slow = ServiceOrchestrator().add(node("slow", slow_url, timeout=0.2))
        async with serve(gateway(unreachable).app) as url1, serve(gateway(too_slow).app) as url2:
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{url1}/v1/chat", json={"text": "q", "stream": False}) as r1:
                    b1 = await r1.json()
                async with session.post(f"{url2}/v1/chat", json={"text": "q", "stream": False}) as r2:
                    b2 = await r2.json()
    assert (r1.status, b1["node"], b1["type"]) == (502, "gone", "upstream_unreachable")
    assert (r2.status, b2["node"], b2["type"]) == (504, "slow", "upstream_timeout")


class DiesMidStream(FakeService):
    async def handle(self, request, scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send(
            {
                "type": "http.response.body",
                "body": b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n',
                "more_body": True,
            }
        )
        raise RuntimeError("the LLM server crashed")


async def test_a_failure_after_the_stream_started_ends_it_with_an_error_event():
    before = pending()
    async with serve(DiesMidStream()) as llm_url, serve(gateway(llm_only(llm_url)).app) as url:
        async with aiohttp.ClientSession() as session, session.post(f"{url}/v1/chat", json={"text": "q"}) as r:
            with anyio.fail_after(5):
                events = await read_events(r)
    assert r.status == 200
    assert events[0].startswith(b"data: {")
    assert events[-2] == b"event: error"
    body = orjson.loads(events[-1].removeprefix(b"data: "))
    assert body["node"] == "llm" and body["type"].startswith("upstream_") and body["code"] in (502, 504)
    error = {"message": body["message"], "type": body["type"], "code": body["code"]}
    assert body["error"] == error  # OpenAI's error object: OpenAI's clients raise APIError on it
    assert pending() == before


async def test_an_event_split_across_network_chunks_is_forwarded_whole():
    class Splitter(FakeService):
        async def handle(self, request, scope, receive, send):
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
            )
            for piece in [b'data: {"choices":[{"del', b'ta":{"content":"hi"}}]}\n', b"\ndata: [DONE]\n\n"]:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                await asyncio.sleep(0.02)
            await send({"type": "http.response.body", "body": b""})

    async with serve(Splitter()) as llm_url:
        results, _ = await llm_only(llm_url).schedule({"text": "q"})
        frames = [frame async for frame in results["llm/MicroService"].body_iterator]
    assert frames == [b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n', b"data: [DONE]\n\n"]


async def test_an_output_guardrail_after_the_llm_is_fed_sentence_by_sentence():
    llm = FakeLLM(tokens=[" OPEA", " is", " great.", " I", " think", " so."])
    guard = FakeGuardrail(banned=[], suffix=" ~~~")
    async with serve(llm) as llm_url, serve(guard) as guard_url:
        llm_node, guard_node = node("llm", llm_url, ServiceType.LLM), node("guardrail_out", guard_url, api_key=None)
        orchestrator = ServiceOrchestrator().add(llm_node).add(guard_node)
        orchestrator.flow_to(llm_node, guard_node)
        results, _ = await orchestrator.schedule({"text": "q"})
        frames = [frame async for frame in results["guardrail_out/MicroService"].body_iterator]
    assert [request["text"] for request in guard.requests] == [" OPEA is great.", " I think so."]
    tokens = [orchestrator.extract_chunk_str(frame).strip() for frame in frames]
    assert tokens == ["OPEA", "is", "great.", "~~~", "I", "think", "so.", "~~~", ""]


async def test_no_credential_of_one_node_is_sent_to_another():
    llm = FakeLLM(tokens=[" fine."])
    guard = FakeGuardrail(banned=[])
    async with serve(llm) as llm_url, serve(guard) as guard_url:
        llm_node = MicroService("llm", host=llm_url, endpoint="/v1/chat/completions", api_key="llm-secret",
                                use_remote_service=True, service_type=ServiceType.LLM)  # fmt: skip
        guard_node = node("guardrail_out", guard_url)
        orchestrator = ServiceOrchestrator().add(llm_node).add(guard_node)
        orchestrator.flow_to(llm_node, guard_node)
        results, _ = await orchestrator.schedule({"text": "q"})
        _ = [frame async for frame in results["guardrail_out/MicroService"].body_iterator]
    assert llm.headers[0]["authorization"] == "Bearer llm-secret"
    assert "authorization" not in guard.headers[0]


async def test_stream_metrics_count_tokens_and_requests():
    def count(name):
        return REGISTRY.get_sample_value(name) or 0.0

    first, inter = count("megaservice_first_token_latency_count"), count("megaservice_inter_token_latency_count")
    requests = count("megaservice_request_latency_count")
    async with serve(FakeLLM(tokens=["a", "b", "c"])) as llm_url:
        results, _ = await llm_only(llm_url).schedule({"text": "q"})
        _ = [frame async for frame in results["llm/MicroService"].body_iterator]
    assert count("megaservice_first_token_latency_count") == first + 1
    assert count("megaservice_inter_token_latency_count") == inter + 3  # b, c, [DONE]
    assert count("megaservice_request_latency_count") == requests + 1


class Lengths(ServiceOrchestrator):
    """A sync hook in ChatQnA's style: one frame per upstream event, its own end frame."""

    def align_generator(self, gen, **kwargs):
        for event in gen:
            if b"[DONE]" not in event:
                yield f"data: {len(event)}\n\n"
        yield "data: end\n\n"


class FailsOnSecond(ServiceOrchestrator):
    def align_generator(self, gen, **kwargs):
        for count, _event in enumerate(gen):
            if count == 1:
                raise ValueError("the hook broke")
            yield "data: first\n\n"


class StopsAfterOne(ServiceOrchestrator):
    closed = 0

    def align_generator(self, gen, **kwargs):
        try:
            for _event in gen:
                yield "data: enough\n\n"
                return
        finally:
            StopsAfterOne.closed += 1


async def stream_frames(orchestrator: ServiceOrchestrator, served: bool) -> list[bytes]:
    """The frames a client gets: over HTTP from a gateway (the relay's own loop) or from `body_iterator`."""
    if served:
        async with serve(gateway(orchestrator).app) as url, aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/chat", json={"text": "q"}) as response:
                assert response.status == 200
                return await read_events(response)
    results, _ = await orchestrator.schedule({"text": "q"})
    stream = next(iter(results.values()))
    return [frame.rstrip("\n").encode() if isinstance(frame, str) else frame.rstrip(b"\n")
            async for frame in stream.body_iterator]  # fmt: skip


@pytest.mark.parametrize("served", [True, False], ids=["served", "iterated"])
async def test_a_sync_hook_reframes_every_event_and_ends_the_stream(served):
    async with serve(FakeLLM(tokens=["a", "b", "c"], token_delay=0.01)) as llm_url:
        with anyio.fail_after(5):
            frames = await stream_frames(Lengths().add(node("llm", llm_url, ServiceType.LLM)), served)
    assert len(frames) == 4
    assert all(frame.startswith(b"data: ") and frame[6:].isdigit() for frame in frames[:3])
    assert frames[-1] == b"data: end"


@pytest.mark.parametrize("served", [True, False], ids=["served", "iterated"])
async def test_a_hook_failing_mid_stream_sends_what_it_yielded_then_an_error_event(served):
    before = pending()
    async with serve(FakeLLM(tokens=["a", "b", "c"], token_delay=0.01)) as llm_url:
        with anyio.fail_after(5):
            frames = await stream_frames(FailsOnSecond().add(node("llm", llm_url, ServiceType.LLM)), served)
    assert frames[0] == b"data: first"
    error: dict[str, object] = {"object": "error", "type": "internal_error", "message": "ValueError"}
    error["error"] = {"message": "ValueError", "type": "internal_error", "code": 500}
    event, _, data = b"\n".join(frames[1:]).partition(b"\n")
    assert event == b"event: error" and orjson.loads(data.removeprefix(b"data: ")) == error
    assert pending() == before


@pytest.mark.parametrize("served", [True, False], ids=["served", "iterated"])
async def test_a_hook_that_returns_early_ends_the_stream_and_drops_the_upstream(served):
    llm = FakeLLM(tokens=["t"] * 100, token_delay=0.05)
    StopsAfterOne.closed = 0
    async with serve(llm) as llm_url:
        with anyio.fail_after(2):  # the whole answer would take 5 s
            frames = await stream_frames(StopsAfterOne().add(node("llm", llm_url, ServiceType.LLM)), served)
            while llm.cancelled == 0:
                await asyncio.sleep(0.02)
    assert frames == [b"data: enough"]
    assert StopsAfterOne.closed == 1
    assert llm.completed == 0


class OneWrite(FakeService):
    """An SSE upstream that sends `body` in one write and ends."""

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    async def handle(self, request, scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def test_a_last_event_without_its_blank_line_still_reaches_the_client():
    async with serve(OneWrite(b"data: one\n\ndata: two")) as llm_url:
        with anyio.fail_after(5):
            frames = await stream_frames(Lengths().add(node("llm", llm_url, ServiceType.LLM)), served=True)
    assert frames == [b"data: 11", b"data: 9", b"data: end"]


async def test_output_a_hook_yielded_before_failing_on_the_same_read_goes_out_first():
    async with serve(OneWrite(b"data: 1\n\ndata: 2\n\n")) as llm_url:
        with anyio.fail_after(5):
            frames = await stream_frames(FailsOnSecond().add(node("llm", llm_url, ServiceType.LLM)), served=True)
    assert frames[0] == b"data: first"
    assert frames[1] == b"event: error"


async def test_a_handler_may_wrap_the_body_iterator_of_a_relayed_stream():
    orchestrator = Lengths()

    async def shout(frames):
        async for frame in frames:
            yield frame.upper()

    async with serve(FakeLLM(tokens=["a", "b"])) as llm_url:
        orchestrator.add(node("llm", llm_url, ServiceType.LLM))
        service = MicroService("Gateway", service_role=ServiceRoleType.MEGASERVICE, port=0, endpoint="/v1/chat")

        async def handle(request: Request):
            results, _ = await orchestrator.schedule({"text": "q"})
            response = next(iter(results.values()))
            response.body_iterator = shout(response.body_iterator)
            return response

        service.add_route("/v1/chat", handle, methods=["POST"])
        async with serve(service.app) as url, aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/chat", json={"text": "q"}) as response:
                frames = await read_events(response)
    assert frames[-1] == b"DATA: END"
    assert len(frames) == 3


async def test_a_middleware_sees_every_chunk_of_a_stream():
    seen = []

    class RecordBody:
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            async def recording(message):
                if message["type"] == "http.response.body":
                    seen.append(message.get("body", b""))
                await send(message)

            await self.app(scope, receive, recording)

    async with serve(FakeLLM(tokens=["a", "b", "c"], token_delay=0.01)) as llm_url:
        service = gateway(Lengths().add(node("llm", llm_url, ServiceType.LLM)))
        service.app.add_middleware(RecordBody)
        async with serve(service.app) as url, aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/chat", json={"text": "q"}) as response:
                body = await response.read()
    assert body.endswith(b"data: end\n\n")
    assert b"".join(seen) == body
