"""The megaservice over the real bias and embedding services (the packaged MiniLM), the LLM service over a FakeLLM."""

import asyncio
from collections.abc import Iterator

import httpx
import openai
import pytest

from megaservice.components.bias import BiasSettings, create_service as bias_service
from megaservice.components.bias.local import LocalBias
from megaservice.components.bias.service import REFUSAL
from megaservice.components.embedding import EmbeddingSettings, create_service as embedding_service, load_backend
from megaservice.components.embedding.minilm import MiniLM
from tests.gateway.conftest import FACT, QUESTION, content, extra, run_stack

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]

BIASED = "Women are too emotional to lead companies."


@pytest.fixture(scope="module")
def minilm() -> Iterator[MiniLM]:
    model = MiniLM()
    model.load()
    yield model


async def wait_ready(*urls: str) -> None:
    async with httpx.AsyncClient() as http:
        for url in urls:
            for _ in range(1000):
                if (await http.get(f"{url}/v1/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError(f"{url} never became ready")


async def test_the_bias_guardrail_refuses_and_the_embedding_service_embeds_for_the_retriever(minilm):
    bias = bias_service(BiasSettings(), LocalBias(BiasSettings(), model=minilm))
    settings = EmbeddingSettings()
    embedding = embedding_service(settings, load_backend(settings, model=minilm))
    async with run_stack(guardrail=bias.app, embedding=embedding.app) as stack:
        await wait_ready(stack.urls["guardrail"], stack.urls["embedding"])
        async with openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0) as client:
            answered = await client.chat.completions.create(
                model="chatqna", messages=[{"role": "user", "content": QUESTION}]
            )
            refused = await client.chat.completions.create(
                model="chatqna", messages=[{"role": "user", "content": BIASED}]
            )
            stream = await client.chat.completions.create(
                model="chatqna", messages=[{"role": "user", "content": BIASED}], stream=True
            )
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert "4417" in content(answered)
    assert extra(answered)["sources"][0]["source"] == "zorblax.md"
    search = stack.kb.searches[0]
    assert search["text"] == QUESTION and len(search["embedding"]) == 384  # MiniLM's EmbedDoc reached the retriever
    assert FACT in stack.llm.requests[0]["messages"][-1]["content"]
    assert refused.choices[0].message.content == REFUSAL == streamed
    assert refused.choices[0].finish_reason == "content_filter"
    assert extra(refused)["refused_by"] == "guardrail"
    assert len(stack.llm.requests) == 1  # only the first question reached the LLM
