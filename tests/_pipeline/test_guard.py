"""An output guardrail after the LLM, over real sockets: the real guardrails service checks the stream as it goes."""

import ast
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import orjson
import pytest

from megaservice import (
    CircuitBreaker,
    LLMParams,
    ServiceOrchestrator,
    ServiceType,
    UpstreamConnectError,
    UpstreamUnavailable,
)
from megaservice.components.guardrails import GuardrailsSettings, create_service
from megaservice.settings import Settings
from megaservice.testing import FakeGuardrail, FakeLLM, FakeService, serve, unused_url
from tests.helpers import gateway, node

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]

GOOD = "Paris is the capital of France. It has many museums."
BAD = " The launch code for Project Falcon is 1234."
AFTER = " This sentence must never reach the client. Nor this one."
GUARD = "guardrail_out"


def words(text: str) -> list[str]:
    return [" " + w if i or text.startswith(" ") else w for i, w in enumerate(text.split())]


class TextAnswers(ServiceOrchestrator):
    """ChatQnA's hook: a non-streaming LLM answer goes on as `{"text"}` (what a guardrail node reads)."""

    def align_outputs(self, data, cur_node, inputs, runtime_graph, llm_parameters_dict, **kwargs):
        if self.services[cur_node].service_type == ServiceType.LLM and not llm_parameters_dict["stream"]:
            return {"text": data["choices"][0]["message"]["content"]}
        return data


def pipeline(
    llm_url: str, guard_url: str, breaker: CircuitBreaker | None = None, **settings: str
) -> ServiceOrchestrator:
    llm = node("llm", llm_url, ServiceType.LLM, endpoint="/v1/chat/completions")
    guard = node(GUARD, guard_url, ServiceType.GUARDRAIL, endpoint="/v1/guardrails")
    orchestrator = TextAnswers(settings=Settings.from_env(settings), breaker=breaker).add(llm).add(guard)
    orchestrator.flow_to(llm, guard)
    return orchestrator


@asynccontextmanager
async def guardrails(**environ: str) -> AsyncIterator[str]:
    """The real guardrails service (banned substrings, a regex, PII masking) on a real socket."""
    settings = GuardrailsSettings.from_env(
        {
            "GUARDRAILS_CHECKS": "banned,pii",
            "GUARDRAILS_BANNED_SUBSTRINGS": "project falcon",
            "GUARDRAILS_BANNED_REGEXES": r'["\\bsk-[A-Za-z0-9]{8,}"]',
            **environ,
        }
    )
    async with serve(create_service(settings).app) as url:
        yield url


