"""`POST /v1/chatqna`: OPEA's ChatQnA request and answers, its `data: b'…'` stream framing (OPEA's UIs parse it)."""

import ast

import pytest

from tests.gateway.conftest import FACT, QUESTION, run_stack

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]


async def read_frames(response) -> list[str]:
    body = (await response.aread()).decode()
    assert body.endswith("\n\n")
    return [frame.removeprefix("data: ") for frame in body.split("\n\n")[:-1]]


async def test_it_streams_by_default_in_opeas_framing_and_nothing_else(stack):
    async with stack.client() as http:
        response = await http.post("/v1/chatqna", json={"messages": QUESTION})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = await read_frames(response)
    assert frames[-1] == "[DONE]"
    tokens = [ast.literal_eval(frame) for frame in frames[:-1]]
    assert all(isinstance(token, bytes) for token in tokens)  # b'…' reprs only: OPEA's React UI shows anything else
    assert len(tokens) > 5
    assert "4417" in b"".join(tokens).decode()


async def test_non_ascii_tokens_keep_opeas_escapes(stack):
    stack.llm.tokens = ["Grüß", " dich", " 你好"]
    async with stack.client() as http:
        frames = await read_frames(await http.post("/v1/chatqna", json={"messages": QUESTION}))
    assert frames[:3] == [repr("Grüß".encode()), repr(b" dich"), repr(" 你好".encode())]


async def test_not_streamed_it_is_opeas_chat_completion_response_with_sources(stack):
    async with stack.client() as http:
        response = await http.post("/v1/chatqna", json={"messages": QUESTION, "stream": False})
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "chatqna"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and "4417" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop" and choice["metadata"] is None
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert body["sources"][0]["source"] == "zorblax.md" and FACT in body["sources"][0]["text"]


async def test_opeas_generation_defaults_reach_the_llm(stack):
    async with stack.client() as http:
        await http.post("/v1/chatqna", json={"messages": QUESTION, "stream": False, "temperature": 0})
    sent = stack.llm.requests[0]
    assert sent["max_tokens"] == 1024 and sent["top_p"] == 0.95
    assert sent["temperature"] == 0.01  # OPEA's `x or default`: 0 becomes its default, as ChatQnA does


async def test_a_list_of_messages_is_the_conversation(stack):
    messages = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": QUESTION},
    ]
    async with stack.client() as http:
        response = await http.post("/v1/chatqna", json={"messages": messages, "stream": False})
    assert response.status_code == 200
    assert [m["role"] for m in stack.llm.requests[0]["messages"]] == ["user", "assistant", "user"]


async def test_the_openapi_schema_documents_the_chat_routes(stack):
    async with stack.client() as http:
        schema = (await http.get("/openapi.json")).json()
    assert {"/v1/chatqna", "/v1/chat/completions", "/v1/models", "/v1/dataprep/ingest"} <= set(schema["paths"])


async def test_only_the_enabled_routes_are_served():
    async with run_stack(routes=["chatqna"]) as stack, stack.client() as http:
        assert (await http.post("/v1/chat/completions", json={"messages": "hi"})).status_code == 404
        assert (await http.get("/")).status_code == 404
        assert (await http.post("/v1/chatqna", json={"messages": QUESTION, "stream": False})).status_code == 200
