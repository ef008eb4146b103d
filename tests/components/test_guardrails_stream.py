"""The stream guard: an LLM's answer checked sentence by sentence while it streams."""

import asyncio
import threading

import orjson
import pytest

from megaservice import _compat
from megaservice.client import Timeout, UpstreamClient, dumps
from megaservice.components.guardrails import GuardrailsSettings, load_backend
from megaservice.components.guardrails.banned import Banned
from megaservice.components.guardrails.checks import Outcome, Violation
from megaservice.components.guardrails.pipeline import Guardrails
from megaservice.components.guardrails.stream_guard import StreamGuard
from megaservice.exceptions import UpstreamConnectError
from megaservice.sse import EventSplitter
from megaservice.testing import FakeLLM, serve

pytestmark = pytest.mark.anyio


class Source:
    """An LLM stream of tokens that records how far it was read and whether it was closed."""

    def __init__(self, tokens, gates=None):
        self.tokens = list(tokens)
        self.gates = gates or {}  # index -> asyncio.Event to wait for before yielding that token
        self.sent = 0
        self.closed = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.sent >= len(self.tokens):
            raise StopAsyncIteration
        gate = self.gates.get(self.sent)
        if gate is not None:
            await gate.wait()
        self.sent += 1
        return self.tokens[self.sent - 1]

    async def aclose(self):
        self.closed = True


class Recording:
    """A backend that records the texts it checked (and the thread it ran on) and refuses a word."""

    def __init__(self, bad="forbidden", gate=None):
        self.bad = bad
        self.gate = gate
        self.checked: list[str] = []
        self.threads: set[int] = set()

    async def check(self, text, *, prompt=None, only=None):
        self.checked.append(text)
        self.threads.add(threading.get_ident())
        if self.gate is not None and "slow" in text:
            await self.gate.wait()
        if self.bad in text:
            return Outcome(text, (Violation("banned", self.bad),))
        return Outcome(text)


async def collect(stream):
    return [batch async for batch in stream]


def words(sentence: str) -> list[str]:
    return [" " + w if i else w for i, w in enumerate(sentence.split())]


async def test_a_clean_answer_passes_whole_in_order_and_is_checked_per_sentence_not_per_token():
    tokens = [*words("The sky is blue."), *words(" Grass is green!"), *words(" And the sea")]
    backend = Recording()
    source = Source(tokens)
    stream = StreamGuard(backend).watch(source)
    batches = await collect(stream)
    assert [t for batch in batches for t in batch] == tokens
    assert stream.stopped is None
    assert len(backend.checked) == 3 < len(tokens)  # two sentences and the unfinished end
    assert backend.threads == {threading.get_ident()}  # no thread hop: checks are coroutines on the loop
    assert source.closed


async def test_a_failing_sentence_stops_the_stream_and_what_passed_before_it_was_sent():
    tokens = [*words("Hello there."), *words(" This is forbidden text."), *words(" Never sent.")]
    source = Source(tokens)
    stream = StreamGuard(Recording()).watch(source)
    batches = await collect(stream)
    assert [t for batch in batches for t in batch] == words("Hello there.")
    assert stream.stopped is not None
    assert stream.stopped.message == "Violated policies: banned (forbidden), please check your input."
    event = stream.stopped.sse()
    assert event.startswith(b"event: error\ndata: ")
    body = orjson.loads(event.split(b"data: ", 1)[1])
    assert body["type"] == "guardrail_violation" and body["violations"] == [{"check": "banned", "detail": "forbidden"}]
    assert source.closed  # the LLM's request is cancelled


async def test_a_sentence_is_released_as_soon_as_it_passed_while_the_llm_still_writes():
    gate = asyncio.Event()
    tokens = [*words("First sentence."), *words(" Second one.")]
    source = Source(tokens, gates={2: gate})  # the LLM stalls after the first sentence
    stream = StreamGuard(Recording()).watch(source)
    first = await asyncio.wait_for(stream.__anext__(), timeout=5)
    assert first == words("First sentence.")
    assert source.sent == 2  # nothing more was written yet: the first sentence did not wait for it
    gate.set()
    assert [t for batch in await collect(stream) for t in batch] == words(" Second one.")


