"""The model server with its real model (SmolLM2-135M, loaded once per session) on a real socket."""

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import aiohttp
import anyio
import httpx
import orjson
import pytest

from megaservice.components.llm_server.model import Prompt
from megaservice.components.llm_server.request import read_chat_request

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

GREEDY = {"temperature": 0, "seed": 1}
STORY = [{"role": "user", "content": "Tell me a story about a cat."}]


def events(body: bytes) -> list[dict[str, Any]]:
    """The JSON events of an SSE body (after `[DONE]` nothing)."""
    return [orjson.loads(event[6:]) for event in body.split(b"\n\n") if event.startswith(b"data: {")]


def text_of(chunks: list[dict[str, Any]]) -> list[str]:
    return [
        c["choices"][0]["delta"]["content"] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")
    ]


async def post(url: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as client:
        return await client.post(f"{url}/v1/chat/completions", json=body)


async def test_it_lists_its_model_and_is_ready(llm_server):
    async with httpx.AsyncClient() as client:
        listed = (await client.get(f"{llm_server.url}/v1/models")).json()
        ready = await client.get(f"{llm_server.url}/v1/ready")
        one = await client.get(f"{llm_server.url}/v1/models/SmolLM2-135M-Instruct.Q4_1")
        other = await client.get(f"{llm_server.url}/v1/models/gpt-4")
    assert ready.status_code == 200
    assert [m["id"] for m in listed["data"]] == ["SmolLM2-135M-Instruct.Q4_1"]
    assert listed["data"][0]["meta"]["context_length"] == 1024
    assert listed["data"][0]["meta"]["parallel"] == 2
    assert one.json()["id"] == "SmolLM2-135M-Instruct.Q4_1"
    assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"


async def test_a_completion_has_the_answer_its_token_counts_and_why_it_ended(llm_server):
    short = await post(llm_server.url, {"messages": STORY, "max_tokens": 5, **GREEDY})
    whole = await post(
        llm_server.url, {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 200, **GREEDY}
    )
    answer = short.json()
    assert short.status_code == 200
    assert answer["object"] == "chat.completion" and answer["model"] == "SmolLM2-135M-Instruct.Q4_1"
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert answer["choices"][0]["message"]["content"].strip()
    usage = answer["usage"]
    assert usage["completion_tokens"] == 5
    assert usage["prompt_tokens"] > 5 and usage["total_tokens"] == usage["prompt_tokens"] + 5
    ended = whole.json()
    assert ended["choices"][0]["finish_reason"] == "stop"  # the model ended its turn
    assert 0 < ended["usage"]["completion_tokens"] < 200


async def test_the_stream_comes_token_by_token_and_says_the_same_as_the_completion(llm_server):
    body = {"messages": STORY, "max_tokens": 24, **GREEDY}
    completion = (await post(llm_server.url, body)).json()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{llm_server.url}/v1/chat/completions", json={**body, "stream": True}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            reads = [data async for data in response.content.iter_any()]
    raw = b"".join(reads)
    chunks = events(raw)
    pieces = text_of(chunks)
    assert raw.endswith(b"data: [DONE]\n\n")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and chunks[-1]["choices"][0]["delta"] == {}
    assert len(pieces) >= 20  # one piece per token (a few tokens may join into one character)
    assert "".join(pieces) == completion["choices"][0]["message"]["content"]
    assert len(reads) > 1  # it was written as it was generated, not at the end
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["object"] == "chat.completion.chunk"


async def test_the_stream_ends_with_the_usage_when_asked(llm_server):
    body = {"messages": STORY, "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}}
    response = await post(llm_server.url, body)
    chunks = events(response.content)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 6
    assert chunks[-1]["usage"]["prompt_tokens"] > 0


async def test_a_stop_sequence_ends_the_answer_before_it(llm_server):
    body = {"messages": STORY, "max_tokens": 30, **GREEDY}
    full = (await post(llm_server.url, body)).json()["choices"][0]["message"]["content"]
    words = full.split()
    stop = " " + words[len(words) // 2]
    cut = full[: full.index(stop)]
    stopped = (await post(llm_server.url, {**body, "stop": [stop]})).json()
    streamed = text_of(events((await post(llm_server.url, {**body, "stop": stop, "stream": True})).content))
    assert stopped["choices"][0]["message"]["content"] == cut
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert "".join(streamed) == cut


async def test_the_same_seed_samples_the_same_answer(llm_server):
    body = {"messages": STORY, "max_tokens": 16, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0}
    first = (await post(llm_server.url, {**body, "seed": 7})).json()["choices"][0]["message"]["content"]
    again = (await post(llm_server.url, {**body, "seed": 7})).json()["choices"][0]["message"]["content"]
    others = {
        (await post(llm_server.url, {**body, "seed": s})).json()["choices"][0]["message"]["content"] for s in (8, 9, 10)
    }
    assert first == again
    assert len(others | {first}) > 1  # sampling with other seeds answers otherwise


async def test_logit_bias_bans_a_token(llm_server):
    body = {
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        "max_tokens": 12,
        **GREEDY,
    }
    plain = (await post(llm_server.url, body)).json()["choices"][0]["message"]["content"]
    assert "Paris" in plain
    tokens = llm_server.backend.model._llm.tokenize(b" Paris", add_bos=False)
    banned = (await post(llm_server.url, {**body, "logit_bias": {str(t): -100 for t in tokens}})).json()
    assert "Paris" not in banned["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "messages must be a non-empty list"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role 'robot'"),
        ({"messages": STORY, "max_tokens": 0}, "max_tokens must be at least 1"),
        ({"messages": STORY, "max_tokens": 5000}, "maximum context length is 1024 tokens"),
        ({"messages": [{"role": "user", "content": "word " * 1100}]}, "maximum context length is 1024 tokens"),
        ({"messages": STORY, "temperature": -1}, "temperature must be between 0 and 2"),
        ({"messages": STORY, "maxtokens": 5}, "unknown field(s): maxtokens"),
        ({"messages": STORY, "logit_bias": {"99999999": 1}}, "logit_bias: no token 99999999"),
    ],
)
async def test_bad_input_is_a_400_saying_what_is_wrong(llm_server, body, message):
    response = await post(llm_server.url, body)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_a_body_that_is_not_json_is_a_400(llm_server):
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{llm_server.url}/v1/chat/completions", content=b"{nope")
    assert response.status_code == 400


def endless(max_tokens: int, backend: Any) -> dict[str, Any]:
    """A streamed request that cannot end before `max_tokens`: the end-of-turn token is banned."""
    end = backend.model._llm.token_eos()
    return {"messages": STORY, "max_tokens": max_tokens, "stream": True, "logit_bias": {str(end): -100}}


async def test_a_client_that_leaves_stops_its_generation_and_frees_the_model(llm_server):
    backend = llm_server.backend
    cancelled = backend.cancelled
    with anyio.fail_after(30):
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{llm_server.url}/v1/chat/completions", json=endless(900, backend)) as response:
                got = b""
                while len(events(got)) < 4:  # a few tokens came: the model is generating
                    got += await response.content.readany()
                response.close()  # the client leaves
        while backend.pending:  # its slot is freed at the model's next step
            await asyncio.sleep(0.01)
        answer = await post(llm_server.url, {"messages": STORY, "max_tokens": 3})
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 3
    assert backend.cancelled == cancelled + 1
    assert backend.pending == 0


async def test_generations_run_side_by_side_and_one_more_than_the_queue_holds_is_refused_with_503(llm_server):
    backend = llm_server.backend
    url = f"{llm_server.url}/v1/chat/completions"
    with anyio.fail_after(30):
        async with aiohttp.ClientSession() as session:
            first = await session.post(url, json=endless(900, backend))
            second = await session.post(url, json=endless(900, backend))
            got = [b"", b""]
            while min(len(events(g)) for g in got) < 4:  # both stream at once (parallel=2)
                for i, response in enumerate((first, second)):
                    got[i] += await response.content.readany()
            waiting = await session.post(url, json=endless(900, backend))  # admitted: headers sent, waits its turn
            assert waiting.status == 200
            refused = await session.post(url, json={"messages": STORY, "max_tokens": 2})
            body = await refused.json()
            for response in (first, second, waiting):
                response.close()
        while backend.pending:
            await asyncio.sleep(0.01)
    assert refused.status == 503
    assert "busy" in body["error"]["message"]
    after = await post(llm_server.url, {"messages": STORY, "max_tokens": 3})  # every slot free again
    assert after.status_code == 200 and after.json()["usage"]["completion_tokens"] == 3


async def test_a_prompt_read_before_is_not_read_again_and_gets_the_same_answer(llm_server):
    decoder = llm_server.backend.model.decoder
    body = {"messages": [{"role": "user", "content": "Name three colours of the rainbow."}], "max_tokens": 12, **GREEDY}
    first = await post(llm_server.url, body)
    read = decoder.prompt_tokens_read
    again = await post(llm_server.url, body)
    prompt_tokens = again.json()["usage"]["prompt_tokens"]
    assert prompt_tokens > 10
    assert decoder.prompt_tokens_read - read == 1  # its KV cache kept the prompt: only the last token is read again
    assert again.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]


async def test_a_json_schema_response_format_constrains_the_answer(llm_server):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    body = {
        "messages": [{"role": "user", "content": "Give the capital of France as JSON with a key city."}],
        "max_tokens": 40,
        "response_format": {"type": "json_schema", "json_schema": {"name": "capital", "schema": schema}},
        **GREEDY,
    }
    answer = (await post(llm_server.url, body)).json()["choices"][0]
    assert answer["finish_reason"] == "stop"
    assert set(orjson.loads(answer["message"]["content"])) == {"city"}


async def test_a_generation_that_fails_fails_alone_and_an_empty_prompt_is_refused(llm_server):
    model = llm_server.backend.model
    chat = read_chat_request({"messages": STORY, "max_tokens": 8, **GREEDY})
    prompt = model.prompt(chat)
    pieces: list[str] = []

    def broken(piece: str) -> None:
        raise ValueError("the client's queue is gone")

    def generate(emit: Callable[[str], None]) -> Any:
        try:
            return model.generate(prompt, chat, emit, threading.Event())
        except RuntimeError as exc:
            return exc

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            results: dict[str, Any] = {}

            async def run(name: str, emit: Callable[[str], None]) -> None:
                results[name] = await anyio.to_thread.run_sync(generate, emit)

            tasks.start_soon(run, "healthy", pieces.append)
            tasks.start_soon(run, "broken", broken)
    assert results["healthy"].completion_tokens == 8 and "".join(pieces)
    assert isinstance(results["broken"], RuntimeError) and "the client's queue is gone" in str(results["broken"])
    empty = Prompt([], 8, prompt.stops)
    with pytest.raises(RuntimeError, match="empty prompt"):
        await anyio.to_thread.run_sync(model.generate, empty, chat, pieces.append, threading.Event())
