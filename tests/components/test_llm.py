"""The LLM service's answers and what it sends the model server (a FakeLLM).

The service runs in process (`client_for`), and so does its FakeLLM (`InProcess`: streams as sent,
no socket); the faults below the HTTP layer (a refused connection, a server that never answers) are
real sockets.
"""

import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, NamedTuple

import pytest

from megaservice import MicroService
from megaservice.client import UpstreamClient
from megaservice.components._shared.runner import build
from megaservice.components.llm import LLMSettings, create_service, load_backend
from megaservice.components.llm.openai_compat import OpenAIBackend, api_base
from megaservice.exceptions import ConfigurationError
from megaservice.testing import FakeLLM, FaultyServer, InProcess, client_for, unused_url

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]

USER = [{"role": "user", "content": "What is megaservice?"}]


class Upstream(NamedTuple):
    llm: FakeLLM
    url: str
    client: UpstreamClient | None


@asynccontextmanager
async def in_process(llm: FakeLLM) -> AsyncIterator[Upstream]:
    async with InProcess() as nodes, nodes.serve(llm) as url:
        yield Upstream(llm, url, nodes.client)


@pytest.fixture
async def fake() -> AsyncIterator[Upstream]:
    async with in_process(FakeLLM(tokens=[" Hello", " there"])) as upstream:
        yield upstream


async def ask(upstream: Upstream | str, body: Any, *, suffix: str = "", **env: str) -> tuple[int, Any]:
    """POST `body` to an LLM service in front of `upstream` (configured by `env`): the status and answer."""
    url, client = (upstream, None) if isinstance(upstream, str) else (upstream.url, upstream.client)
    settings = LLMSettings.from_env({"LLM_ENDPOINT": url + suffix, **env})
    async with client_for(create_service(settings, OpenAIBackend(settings, client=client)).app) as service:
        answer = await service.post("/v1/chat/completions", json=body)
    kind = answer.headers.get("content-type", "")
    return answer.status_code, answer.json() if kind.startswith("application/json") else answer.text


# -- what goes to the model server --------------------------------------------------------------


async def test_a_chat_request_goes_out_as_sent_and_the_answer_comes_back_as_the_server_gave_it(fake):
    llm = fake.llm
    status, answer = await ask(fake, {"messages": USER, "temperature": 0.2}, LLM_MODEL_ID="qwen")
    assert status == 200
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == " Hello there"
    assert llm.requests == [{"messages": USER, "temperature": 0.2, "model": "qwen"}]


async def test_the_requests_model_wins_over_llm_model_id_and_without_either_none_is_sent(fake):
    llm = fake.llm
    await ask(fake, {"messages": USER, "model": "asked"}, LLM_MODEL_ID="configured")
    await ask(fake, {"messages": USER, "model": None}, LLM_MODEL_ID="configured")
    await ask(fake, {"messages": USER})
    assert [r.get("model") for r in llm.requests] == ["asked", "configured", None]
    assert "model" not in llm.requests[2]


async def test_without_a_model_the_model_server_answers_with_the_one_it_serves():
    async with in_process(FakeLLM(models=["qwen"])) as upstream:
        status, answer = await ask(upstream, {"messages": USER})
    assert status == 200
    assert answer["model"] == "qwen"


async def test_absent_fields_are_the_model_servers_defaults_not_opeas(fake):
    llm = fake.llm
    await ask(fake, {"messages": USER})
    assert llm.requests[0] == {"messages": USER}  # no max_tokens 1024, temperature 0.01, stop [], n 1 ...


async def test_openai_fields_pass_opea_fields_stay_and_unknown_fields_pass_through(fake):
    llm = fake.llm
    openai = {
        "max_tokens": 64,
        "max_completion_tokens": 64,
        "temperature": 0.0,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "seed": 0,  # OPEA's model refuses 0; OpenAI takes any integer
        "n": 2,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logprobs": True,
        "top_logprobs": 2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "stream_options": {"include_usage": True},
        "user": "u1",
    }
    opea = {
        "k": 3,
        "top_n": 2,
        "id": "abc",
        "documents": [],
        "top_k": 10,
        "typical_p": 0.95,
        "repetition_penalty": 1.03,
        "max_new_tokens": 1024,
        "language": "auto",
        "index_name": "rag",
        "retrieved_docs": [],
        "search_type": "similarity",
        "downstream_black_list": [],
    }
    extensions = {"min_p": 0.05, "guided_json": {"type": "object"}, "chat_template_kwargs": {"enable_thinking": False}}
    status, _ = await ask(fake, {"messages": USER, **openai, **opea, **extensions, "logit_bias": None})
    assert status == 200
    assert llm.requests == [{"messages": USER, **openai, **extensions}]


