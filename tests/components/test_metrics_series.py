"""Each component's series moves when its thing happens: real sockets, `/metrics` scraped before and after."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from megaservice.components.bias import BiasSettings, create_service as bias_service
from megaservice.components.bias.local import LocalBias
from megaservice.components.dataprep import DataprepSettings, create_service as dataprep_service
from megaservice.components.dataprep.embedder import load_embedder
from megaservice.components.embedding import EmbeddingSettings, create_service as embedding_service, load_backend
from megaservice.components.embedding.minilm import MODEL_ID, MiniLM
from megaservice.components.guardrails import (
    GuardrailsSettings,
    create_service as guardrails_service,
    load_backend as guardrails_backend,
)
from megaservice.components.llm import LLMSettings, create_service as llm_service
from megaservice.components.retriever import RetrieverSettings, create_service as retriever_service
from megaservice.testing import FakeGuardrail, FakeLLM, serve
from megaservice.testing.postgres import EmbeddedPostgres
from tests.components.pgdata import embed
from tests.gateway.conftest import QUESTION, run_stack
from tests.scrape import moved, scrape

pytestmark = pytest.mark.anyio

BIASED = "Women are too emotional to lead companies."


async def wait_ready(url: str, timeout: float = 60.0) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        with anyio.move_on_after(timeout):
            while (await client.get("/v1/ready")).status_code != 200:
                await anyio.sleep(0.02)
        answer = await client.get("/v1/ready")
    assert answer.status_code == 200, answer.text


@pytest.fixture
async def guardrails() -> AsyncIterator[str]:
    settings = GuardrailsSettings.from_env(
        {
            "GUARDRAILS_BANNED_SUBSTRINGS": "backdoor",
            "GUARDRAILS_PII_ACTION": "refuse",
            "GUARDRAILS_CHECKS": "banned,pii",
        }
    )
    async with serve(guardrails_service(settings, guardrails_backend(settings)).app) as url:
        yield url


async def test_a_guardrail_refusal_counts_once_under_each_check_that_fired(guardrails):
    before = await scrape(guardrails)
    async with httpx.AsyncClient(base_url=guardrails, timeout=30) as http:
        both = (await http.post("/v1/guardrails", json={"text": "Mail the backdoor key to jane@example.com"})).json()
        banned = (await http.post("/v1/guardrails", json={"text": "Where is the backdoor?"})).json()
        clean = (await http.post("/v1/guardrails", json={"text": "Summarise the report."})).json()
    after = await scrape(guardrails)
    assert [v["check"] for v in both["violations"]] == ["banned", "pii"]
    assert banned["downstream_black_list"] == [".*"] and clean["downstream_black_list"] == []
    assert moved(before, after, "guardrail_refusals_total", service="guardrails", check="banned") == 2
    assert moved(before, after, "guardrail_refusals_total", service="guardrails", check="pii") == 1
    assert moved(before, after, "guardrail_refusals_total", service="guardrails", check="toxicity") == 0


async def test_a_bias_refusal_counts_under_the_bias_service_and_check(minilm):
    async with serve(bias_service(BiasSettings(), LocalBias(BiasSettings(), model=minilm)).app) as url:
        await wait_ready(url)
        before = await scrape(url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            refused = (await http.post("/v1/bias", json={"text": BIASED})).json()
            passed = (await http.post("/v1/bias", json={"text": "The meeting is at noon."})).json()
        after = await scrape(url)
    assert refused["downstream_black_list"] == [".*"] and passed["downstream_black_list"] == []
    assert moved(before, after, "guardrail_refusals_total", service="bias", check="bias") == 1


async def test_embedded_texts_are_counted_and_batches_observed(minilm):
    settings = EmbeddingSettings()
    async with serve(embedding_service(settings, load_backend(settings, model=minilm)).app) as url:
        await wait_ready(url)
        before = await scrape(url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            answers = await asyncio.gather(
                http.post("/v1/embeddings", json={"input": ["one", "two", "three"]}),
                http.post("/embed", json={"inputs": "four"}),
            )
        after = await scrape(url)
    assert [answer.status_code for answer in answers] == [200, 200]
    assert moved(before, after, "embedding_texts_total", backend="local") == 4
    assert moved(before, after, "embedding_batch_size_sum", backend="local") == 4
    assert moved(before, after, "embedding_batch_size_count", backend="local") >= 1


async def test_a_streamed_answer_is_timed_by_the_llm_service_event_by_event():
    tokens = [" The", " code", " is", " 4417."]
    async with serve(FakeLLM(tokens)) as model_server:
        async with serve(llm_service(LLMSettings(endpoint=model_server)).app) as url:
            before = await scrape(url)
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                body = {"messages": [{"role": "user", "content": "code?"}], "stream": True}
                streamed = await http.post("/v1/chat/completions", json=body)
                body["stream"] = False
                whole = await http.post("/v1/chat/completions", json=body)
            after = await scrape(url)
    events = streamed.text.count("\n\n")
    assert events == len(tokens) + 1 and whole.status_code == 200  # the tokens, then [DONE]
    assert moved(before, after, "llm_first_token_latency_seconds_count") == 1  # the streamed request only
    assert moved(before, after, "llm_inter_token_latency_seconds_count") == events - 1


async def test_a_streamed_answer_through_the_gateway_splits_pipeline_time_from_model_time(upstream_client):
    guardrail = FakeGuardrail(delay=0.2)  # the pipeline's time before the LLM ...
    llm = FakeLLM(prefill_delay=0.3)  # ... and the model's before its first token
    async with run_stack(guardrail=guardrail, llm=llm) as stack:
        before = await scrape(stack.url)
        async with stack.client() as http:
            ask = {"messages": [{"role": "user", "content": QUESTION}], "stream": True}
            streamed = await http.post("/v1/chat/completions", json=ask)
            middle = await scrape(stack.url)
            refused = await http.post(
                "/v1/chat/completions", json={**ask, "messages": [{"role": "user", "content": "stupid"}]}
            )
            whole = await http.post("/v1/chat/completions", json={**ask, "stream": False})
            opea = await http.post("/v1/chatqna", json={"messages": QUESTION, "stream": True})
        after = await scrape(stack.url)
    assert "4417" in streamed.text and "content_filter" in refused.text and "4417" in whole.text and "4417" in opea.text
    assert moved(before, middle, "megaservice_first_token_latency_count") == 1
    assert moved(before, middle, "megaservice_pipeline_latency_count") == 1
    assert moved(before, middle, "megaservice_llm_first_token_latency_count") == 1
    assert moved(before, middle, "megaservice_pipeline_latency_sum") >= 0.2  # the guardrail's wait is the pipeline's
    assert moved(before, middle, "megaservice_llm_first_token_latency_sum") >= 0.3  # the prefill, the model's
    assert moved(before, middle, "megaservice_first_token_latency_sum") >= 0.5  # the client waited for both
    assert moved(before, middle, "megaservice_inter_token_latency_count") >= 1
    # refused: the LLM never called; not streamed: the pipeline timed, no first token; OPEA's route: both
    assert moved(middle, after, "megaservice_pipeline_latency_count") == 2
    assert moved(middle, after, "megaservice_llm_first_token_latency_count") == 1
    assert moved(middle, after, "megaservice_first_token_latency_count") == 1


@pytest.mark.integration
async def test_ingestion_and_retrieval_move_their_series(postgres: EmbeddedPostgres, minilm: MiniLM):
    store = postgres.store_settings(collection=f"metrics_{uuid.uuid4().hex[:12]}")
    settings = DataprepSettings(store=store)
    dataprep = dataprep_service(settings, embedder=load_embedder(settings, minilm=minilm))
    retriever = retriever_service(RetrieverSettings(store=store, model=MODEL_ID))
    text = "\n\n".join(f"Paragraph {i}: the blue safe holds launch code {4400 + i}. " * 8 for i in range(12))
    async with serve(dataprep.app) as dataprep_url, serve(retriever.app) as retriever_url:
        await wait_ready(dataprep_url)
        await wait_ready(retriever_url)
        before = await scrape(dataprep_url)
        async with httpx.AsyncClient(timeout=60) as http:
            files = [("files", ("safe.txt", text.encode(), "text/plain"))]
            ingested = await http.post(f"{dataprep_url}/v1/dataprep/ingest", files=files, data={"chunk_size": "300"})
            refused = await http.post(f"{dataprep_url}/v1/dataprep/ingest", data={"chunk_size": "300"})
            vector = embed(minilm, ["launch code in the blue safe"])[0].tolist()
            searches = [
                await http.post(f"{retriever_url}/v1/retrieval", json={"text": "code", "embedding": vector, **options})
                for options in ({"k": 3}, {"k": 2, "search_type": "mmr"}, {"k": 4})
            ]
        after = await scrape(retriever_url)
    assert ingested.status_code == 200, ingested.text
    chunks = ingested.json()["chunks"]
    assert chunks > 1 and refused.status_code == 400
    assert moved(before, after, "dataprep_files_total") == 1
    assert moved(before, after, "dataprep_chunks_total") == chunks
    assert moved(before, after, "dataprep_chunks_embedded_total") == chunks
    assert moved(before, after, "dataprep_failures_total", kind="input") == 1
    assert moved(before, after, "dataprep_ingest_in_progress") == 0  # both requests counted out
    assert [len(s.json()["retrieved_docs"]) for s in searches] == [3, 2, 4]
    assert moved(before, after, "retrieval_latency_seconds_count", search_type="similarity") == 2
    assert moved(before, after, "retrieval_latency_seconds_count", search_type="mmr") == 1
    assert moved(before, after, "retrieval_documents_sum", search_type="similarity") == 7
    assert moved(before, after, "retrieval_documents_bucket", search_type="mmr", le="2.0") == 1
