"""The official openai client, LangChain's ChatOpenAI and the megaservice LLM service against the model server."""

import httpx
import openai
import orjson
import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionMessageParam
from pydantic import SecretStr

from megaservice.components.llm import LLMSettings, create_service
from megaservice.testing import serve

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.usefixtures("upstream_client")]

MODEL = "SmolLM2-135M-Instruct.Q4_1"
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France? Answer in one word."}
]


async def test_the_openai_client_gets_a_completion_a_stream_and_the_models(llm_server):
    async with openai.AsyncOpenAI(base_url=f"{llm_server.url}/v1", api_key="unused", max_retries=0) as client:
        completion = await client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=12, temperature=0)
        stream = await client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        models = await client.models.list()
        with pytest.raises(openai.BadRequestError, match="maximum context length"):
            await client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=100_000)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "Paris" in (completion.choices[0].message.content or "")
    assert completion.usage is not None and completion.usage.completion_tokens <= 12
    assert len(pieces) > 2
    assert "".join(pieces) == completion.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == completion.usage.completion_tokens
    assert [m.id for m in models.data] == [MODEL]


async def test_langchain_chat_openai_invokes_and_streams(llm_server):
    chat = ChatOpenAI(
        base_url=f"{llm_server.url}/v1",
        api_key=SecretStr("unused"),
        model=MODEL,
        max_retries=0,
        temperature=0,
        max_completion_tokens=12,
    )
    answer = await chat.ainvoke([HumanMessage("What is the capital of France? Answer in one word.")])
    pieces = [chunk.content async for chunk in chat.astream("What is the capital of France? Answer in one word.")]
    assert "Paris" in answer.content
    assert len([p for p in pieces if p]) > 2
    assert "".join(str(p) for p in pieces) == answer.content


async def test_the_llm_service_in_front_streams_the_models_real_tokens(llm_server):
    body = {"messages": ASK, "max_tokens": 12, "temperature": 0}
    async with httpx.AsyncClient(timeout=60) as client:
        direct = (await client.post(f"{llm_server.url}/v1/chat/completions", json=body)).json()
        app = create_service(LLMSettings(endpoint=llm_server.url)).app
        async with serve(app) as url:
            streamed = await client.post(f"{url}/v1/chat/completions", json={**body, "stream": True})
            opea = await client.post(
                f"{url}/v1/chat/completions",
                json={
                    "query": "Who runs the shop?",
                    "documents": ["The shop is run by Agnes Tolley."],
                    "max_tokens": 16,
                    "temperature": 0,
                },
            )
    pieces = [
        orjson.loads(event[6:])["choices"][0]["delta"].get("content")
        for event in streamed.content.split(b"\n\n")
        if event.startswith(b"data: {")
    ]
    text = [p for p in pieces if p]
    assert streamed.status_code == 200 and streamed.content.endswith(b"data: [DONE]\n\n")
    assert len(text) > 2
    assert "".join(text) == direct["choices"][0]["message"]["content"]
    opea_text = "".join(
        orjson.loads(event[6:])["choices"][0]["delta"].get("content") or ""
        for event in opea.content.split(b"\n\n")
        if event.startswith(b"data: {")
    )
    assert "Tolley" in opea_text  # OPEA's LLMParamsDoc with documents: a RAG prompt, streamed, answered from it