async def test_a_string_message_with_documents_becomes_opeas_rag_prompt(fake):
    llm = fake.llm
    await ask(fake, {"messages": "What is a retriever?", "documents": ["A retriever finds documents.", "Other."]})
    (message,) = llm.requests[0]["messages"]
    assert message["role"] == "user"
    assert "### Search results: A retriever finds documents.\nOther.\n" in message["content"]
    assert "### Question: What is a retriever?\n" in message["content"]
    assert message["content"].startswith("### You are a helpful, respectful and honest assistant")


async def test_a_mostly_chinese_context_gets_opeas_chinese_prompt(fake):
    llm = fake.llm
    await ask(fake, {"messages": "什么是检索器?", "documents": ["检索器在向量库中查找最相近的文档。"]})
    assert "### 搜索结果：检索器在向量库中查找最相近的文档。\n" in llm.requests[0]["messages"][0]["content"]  # noqa: RUF001


async def test_documents_fill_a_system_messages_context_or_else_the_last_user_message_gets_the_rag_prompt(fake):
    llm = fake.llm
    system = {"role": "system", "content": "Answer from:\n{context}"}
    await ask(fake, {"messages": [system, *USER], "documents": [{"text": "d1"}, {"text": "d2"}]})
    await ask(fake, {"messages": [*USER, {"role": "assistant", "content": "?"}, *USER], "documents": ["d1"]})
    first, second = (r["messages"] for r in llm.requests)
    assert first == [{"role": "system", "content": "Answer from:\nd1\nd2"}, *USER]
    assert second[:2] == [*USER, {"role": "assistant", "content": "?"}]
    assert "### Search results: d1\n" in second[2]["content"]


async def test_a_chat_template_makes_the_prompt_or_the_system_message(fake):
    llm = fake.llm
    template = "Context: {context}\nQ: {question} {{literal}}"
    await ask(fake, {"messages": "why?", "documents": ["d1"], "chat_template": template})
    await ask(fake, {"messages": USER, "documents": ["d1"], "chat_template": "Use {context}."})
    brief = {"role": "system", "content": "Be brief."}
    await ask(fake, {"messages": [brief, *USER], "chat_template": "Use {context}."})
    first, second, third = (r["messages"] for r in llm.requests)
    assert first == [{"role": "user", "content": "Context: d1\nQ: why? {literal}"}]
    assert second == [{"role": "system", "content": "Use d1."}, *USER]
    assert third == [{"role": "system", "content": "Use .\n\nBe brief."}, *USER]


async def test_an_llm_params_doc_is_answered_streaming_unless_told_otherwise(fake):
    llm = fake.llm
    doc = {"query": "What is megaservice?", "documents": ["It runs pipelines."], "max_tokens": 17, "top_k": 5}
    status, text = await ask(fake, doc)
    assert status == 200
    assert text.endswith("data: [DONE]\n\n")
    status, answer = await ask(fake, {**doc, "stream": False, "chat_template": "{question} / {context}"})
    assert answer["object"] == "chat.completion"
    streamed, whole = llm.requests
    assert streamed["stream"] is True
    assert streamed["max_tokens"] == 17
    assert "top_k" not in streamed and "query" not in streamed and "documents" not in streamed
    assert "### Search results: It runs pipelines.\n" in streamed["messages"][0]["content"]
    assert whole["messages"] == [{"role": "user", "content": "What is megaservice? / It runs pipelines."}]
    assert whole["stream"] is False


