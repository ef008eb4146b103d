"""The reranker's remote paths: the `tei` backend against FakeTEIReranker, the `embedding` backend against an
embedding service, failures included; and FakeTEIReranker itself, which users test against."""

import math

import httpx
import numpy as np
import pytest

from megaservice.components.embedding import (
    EmbeddingSettings,
    create_service as create_embedding_service,
    load_backend as load_embedding_backend,
)
from megaservice.components.reranker import RerankerSettings, create_service
from megaservice.testing import FakeTEIReranker, Fault, FaultyServer, client_for, serve, unused_url
from megaservice.testing.rerank import overlap_logits
from tests.components.test_embedding_service import wait_ready
from tests.components.test_reranker import DOCS, METADATA, QUERY, expected_order

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]


def tei_service(url: str, **environ: str):
    settings = RerankerSettings.from_env({"RERANK_BACKEND": "tei", "TEI_RERANKING_ENDPOINT": url, **environ})
    return create_service(settings)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def fake_order(query: str, texts: list[str]) -> list[int]:
    logits = overlap_logits(query, texts)
    return sorted(range(len(texts)), key=lambda i: -logits[i])


async def test_the_tei_backend_ranks_a_searched_doc_by_teis_scores_keeping_metadata():
    tei = FakeTEIReranker(model_id="BAAI/bge-reranker-base")
    async with serve(tei) as url, serve(tei_service(url, HF_TOKEN="hf_secret").app) as ours:
        async with httpx.AsyncClient(base_url=ours) as client:
            assert (await wait_ready(client)).status_code == 200
            body = {
                "initial_query": QUERY,
                "retrieved_docs": [{"text": t} for t in DOCS],
                "metadata": METADATA,
                "top_n": 3,
            }
            answer = (await client.post("/v1/reranking", json=body)).json()
            info = (await client.get("/info")).json()
    best = fake_order(QUERY, DOCS)[:3]
    assert answer["documents"] == [DOCS[i] for i in best]
    assert [d["metadata"] for d in answer["reranked_docs"]] == [METADATA[i] for i in best]
    logits = overlap_logits(QUERY, DOCS)
    assert [d["score"] for d in answer["reranked_docs"]] == pytest.approx([sigmoid(logits[i]) for i in best])
    assert tei.calls[-1] == (QUERY, DOCS)
    assert tei.requests[-1]["raw_scores"] is False and "truncate" not in tei.requests[-1]
    assert tei.headers[-1]["authorization"] == "Bearer hf_secret"
    assert info["model_id"] == "BAAI/bge-reranker-base"  # read from TEI's /info
    assert info["backend"] == "tei"


async def test_the_tei_route_answers_what_tei_itself_answers():
    tei = FakeTEIReranker()
    body = {"query": QUERY, "texts": DOCS, "raw_scores": True, "return_text": True, "truncate": True}
    async with serve(tei) as url, client_for(tei_service(url).app) as client:
        ours = (await client.post("/rerank", json=body)).json()
        async with httpx.AsyncClient(base_url=url) as direct:
            theirs = (await direct.post("/rerank", json=body)).json()
    assert ours == theirs
    assert tei.requests[0]["raw_scores"] is True and tei.requests[0]["truncate"] is True


async def test_more_texts_than_tei_takes_are_split_into_calls_and_merged():
    tei = FakeTEIReranker(max_client_batch_size=10)
    texts = [f"guacamole tip number {i}" + " lime" * (i % 7) + " plastic wrap" * (i % 3) for i in range(45)]
    async with serve(tei) as url, client_for(tei_service(url).app) as client:
        assert (await wait_ready(client)).status_code == 200  # reads /info: at most 10 texts a call
        answer = (await client.post("/rerank", json={"query": "lime plastic wrap", "texts": texts})).json()
        again = (
            await client.post(
                "/v1/reranking", json={"input": "lime plastic wrap", "retrieved_docs": texts, "top_n": 45}
            )
        ).json()
    assert [len(call[1]) for call in tei.calls[:5]] == [10, 10, 10, 10, 5]
    assert sorted(text for call in tei.calls[:5] for text in call[1]) == sorted(texts)
    assert [r["index"] for r in answer] == fake_order("lime plastic wrap", texts)
    assert [d["text"] for d in again["reranked_docs"]] == [texts[i] for i in fake_order("lime plastic wrap", texts)]


