"""The official openai client and LangChain's ChatOpenAI against the LLM service, streaming and not."""

from collections.abc import AsyncIterator

import openai
import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI

from megaservice.components.llm import LLMSettings, create_service
from megaservice.testing import FakeLLM, FaultyServer, serve

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]

WORDS = ["Paris", " is", " the", " capital", "."]


@pytest.fixture
async def service() -> AsyncIterator[tuple[FakeLLM, str]]:
    """A FakeLLM serving model `m`, and the LLM service's `/v1` URL in front of it."""
    llm = FakeLLM(WORDS, models=["m"])
    async with serve(llm) as upstream:
        app = create_service(LLMSettings(endpoint=upstream, model_id="m")).app
        async with serve(app) as url:
            yield llm, f"{url}/v1"


async def test_the_openai_client_gets_a_completion_a_stream_and_the_model_list(service):
    llm, base = service
    async with openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0) as client:
        completion = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Capital of France?"}], max_tokens=8, temperature=0
        )
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Capital of France?"}], stream=True
        )
        pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
        models = await client.models.list()
    assert completion.choices[0].message.content == "".join(WORDS)
    assert pieces == WORDS
    assert [m.id for m in models.data] == ["m"]
    assert llm.requests[0]["max_tokens"] == 8


async def test_the_openai_client_sees_an_unknown_model_as_not_found(service):
    _, base = service
    async with openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError, match="The model `gpt-9` does not exist"):
            await client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])


async def test_the_openai_client_raises_when_the_stream_fails_midway():
    async with FaultyServer("stall") as upstream:
        app = create_service(LLMSettings(endpoint=upstream.url, read_timeout=0.2)).app
        async with serve(app) as url, openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            pieces = []
            with pytest.raises(openai.APIError, match="model-server did not answer in time"):
                async for chunk in stream:
                    pieces.append(chunk.choices[0].delta.content)  # noqa: PERF401  # kept when it raises
    assert pieces == ["partial"]


async def test_langchain_chat_openai_invokes_and_streams(service):
    llm, base = service
    chat = ChatOpenAI(base_url=base, api_key="unused", model="m", max_retries=0, temperature=0)  # type: ignore[arg-type]
    answer = await chat.ainvoke([HumanMessage("Capital of France?")])
    pieces = [chunk.content async for chunk in chat.astream("Capital of France?")]
    assert answer.content == "".join(WORDS)
    assert [p for p in pieces if p] == WORDS
    assert {r["model"] for r in llm.requests} == {"m"}
    assert all(r["messages"][-1]["content"] == "Capital of France?" for r in llm.requests)