async def test_a_searched_doc_is_answered_with_the_rag_prompt_over_its_documents(fake):
    llm = fake.llm
    docs = [{"text": "A reranker scores passages."}, {"text": "A retriever finds them."}]
    status, answer = await ask(fake, {"initial_query": "What does a reranker do?", "retrieved_docs": docs, "top_n": 1})
    await ask(fake, {"initial_query": "Hello?", "retrieved_docs": []})
    assert status == 200
    assert answer["object"] == "chat.completion"
    with_docs, without = (r["messages"][0]["content"] for r in llm.requests)
    assert "### Search results: A reranker scores passages.\nA retriever finds them.\n" in with_docs
    assert without == "Hello?"  # OPEA answered nothing at all here
    assert "top_n" not in llm.requests[0]


# -- bad input: a clear 4xx, and nothing reaches the model server --------------------------------

BAD = {
    "empty messages": ({"messages": []}, "messages must be a non-empty list"),
    "blank message string": ({"messages": "  "}, "messages must not be empty"),
    "messages of the wrong type": ({"messages": 3}, "messages"),
    "a message that is not an object": ({"messages": ["hi"]}, "messages[0] must be an object"),
    "an unknown role": ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role must be one of"),
    "a message without content": ({"messages": [{"role": "user"}]}, "messages[0] (user) has no content"),
    "content of the wrong type": ({"messages": [{"role": "user", "content": 5}]}, "content must be a string"),
    "max_tokens 0": ({"messages": USER, "max_tokens": 0}, "greater than 0"),
    "max_tokens negative": ({"messages": USER, "max_tokens": -5}, "greater than 0"),
    "max_tokens beyond the limit": ({"messages": USER, "max_tokens": 10**7}, "at most"),
    "max_tokens not a number": ({"messages": USER, "max_tokens": "many"}, "max_tokens"),
    "max_completion_tokens 0": ({"messages": USER, "max_completion_tokens": 0}, "max_completion_tokens"),
    "temperature not a number": ({"messages": USER, "temperature": "hot"}, "temperature"),
    "stream not a boolean": ({"messages": USER, "stream": "sometimes"}, "stream"),
    "an unknown tool_choice": ({"messages": USER, "tool_choice": "always"}, "tool_choice"),
    "an unknown response_format": ({"messages": USER, "response_format": {"type": "xml"}}, "response_format"),
    "a template with another field": ({"messages": "q", "chat_template": "{user}"}, "it has {user}"),
    "a malformed template": ({"messages": "q", "chat_template": "{context"}, "not a valid template"),
    "documents of the wrong type": ({"messages": USER, "documents": "d1"}, "documents"),
    "too many messages": ({"messages": USER * 1001}, "1001 messages; at most 1000"),
    "an LLMParamsDoc asking for 0 tokens": ({"query": "q", "max_tokens": 0}, "max_tokens must be at least 1"),
    "an empty query": ({"query": ""}, "query must not be empty"),
    "a SearchedDoc without documents": ({"initial_query": "q"}, "retrieved_docs"),
    "none of the three kinds": ({"prompt": "q"}, "expected an OpenAI chat request"),
    "not an object": ([USER], "must be a JSON object"),
}


@pytest.mark.parametrize("body, says", BAD.values(), ids=BAD.keys())
async def test_a_bad_request_is_a_422_saying_what_is_wrong(fake, body, says):
    llm = fake.llm
    status, answer = await ask(fake, body)
    assert status == 422
    assert says in str(answer["detail"])
    assert llm.requests == []


async def test_a_body_that_is_not_json_is_a_400(fake):
    llm = fake.llm
    async with client_for(create_service(LLMSettings(endpoint=fake.url)).app) as client:
        answer = await client.post("/v1/chat/completions", content=b"{not json")
    assert answer.status_code == 400
    assert llm.requests == []


# -- the model server refuses or fails -----------------------------------------------------------


async def test_an_unknown_model_is_the_model_servers_404_with_its_message():
    async with in_process(FakeLLM(models=["qwen"])) as upstream:
        status, answer = await ask(upstream, {"messages": USER, "model": "gpt-9"})
    assert status == 404
    assert answer["error"]["message"] == "The model `gpt-9` does not exist."
    assert answer["error"]["code"] == "model_not_found"