class Reader:
    """A client's view of an SSE answer: OPEA token frames decoded, other events kept whole."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.text = ""
        self.events: list[bytes] = []

    async def next_event(self) -> bytes | None:
        try:
            event = (await self.response.content.readuntil(b"\n\n")).strip()
        except aiohttp.client_exceptions.ClientPayloadError:
            return None
        if not event:
            return None
        self.events.append(event)
        if event.startswith(b"data: b"):
            self.text += ast.literal_eval(event[len(b"data: ") :].decode()).decode()
        return event

    async def until(self, text: str) -> None:
        while not self.text.endswith(text):
            assert await self.next_event() is not None, f"the stream ended before {text!r}: {self.text!r}"

    async def rest(self) -> None:
        while await self.next_event() is not None:
            pass


def guard_tasks() -> list[asyncio.Task[Any]]:
    """Tasks of output guards still running (readers of an LLM's stream, checks of sentences)."""
    names = ("CheckedUnits._read", "_NodeCheck.__call__")
    return [task for task in asyncio.all_tasks() if task.get_coro().__qualname__ in names]


async def poll(condition, what: str) -> None:
    """Wait (bounded) until `condition()`; fail saying `what` did not happen."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"not within 10 s: {what}")


async def test_a_stream_that_turns_bad_mid_way_stops_with_the_good_prefix_and_a_final_event_naming_the_check():
    tokens = words(GOOD + BAD + AFTER)
    llm = FakeLLM(tokens, hold_after=len(words(GOOD + BAD)))  # still generating when the bad sentence is checked
    async with guardrails() as guard_url, serve(llm) as llm_url:
        service = gateway(pipeline(llm_url, guard_url))
        async with serve(service.app) as url, aiohttp.ClientSession() as session:
            with anyio.fail_after(20):
                async with session.post(f"{url}/v1/chat", json={"text": "q"}) as response:
                    assert response.status == 200
                    reader = Reader(response)
                    await reader.rest()
            await poll(lambda: llm.cancelled == 1, "the LLM sees its client leave")
            await poll(lambda: not guard_tasks(), "nothing of the guard is left running")
    refusal = "Violated policies: banned (project falcon), please check your input."
    assert reader.text == GOOD + " " + refusal  # the good prefix, then the refusal as OPEA frames (what OPEA UIs show)
    last = reader.events[-1]
    assert last.startswith(b"event: error\ndata: ")
    body = orjson.loads(last.split(b"data: ", 1)[1])
    assert body["type"] == "guardrail_violation" and body["code"] == 466
    assert body["node"].startswith(GUARD) and body["message"] == refusal
    assert body["violations"] == [{"check": "banned", "detail": "project falcon"}]
    assert not any(b"[DONE]" in event for event in reader.events)  # the answer is not complete
    assert llm.completed == 0


async def test_sentences_that_passed_reach_the_client_while_the_llm_is_still_writing():
    first, second = "The first sentence. The second one.", " The third arrives later."
    llm = FakeLLM(words(first + second), hold_after=len(words(first)))
    async with guardrails() as guard_url, serve(llm) as llm_url:
        service = gateway(pipeline(llm_url, guard_url))
        async with serve(service.app) as url, aiohttp.ClientSession() as session:
            with anyio.fail_after(20):
                async with session.post(f"{url}/v1/chat", json={"text": "q"}) as response:
                    reader = Reader(response)
                    await reader.until(first)
                    assert llm.active == 1 and llm.completed == 0  # held: the LLM has not written the rest
                    llm.release()
                    await reader.rest()
    assert reader.text == first + second
    assert reader.events[-1] == b"data: [DONE]"


async def test_a_client_that_leaves_mid_stream_cancels_the_llm_and_the_checks():
    first = "The first sentence. The second one."
    llm = FakeLLM(words(first + AFTER), hold_after=len(words(first)))
    async with guardrails() as guard_url, serve(llm) as llm_url:
        service = gateway(pipeline(llm_url, guard_url))
        async with serve(service.app) as url, aiohttp.ClientSession() as session:
            with anyio.fail_after(20):
                async with session.post(f"{url}/v1/chat", json={"text": "q"}) as response:
                    reader = Reader(response)
                    await reader.until(first)
                    response.close()  # the client leaves while the LLM is still writing
            await poll(lambda: llm.cancelled == 1, "the LLM sees the megaservice leave")
            await poll(lambda: not guard_tasks(), "nothing of the guard is left running")


async def test_a_node_that_masks_replaces_the_text_of_its_sentence():
    answer = "Sure. Write to jane@corp.example for the report. Bye."
    llm = FakeLLM(words(answer))
    async with guardrails(GUARDRAILS_PII_ACTION="mask") as guard_url, serve(llm) as llm_url:
        service = gateway(pipeline(llm_url, guard_url))
        async with serve(service.app) as url, aiohttp.ClientSession() as session:
            with anyio.fail_after(20):
                async with session.post(f"{url}/v1/chat", json={"text": "q"}) as response:
                    reader = Reader(response)
                    await reader.rest()
    assert reader.text == "Sure. Write to [EMAIL] for the report. Bye."
    assert reader.events[-1] == b"data: [DONE]"


async def test_a_guardrail_that_is_down_fails_the_request_closed_with_a_502_naming_it_and_cancels_the_llm():
    llm = FakeLLM(words(GOOD + AFTER), hold_after=len(words(GOOD)))
    async with serve(llm) as llm_url:
        service = gateway(pipeline(llm_url, unused_url()))
        async with serve(service.app) as url, aiohttp.ClientSession() as session:
            with anyio.fail_after(20):
                async with session.post(f"{url}/v1/chat", json={"text": "q"}) as response:
                    status, body = response.status, await response.json()
                async with session.post(f"{url}/v1/chat", json={"text": "q", "stream": False}) as response:
                    plain_status, plain_body = response.status, await response.json()
            await poll(lambda: llm.cancelled == 1, "the LLM sees its client leave")
            await poll(lambda: not guard_tasks(), "nothing of the guard is left running")
    assert status == 502 and plain_status == 502
    for answer in (body, plain_body):
        assert GUARD in orjson.dumps(answer).decode()
    assert llm.completed == 1  # the non-streaming call only


async def test_an_open_circuit_answers_503_naming_the_guardrail():
    llm = FakeLLM(words(GOOD))
    async with serve(llm) as llm_url:
        orchestrator = pipeline(llm_url, unused_url(), breaker=CircuitBreaker(failures=1, reset_after=60))
        service = gateway(orchestrator)
        async with serve(service.app) as url, aiohttp.ClientSession() as session:
            statuses = []
            for _ in range(2):
                async with session.post(f"{url}/v1/chat", json={"text": "q"}) as response:
                    statuses.append(response.status)
                    body = await response.text()
    assert statuses == [502, 503]
    assert GUARD in body


class Clock:
    """A clock the test steps by hand: the orchestrator's circuits measure time with it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("stream", [True, False])
async def test_a_guardrail_whose_circuit_is_open_fails_fast_without_calling_the_llm(stream: bool):
    llm, clock = FakeLLM(words(GOOD)), Clock()
    params = LLMParams(stream=stream)
    async with serve(llm) as llm_url:
        orchestrator = pipeline(llm_url, unused_url(), breaker=CircuitBreaker(failures=1, reset_after=60))
        orchestrator.clock = clock
        with pytest.raises(UpstreamConnectError):  # opens the guardrail's circuit
            await orchestrator.schedule({"text": "q"}, llm_parameters=params)
        assert len(llm.requests) == 1
        with pytest.raises(UpstreamUnavailable) as refused:
            await orchestrator.schedule({"text": "q"}, llm_parameters=params)
        assert len(llm.requests) == 1  # the LLM was not asked for an answer nobody could check
        assert (refused.value.node, refused.value.status_code) == (GUARD, 503)
        clock.now += 61  # half-open: the trial goes through, the LLM first
        with pytest.raises(UpstreamConnectError):
            await orchestrator.schedule({"text": "q"}, llm_parameters=params)
        assert len(llm.requests) == 2


async def test_a_guardrail_failing_open_with_its_circuit_open_still_lets_the_answer_through():
    llm = FakeLLM(words(GOOD))
    async with serve(llm) as llm_url:
        breaker = CircuitBreaker(failures=1, reset_after=60)
        orchestrator = pipeline(llm_url, unused_url(), breaker=breaker, MEGASERVICE_NODE_GUARDRAIL_OUT_FAIL_OPEN="1")
        for _ in range(2):
            results, _ = await orchestrator.schedule({"text": "q"})
            frames = [str(frame) async for frame in results[f"{GUARD}/MicroService"].body_iterator]
            assert frames and not any("event: error" in frame for frame in frames)
    assert len(llm.requests) == 2


async def test_a_guardrail_configured_to_fail_open_lets_the_answer_through_when_it_is_down():
    llm = FakeLLM(words(GOOD))
    async with serve(llm) as llm_url:
        orchestrator = pipeline(llm_url, unused_url(), MEGASERVICE_NODE_GUARDRAIL_OUT_FAIL_OPEN="1")
        service = gateway(orchestrator)
        async with serve(service.app) as url, aiohttp.ClientSession() as session:
            with anyio.fail_after(20):
                async with session.post(f"{url}/v1/chat", json={"text": "q"}) as response:
                    reader = Reader(response)
                    await reader.rest()
                async with session.post(f"{url}/v1/chat", json={"text": "q", "stream": False}) as response:
                    plain = await response.json()
    assert reader.text == GOOD and reader.events[-1] == b"data: [DONE]"
    assert plain["text"] == GOOD


async def test_non_streaming_answers_through_the_guardrail_pass_or_are_refused():
    async with guardrails() as guard_url:
        answers = []
        for text in (GOOD, GOOD + BAD):
            async with serve(FakeLLM(words(text))) as llm_url:
                service = gateway(pipeline(llm_url, guard_url))
                async with serve(service.app) as url, aiohttp.ClientSession() as session:
                    async with session.post(f"{url}/v1/chat", json={"text": "q", "stream": False}) as response:
                        answers.append(await response.json())
    assert answers[0]["text"] == GOOD and answers[0]["downstream_black_list"] == []
    assert answers[1]["text"] == "Violated policies: banned (project falcon), please check your input."
    assert answers[1]["downstream_black_list"] == [".*"]


class HeldGuardrail(FakeService):
    """A guardrail that passes every text, holding those that contain `slow` until `release`; counts calls in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.active = 0
        self.most_active = 0

    async def handle(self, request, scope, receive, send):
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            if "slow" in request["text"]:
                await self.release.wait()
            await self.send_json(send, {"text": request["text"], "downstream_black_list": []})
        finally:
            self.active -= 1


async def test_sentences_are_checked_concurrently_up_to_the_bound_and_released_in_order():
    sentences = ["A slow one.", " Two.", " Three.", " Four.", " Five."]
    guard = HeldGuardrail()
    llm = FakeLLM(words("".join(sentences)))
    async with serve(guard) as guard_url, serve(llm) as llm_url:
        orchestrator = pipeline(llm_url, guard_url, MEGASERVICE_NODE_GUARDRAIL_OUT_STREAM_IN_FLIGHT="3")
        scheduled = asyncio.ensure_future(orchestrator.schedule({"text": "q"}))
        await poll(lambda: len(guard.requests) == 3 and llm.completed == 1, "three sentences sent at once")
        await asyncio.sleep(0.2)  # time for a fourth to be sent, if the bound did not hold
        assert len(guard.requests) == 3 and guard.active == 1 and not scheduled.done()
        assert len(guard_tasks()) == 2  # the reader (waiting for a slot) and the held check: what the leak checks see
        guard.release.set()
        with anyio.fail_after(20):
            results, _ = await scheduled
            frames = [frame async for frame in results[f"{GUARD}/MicroService"].body_iterator]
    assert [request["text"] for request in guard.requests] == sentences
    text = "".join(ast.literal_eval(frame[len("data: ") :]).decode() for frame in frames[:-1])
    assert text == "".join(sentences) and frames[-1] == "data: [DONE]\n\n"


async def test_a_stream_held_by_its_guardrail_does_not_stall_another():
    guard = HeldGuardrail()
    slow_llm, fast_llm = FakeLLM(words("A slow answer. Then more.")), FakeLLM(words(GOOD))
    async with serve(guard) as guard_url, serve(slow_llm) as slow_url, serve(fast_llm) as fast_url:
        slow, fast = gateway(pipeline(slow_url, guard_url)), gateway(pipeline(fast_url, guard_url))
        async with serve(slow.app) as slow_gateway, serve(fast.app) as fast_gateway, aiohttp.ClientSession() as session:

            async def ask(url: str) -> Reader:
                async with session.post(f"{url}/v1/chat", json={"text": "q"}) as response:
                    reader = Reader(response)
                    await reader.rest()
                    return reader

            with anyio.fail_after(20):
                held = asyncio.ensure_future(ask(slow_gateway))
                await poll(lambda: guard.active == 1, "the slow sentence is held by the guardrail")
                other = await ask(fast_gateway)  # answered whole while the other stream waits
                assert other.text == GOOD and other.events[-1] == b"data: [DONE]"
                assert not held.done() and guard.active == 1
                guard.release.set()
                first = await held
    assert first.text == "A slow answer. Then more."


class LLMGuard466(FakeService):
    """OPEA's llm-guard output guardrail: HTTP 466 with a `detail` when it refuses a text."""

    async def handle(self, request, scope, receive, send):
        if "falcon" in request["text"].lower():
            await self.send_json(send, {"detail": "The output is not valid: BanSubstrings"}, status=466)
            return
        await self.send_json(send, {"text": request["text"]})


@pytest.mark.parametrize("kind", ["downstream_black_list", "status-466"])
async def test_opea_style_refusals_end_the_stream_too(kind):
    guard = FakeGuardrail(banned=["falcon"]) if kind == "downstream_black_list" else LLMGuard466()
    message = FakeGuardrail.REFUSAL if kind == "downstream_black_list" else "The output is not valid: BanSubstrings"
    llm = FakeLLM(words(GOOD + BAD + AFTER))
    async with serve(guard) as guard_url, serve(llm) as llm_url:
        orchestrator = pipeline(llm_url, guard_url)
        results, _ = await orchestrator.schedule({"text": "q"})
        frames = [frame async for frame in results[f"{GUARD}/MicroService"].body_iterator]
    text = "".join(ast.literal_eval(frame[len("data: ") :]).decode() for frame in frames[:-1])
    assert text == GOOD + " " + message
    body = orjson.loads(frames[-1].split(b"data: ", 1)[1])
    assert body["message"] == message and body["node"] == GUARD and body["violations"] == []


class FailsAfterFirst(FakeService):
    """A guardrail that passes its first text and answers 500 to the others."""

    async def handle(self, request, scope, receive, send):
        if len(self.requests) > 1:
            await self.send_json(send, {"detail": "checker crashed"}, status=500)
            return
        await self.send_json(send, {"text": request["text"], "downstream_black_list": []})


async def test_a_guardrail_failing_mid_stream_ends_it_with_an_error_event_naming_it():
    first = "The first sentence."
    llm = FakeLLM(words(first + AFTER), hold_after=len(words(first)))
    guard = FailsAfterFirst()
    async with serve(guard) as guard_url, serve(llm) as llm_url:
        results, _ = await pipeline(llm_url, guard_url).schedule({"text": "q"})
        llm.release()  # the first sentence passed before the response started; the rest fails
        frames = [frame async for frame in results[f"{GUARD}/MicroService"].body_iterator]
        await poll(lambda: llm.cancelled + llm.completed == 1, "the LLM stream ends")
    text = "".join(ast.literal_eval(frame[len("data: ") :]).decode() for frame in frames[:-1])
    assert text == first
    body = orjson.loads(frames[-1].split(b"data: ", 1)[1])
    assert frames[-1].startswith(b"event: error") and body["node"] == GUARD
    assert body["upstream_status"] == 500


async def test_a_guardrail_before_the_llm_can_fail_open_too():
    llm = FakeLLM(words(GOOD))
    async with serve(llm) as llm_url:
        guard_in = node("guardrail_in", unused_url(), ServiceType.GUARDRAIL, endpoint="/v1/guardrails")
        llm_node = node("llm", llm_url, ServiceType.LLM, endpoint="/v1/chat/completions")
        answers = []
        for environ in ({}, {"MEGASERVICE_NODE_GUARDRAIL_IN_FAIL_OPEN": "1"}):
            orchestrator = TextAnswers(settings=Settings.from_env(environ)).add(guard_in).add(llm_node)
            orchestrator.flow_to(guard_in, llm_node)
            service = gateway(orchestrator)
            async with serve(service.app) as url, aiohttp.ClientSession() as session:
                async with session.post(f"{url}/v1/chat", json={"text": "q", "stream": False}) as response:
                    answers.append((response.status, await response.json()))
    assert answers[0][0] == 502 and "guardrail_in" in orjson.dumps(answers[0][1]).decode()
    assert answers[1] == (200, {"text": GOOD})
    assert llm.completed == 1


class FailingLLM(FakeService):
    """An OpenAI-compatible stream that writes a sentence, then ends with an error event of its own."""

    async def handle(self, request, scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for token in words(GOOD):
            chunk = {"choices": [{"index": 0, "delta": {"content": token}}]}
            await send(
                {"type": "http.response.body", "body": b"data: " + orjson.dumps(chunk) + b"\n\n", "more_body": True}
            )
        error = b'event: error\ndata: {"object": "error", "type": "upstream_timeout", "message": "model stalled"}\n\n'
        await send({"type": "http.response.body", "body": error})


async def test_the_llms_own_error_event_ends_the_stream_after_what_passed_and_is_not_checked_as_text():
    guard = FakeGuardrail(banned=[])
    async with serve(guard) as guard_url, serve(FailingLLM()) as llm_url:
        results, _ = await pipeline(llm_url, guard_url).schedule({"text": "q"})
        frames = [frame async for frame in results[f"{GUARD}/MicroService"].body_iterator]
    text = "".join(ast.literal_eval(frame[len("data: ") :]).decode() for frame in frames[:-1])
    assert text == GOOD
    assert frames[-1].startswith(b"event: error") and b"model stalled" in frames[-1]
    assert all("error" not in request["text"] for request in guard.requests)