async def test_tei_down_slow_failing_or_garbled_is_a_5xx_naming_it():
    async with serve(FakeTEIReranker(delay=0.5)) as slow, serve(FakeTEIReranker(status=500)) as failing:
        async with client_for(tei_service(unused_url()).app) as client:
            ready = await client.get("/v1/ready")
            down = await client.post("/rerank", json={"query": QUERY, "texts": DOCS})
        async with client_for(tei_service(slow, RERANK_REMOTE_TIMEOUT="0.1").app) as client:
            timed_out = await client.post("/v1/reranking", json={"input": QUERY, "retrieved_docs": DOCS})
        async with client_for(tei_service(failing).app) as client:
            failed = await client.post("/v1/reranking", json={"input": QUERY, "retrieved_docs": DOCS})
    async with FaultyServer(Fault.OK) as echo, client_for(tei_service(echo.url).app) as client:  # echoes the request
        garbled = await client.post("/rerank", json={"query": QUERY, "texts": DOCS})
    assert ready.status_code == 503 and "tei-rerank" in ready.json()["reason"]
    assert down.status_code == 502 and down.json()["node"] == "tei-rerank"
    assert timed_out.status_code == 504 and timed_out.json()["node"] == "tei-rerank"
    assert failed.status_code == 502 and failed.json()["upstream_status"] == 500
    assert garbled.status_code == 502 and garbled.json()["type"] == "upstream_protocol"


async def test_the_embedding_backend_can_call_an_embedding_service(minilm):
    embedding_settings = EmbeddingSettings()
    embedding = create_embedding_service(embedding_settings, load_embedding_backend(embedding_settings, model=minilm))
    async with serve(embedding.app) as embedding_url:
        settings = RerankerSettings.from_env({"EMBEDDING_ENDPOINT": embedding_url})
        async with serve(create_service(settings).app) as url, httpx.AsyncClient(base_url=url) as client:
            assert (await wait_ready(client)).status_code == 200
            answer = (await client.post("/rerank", json={"query": QUERY, "texts": DOCS})).json()
            info = (await client.get("/info")).json()
    vectors = minilm.embed([QUERY, *DOCS])
    assert [r["index"] for r in answer] == expected_order(minilm, QUERY, DOCS)
    assert [r["score"] for r in answer] == pytest.approx(
        [float(vectors[1 + r["index"]] @ vectors[0]) for r in answer], abs=2e-3
    )
    assert info["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"  # what the embedding service named


async def test_an_embedding_service_that_is_down_is_a_502_naming_it():
    settings = RerankerSettings.from_env({"EMBEDDING_ENDPOINT": unused_url()})
    async with client_for(create_service(settings).app) as client:
        answer = await client.post("/rerank", json={"query": QUERY, "texts": DOCS})
    assert answer.status_code == 502 and answer.json()["node"] == "embedding"


async def test_fake_tei_reranker_refuses_what_tei_refuses():
    tei = FakeTEIReranker(max_client_batch_size=4, max_input_length=12)
    async with serve(tei) as url, httpx.AsyncClient(base_url=url) as client:
        empty = await client.post("/rerank", json={"query": "q", "texts": []})
        too_many = await client.post("/rerank", json={"query": "q", "texts": ["a"] * 5})
        too_long = await client.post("/rerank", json={"query": "q", "texts": ["word " * 20]})
        cut = await client.post("/rerank", json={"query": "q", "texts": ["word " * 20], "truncate": True})
        malformed = await client.post("/rerank", json={"query": "q", "texts": "a"})
        info = (await client.get("/info")).json()
        health = await client.get("/health")
    assert (empty.status_code, empty.json()["error_type"]) == (400, "Empty")
    assert (too_many.status_code, too_many.json()["error"]) == (413, "batch size 5 > maximum allowed batch size 4")
    assert too_long.status_code == 413 and "must have less than 12 tokens" in too_long.json()["error"]
    assert cut.status_code == 200
    assert malformed.status_code == 422
    assert "reranker" in info["model_type"] and info["max_client_batch_size"] == 4
    assert health.status_code == 200
    assert len(tei.calls) == 1  # only the request TEI accepted reached the model


async def test_fake_tei_reranker_scores_are_sigmoids_of_its_logits_best_first():
    tei = FakeTEIReranker(logits=lambda query, texts: [float(len(t)) - 3 for t in texts])
    async with serve(tei) as url, httpx.AsyncClient(base_url=url) as client:
        scored = (await client.post("/rerank", json={"query": "q", "texts": ["ab", "abcdef", "abcd"]})).json()
        raw = (await client.post("/rerank", json={"query": "q", "texts": ["ab", "abcdef"], "raw_scores": True})).json()
    assert [r["index"] for r in scored] == [1, 2, 0]
    assert np.allclose([r["score"] for r in scored], [sigmoid(3), sigmoid(1), sigmoid(-1)])
    assert raw == [{"index": 1, "score": 3.0}, {"index": 0, "score": -1.0}]