async def test_a_4xx_that_is_not_json_is_relayed_in_an_error_body():
    async with FaultyServer("status", status=400) as server:
        status, answer = await ask(server.url, {"messages": USER})
    assert status == 400
    assert answer == {"detail": "fault: status 400"}


@pytest.mark.parametrize("upstream_status", [401, 403, 500, 503])
async def test_the_model_server_refusing_this_services_key_or_failing_is_a_502_naming_it(upstream_status):
    async with in_process(FakeLLM(status=upstream_status)) as upstream:
        status, answer = await ask(upstream, {"messages": USER})
    assert status == 502
    assert answer["node"] == "model-server"
    assert answer["upstream_status"] == upstream_status


async def test_a_model_server_that_is_down_is_a_502_naming_it():
    url = unused_url()
    started = time.monotonic()
    status, answer = await ask(url, {"messages": USER, "stream": True})
    assert time.monotonic() - started < 1.0  # refused: at once, well within the connect timeout
    assert status == 502
    assert answer["node"] == "model-server"
    assert answer["type"] == "upstream_unreachable"
    assert url in answer["message"]


@contextmanager
def unaccepting_url() -> Iterator[str]:
    """A loopback URL whose listener never accepts: its backlog is full, so a connection attempt hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for sock in [*fillers, listener]:
            sock.close()


async def test_a_model_server_that_takes_no_connection_is_a_504_naming_it_after_the_connect_timeout():
    with unaccepting_url() as url:
        started = time.monotonic()
        status, answer = await ask(url, {"messages": USER}, LLM_CONNECT_TIMEOUT="0.3")
        took = time.monotonic() - started
    assert status == 504  # a timeout, as for every node (`UpstreamTimeout`); a refused connection is a 502
    assert answer["node"] == "model-server"
    assert 0.3 <= took < 2.0  # bounded by the connect timeout, not the 600 s read timeout


async def test_a_model_server_that_never_answers_is_a_504_after_the_read_timeout():
    async with FaultyServer("hang") as server:
        status, answer = await ask(server.url, {"messages": USER}, LLM_READ_TIMEOUT="0.2")
    assert status == 504
    assert answer["node"] == "model-server"


# -- the key, the endpoint, the backend ----------------------------------------------------------


async def test_openai_api_key_is_sent_as_a_bearer_token_and_no_header_without_one(fake):
    llm = fake.llm
    await ask(fake, {"messages": USER}, OPENAI_API_KEY="sk-test")
    await ask(fake, {"messages": USER})
    assert llm.headers[0]["authorization"] == "Bearer sk-test"
    assert "authorization" not in llm.headers[1]


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
async def test_llm_endpoint_is_taken_with_or_without_v1(fake, suffix):
    llm = fake.llm
    status, _ = await ask(fake, {"messages": USER}, suffix=suffix)
    assert status == 200
    assert len(llm.requests) == 1


async def test_api_base_refuses_what_is_not_an_http_url():
    assert api_base("https://api.openai.com/v1") == "https://api.openai.com/v1"
    assert api_base("http://vllm:80") == "http://vllm:80/v1"
    for wrong in ("vllm:80", "ftp://x", "http://"):
        with pytest.raises(ConfigurationError, match="LLM_ENDPOINT"):
            api_base(wrong)


async def test_the_backend_is_chosen_by_name_opeas_included():
    assert load_backend(LLMSettings.from_env({"LLM_COMPONENT_NAME": "OpeaTextGenService"})).node == "model-server"
    with pytest.raises(ConfigurationError, match=r"OpeaTextGenBedrock.*OpenAI-compatible server"):
        load_backend(LLMSettings.from_env({"LLM_COMPONENT_NAME": "OpeaTextGenBedrock"}))
    with pytest.raises(ConfigurationError, match="choose one of: openai"):
        load_backend(LLMSettings(backend="nope"))


async def test_megaservice_serve_llm_builds_the_service_from_the_environment():
    service = build("llm", port=0, environ={"LLM_ENDPOINT": "http://model:8000/v1", "LLM_MODEL_ID": "m"})
    assert isinstance(service, MicroService)
    assert service.name == "llm/MicroService"
    assert service.primary_port == 0
    assert LLMSettings().port == 9000
    assert LLMSettings().endpoint == "http://localhost:8080"