async def test_the_next_sentences_are_read_and_checked_while_a_slow_check_runs():
    gate = asyncio.Event()
    backend = Recording(gate=gate)
    tokens = [*words("A slow check."), *words(" Two."), *words(" Three.")]
    source = Source(tokens)
    stream = StreamGuard(backend).watch(source)
    pending = asyncio.ensure_future(stream.__anext__())
    for _ in range(1000):  # poll: the reader goes on while the first check waits
        if len(backend.checked) == 3:
            break
        await asyncio.sleep(0)
    assert len(backend.checked) == 3 and source.sent == len(tokens) and not pending.done()
    gate.set()
    assert await pending == words("A slow check.")
    assert len(await collect(stream)) == 2


async def test_a_term_split_across_two_units_is_still_seen():
    backend = Guardrails(["banned"], banned=Banned(["project falcon"]))
    tokens = ["Status report.", " Project", " Fal", "con", " is late."]
    stream = StreamGuard(backend).watch(Source(tokens))
    assert [t for batch in await collect(stream) for t in batch] == ["Status report."]
    assert stream.stopped is not None and stream.stopped.violations[0].detail == "project falcon"


async def test_text_without_sentence_ends_is_checked_in_windows():
    backend = Recording()
    tokens = ["x" * 50] * 20  # 1000 characters, no sentence end
    stream = StreamGuard(backend, max_chars=200).watch(Source(tokens))
    batches = await collect(stream)
    assert [len(batch) for batch in batches] == [4] * 5
    assert len(backend.checked) == 5


async def test_pii_that_would_be_masked_stops_a_stream():
    backend = load_backend(GuardrailsSettings.from_env({"GUARDRAILS_CHECKS": "pii"}))
    stream = StreamGuard(backend).watch(Source([*words("Sure."), *words(" Mail jane@corp.example for it.")]))
    assert [t for batch in await collect(stream) for t in batch] == ["Sure."]
    assert stream.stopped is not None and stream.stopped.violations == (Violation("pii", "email"),)


async def test_a_check_that_fails_ends_the_iteration_with_its_error_and_closes_the_source():
    class Down:
        async def check(self, text, *, prompt=None, only=None):
            raise UpstreamConnectError("cannot reach llm-judge", node="llm-judge", url="http://judge")

    source = Source(words("Hello. World."))
    stream = StreamGuard(Down()).watch(source)
    with pytest.raises(UpstreamConnectError):
        await collect(stream)
    assert source.closed


async def test_the_consumer_leaving_early_closes_the_source():
    source = Source(words("One. Two. Three."))
    stream = StreamGuard(Recording()).watch(source)
    await stream.__anext__()
    await stream.aclose()
    assert source.closed
    assert [batch async for batch in stream] == []


async def test_a_real_llm_stream_of_sse_events_is_guarded_event_for_event():
    answer = "Paris is the capital of France. You are a stupid idiot and I hate you. Bye."
    llm = FakeLLM([" " + w for w in answer.split()])
    guard = StreamGuard(load_backend(GuardrailsSettings.from_env({"GUARDRAILS_CHECKS": "toxicity"})))
    async with serve(llm) as url:
        client = UpstreamClient()
        reply = await client.open_stream(
            "llm",
            url + "/v1/chat/completions",
            dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True}),
            headers={"content-type": "application/json"},
            timeout=Timeout(connect=5, read=30),
        )

        async def events():
            splitter = EventSplitter()
            async for chunk in reply.content.iter_any():
                for event in splitter.feed(chunk):
                    yield event

        stream = guard.watch(events(), text_of=lambda raw: _compat.event_text(raw)[0], prompt="hi")
        sent: list[bytes] = []
        async for batch in stream:
            sent.extend(batch)
        reply.close()
        await client.aclose()
    text = "".join(_compat.event_text(event)[0] for event in sent)
    assert text == " Paris is the capital of France."
    assert all(event.startswith(b"data: {") for event in sent)  # the LLM's own events, byte for byte
    assert stream.stopped is not None and stream.stopped.violations[0].check == "toxicity"


async def test_many_streams_share_the_models_batches_and_each_gets_its_own_outcome():
    guard = StreamGuard(load_backend(GuardrailsSettings.from_env({"GUARDRAILS_CHECKS": "toxicity"})))
    clean = words("The report is ready. It covers the third quarter. Revenue grew.")
    toxic = words("The report is ready. You are a stupid idiot. Revenue grew.")
    streams = [guard.watch(Source(toxic if i % 4 == 0 else clean)) for i in range(16)]
    results = await asyncio.gather(*(collect(s) for s in streams))
    for i, (stream, batches) in enumerate(zip(streams, results, strict=True)):
        passed = [t for batch in batches for t in batch]
        if i % 4 == 0:
            assert passed == words("The report is ready.") and stream.stopped is not None
        else:
            assert passed == clean and stream.stopped is None
