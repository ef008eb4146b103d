"""The reranking service over its default backend (the packaged MiniLM in process), on a real socket.

OPEA's shapes on /v1/reranking, TEI's /rerank and /info, bad input, readiness. Expected orders are
computed here from the model's own vectors (cosine of the query's and each text's), never written in.
"""

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY

from megaservice.components._shared.runner import build
from megaservice.components.embedding.backend import Embedded
from megaservice.components.embedding.minilm import MODEL_ID, MiniLM
from megaservice.components.llm.request import build_request
from megaservice.components.reranker import RerankerSettings, create_service, load_backend
from megaservice.components.reranker.backend import backend_name
from megaservice.components.reranker.embedding import EmbeddingReranker, TextVectors
from megaservice.components.reranker.service import ranked
from megaservice.exceptions import ConfigurationError
from megaservice.protocol.docs import LLMParamsDoc
from megaservice.protocol.openai import ChatCompletionRequest
from megaservice.protocol.rag import RerankingResponse
from megaservice.testing import client_for, serve
from tests.components.test_embedding_service import wait_ready

pytestmark = pytest.mark.anyio

QUERY = "How do I keep guacamole from turning brown?"
DOCS = [
    "Guacamole is made from mashed avocado, lime, salt, onion and cilantro.",
    "The stock market fell sharply on Tuesday after the interest rate decision.",
    "Press plastic wrap onto the surface of the guacamole so no air reaches it, and it stays green.",
    "A ripe avocado yields slightly to gentle pressure.",
    "Lime juice slows the browning of avocado because the acid holds back the enzyme.",
]
METADATA = [{"source": "kitchen.md", "chunk_index": i, "page": 1 + i // 2} for i in range(len(DOCS))]


def cosines(model: MiniLM, query: str, texts: list[str]) -> np.ndarray:
    vectors = model.embed([query, *texts])
    return vectors[1:] @ vectors[0]


def expected_order(model: MiniLM, query: str, texts: list[str]) -> list[int]:
    return [int(i) for i in np.argsort(-cosines(model, query, texts), kind="stable")]


def service_for(minilm: MiniLM, **environ: str):
    settings = RerankerSettings.from_env(environ)
    return create_service(settings, load_backend(settings, model=minilm))


@pytest.fixture
async def client(minilm: MiniLM) -> AsyncIterator[httpx.AsyncClient]:
    """The service on a loopback socket, and an httpx client for it, ready."""
    async with serve(service_for(minilm, RERANK_MAX_TEXTS="40").app) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await wait_ready(client)).status_code == 200
        yield client


async def test_a_searched_doc_becomes_the_llm_params_doc_with_the_best_documents_and_their_metadata(client, minilm):
    best = expected_order(minilm, QUERY, DOCS)[:2]
    body = {"initial_query": QUERY, "retrieved_docs": [{"text": t} for t in DOCS], "metadata": METADATA, "top_n": 2}
    answer = (await client.post("/v1/reranking", json=body)).json()
    doc = LLMParamsDoc.model_validate(answer)
    assert doc.query == QUERY
    assert doc.documents == [DOCS[i] for i in best]
    assert [d["metadata"] for d in answer["reranked_docs"]] == [METADATA[i] for i in best]
    scores = [d["score"] for d in answer["reranked_docs"]]
    assert scores == pytest.approx([float(cosines(minilm, QUERY, DOCS)[i]) for i in best], abs=2e-3)
    # the LLM service puts them into OPEA's RAG prompt, best first
    prompt = build_request(answer, "m").body["messages"][0]["content"]
    assert prompt.index(DOCS[best[0]]) < prompt.index(DOCS[best[1]])
    assert not any(DOCS[i] in prompt for i in range(len(DOCS)) if i not in best)


async def test_metadata_inside_each_retrieved_doc_is_kept_and_top_n_defaults_to_opeas_one(client, minilm):
    best = expected_order(minilm, QUERY, DOCS)[0]
    docs = [{"text": t, "metadata": m, "id": f"doc{i}"} for i, (t, m) in enumerate(zip(DOCS, METADATA, strict=True))]
    answer = (await client.post("/v1/reranking", json={"initial_query": QUERY, "retrieved_docs": docs})).json()
    assert answer["documents"] == [DOCS[best]]
    assert answer["reranked_docs"] == [
        {"text": DOCS[best], "score": pytest.approx(answer["reranked_docs"][0]["score"]), "metadata": METADATA[best]}
    ]


async def test_a_reranking_request_answers_reranked_docs_with_scores_from_strings_or_objects(client, minilm):
    order = expected_order(minilm, QUERY, DOCS)
    objects = [{"text": t, "metadata": {"source": f"s{i}"}} for i, t in enumerate(DOCS)]
    from_objects = (
        await client.post("/v1/reranking", json={"input": QUERY, "retrieved_docs": objects, "top_n": 3})
    ).json()
    from_strings = (
        await client.post("/v1/reranking", json={"input": QUERY, "retrieved_docs": DOCS, "top_n": 9})
    ).json()
    RerankingResponse.model_validate(from_objects)
    assert [d["text"] for d in from_objects["reranked_docs"]] == [DOCS[i] for i in order[:3]]
    assert [d["metadata"] for d in from_objects["reranked_docs"]] == [{"source": f"s{i}"} for i in order[:3]]
    assert [d["text"] for d in from_strings["reranked_docs"]] == [DOCS[i] for i in order]  # top_n past the end: all
    assert all(d["metadata"] is None for d in from_strings["reranked_docs"])


async def test_a_chat_request_comes_back_with_reranked_docs_and_documents(client, minilm):
    order = expected_order(minilm, QUERY, DOCS)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUERY}]
    retrieved = [{"text": t, "metadata": m} for t, m in zip(DOCS, METADATA, strict=True)]
    body = {"messages": messages, "retrieved_docs": retrieved, "top_n": 2, "temperature": 0.3}
    answer = (await client.post("/v1/reranking", json=body)).json()
    chat = ChatCompletionRequest.model_validate(answer)
    assert chat.messages == messages and chat.temperature == 0.3
    assert chat.documents == [DOCS[i] for i in order[:2]]
    assert answer["retrieved_docs"] == retrieved  # what the retriever found stays, as OPEA keeps it
    assert [d["metadata"] for d in answer["reranked_docs"]] == [METADATA[i] for i in order[:2]]


async def test_an_empty_retrieval_passes_through_with_no_documents(client):
    answer = await client.post("/v1/reranking", json={"initial_query": QUERY, "retrieved_docs": []})
    assert answer.status_code == 200
    assert answer.json()["documents"] == [] and answer.json()["query"] == QUERY


async def test_tei_rerank_ranks_every_text_best_first(client, minilm):
    scores = cosines(minilm, QUERY, DOCS)
    answer = (await client.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True})).json()
    raw = (
        await client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True, "truncate": True})
    ).json()
    assert [r["index"] for r in answer] == expected_order(minilm, QUERY, DOCS)
    assert [r["text"] for r in answer] == [DOCS[r["index"]] for r in answer]
    assert [r["score"] for r in answer] == pytest.approx([float(scores[r["index"]]) for r in answer], abs=2e-3)
    assert all("text" not in r for r in raw)
    assert [r["index"] for r in raw] == [r["index"] for r in answer]  # a cosine has no raw form: the same scores


async def test_info_describes_a_reranker_with_the_services_limit(client):
    info = (await client.get("/info")).json()
    assert info["model_id"] == MODEL_ID
    assert "reranker" in info["model_type"]
    assert info["max_client_batch_size"] == 40
    assert info["max_input_length"] == 256
    assert info["backend"] == "embedding"


async def test_concurrent_requests_each_get_their_own_ranking(client, minilm):
    queries = [
        QUERY,
        "Which market fell on Tuesday?",
        "How can I tell that an avocado is ripe?",
        "What is guacamole made of?",
    ]
    answers: dict[int, list[int]] = {}

    async def ask(i: int) -> None:
        answer = await client.post("/rerank", json={"query": queries[i % 4], "texts": DOCS})
        assert answer.status_code == 200, answer.text
        answers[i] = [r["index"] for r in answer.json()]

    async with anyio.create_task_group() as group:
        for i in range(16):
            group.start_soon(ask, i)
    firsts = [expected_order(minilm, q, DOCS)[0] for q in queries]
    assert len(set(firsts)) >= 3  # the questions want different documents: a mix-up would show
    assert len(answers) == 16
    for i, order in answers.items():
        assert order[0] == firsts[i % 4]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"initial_query": "", "retrieved_docs": DOCS}, 400, "`initial_query` is empty"),
        ({"initial_query": "   ", "retrieved_docs": DOCS}, 400, "`initial_query` is empty"),
        ({"initial_query": 3, "retrieved_docs": DOCS}, 422, "`initial_query` must be a string"),
        ({"initial_query": QUERY, "retrieved_docs": DOCS, "top_n": 0}, 422, "`top_n` must be a positive integer"),
        ({"initial_query": QUERY, "retrieved_docs": DOCS, "top_n": -2}, 422, "`top_n` must be a positive integer"),
        ({"initial_query": QUERY, "retrieved_docs": DOCS, "top_n": "2"}, 422, "`top_n` must be a positive integer"),
        ({"initial_query": QUERY}, 422, "no `retrieved_docs`"),
        ({"initial_query": QUERY, "retrieved_docs": "a text"}, 422, "`retrieved_docs` must be a list"),
        ({"initial_query": QUERY, "retrieved_docs": [{"txt": "a"}]}, 422, "`retrieved_docs[0].text` must be a string"),
        ({"initial_query": QUERY, "retrieved_docs": [7]}, 422, "`retrieved_docs[0]` must be an object"),
        (
            {"initial_query": QUERY, "retrieved_docs": DOCS, "metadata": METADATA[:2]},
            422,
            "`metadata` has 2 entries for 5",
        ),
        ({"initial_query": QUERY, "retrieved_docs": ["x"] * 41}, 413, "at most 40 per request"),
        ({"input": QUERY, "retrieved_docs": []}, 400, "`retrieved_docs` is an empty list"),
        ({"input": "", "retrieved_docs": DOCS}, 400, "`input` is empty"),
        ({"messages": [{"role": "system", "content": "hi"}], "retrieved_docs": DOCS}, 400, "no user message text"),
        ({"query": QUERY, "texts": DOCS}, 400, "the body must be OPEA's SearchedDoc"),
        ([QUERY], 400, "must be a JSON object"),
    ],
)
async def test_bad_reranking_requests_are_refused_saying_what_is_wrong(client, body, status, says):
    answer = await client.post("/v1/reranking", json=body)
    assert answer.status_code == status
    assert says in answer.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "error_type", "says"),
    [
        ({"query": QUERY, "texts": []}, 400, "Empty", "`texts` cannot be empty"),
        ({"query": "", "texts": DOCS}, 400, "Empty", "`query` is empty"),
        ({"query": QUERY, "texts": ["x"] * 41}, 413, "Validation", "at most 40 per request"),
        ({"query": QUERY, "texts": "one text"}, 422, "Validation", "`texts` must be a list of strings"),
        ({"query": QUERY, "texts": [1, 2]}, 422, "Validation", "`texts` must be a list of strings"),
        ({"query": QUERY, "texts": DOCS, "raw_scores": "yes"}, 422, "Validation", "`raw_scores` must be true or false"),
        ({"query": QUERY, "texts": DOCS, "truncation_direction": "up"}, 422, "Validation", "'Left' or 'Right'"),
        ({"texts": DOCS}, 422, "Validation", "with `query`"),
    ],
)
async def test_bad_tei_requests_get_teis_error_body(client, body, status, error_type, says):
    answer = await client.post("/rerank", json=body)
    assert answer.status_code == status
    assert answer.json()["error_type"] == error_type
    assert says in answer.json()["error"]


def test_ties_keep_the_retrievers_order():
    assert ranked([0.5, 0.9, 0.5, 0.9, 0.1]) == [1, 3, 0, 2, 4]


async def test_ready_is_503_saying_why_when_the_model_cannot_load():
    settings = RerankerSettings()
    backend = load_backend(settings, model=MiniLM(onnx_file=Path("/nonexistent/model.onnx")))
    async with client_for(create_service(settings, backend).app) as client:
        with anyio.move_on_after(10):
            while "nonexistent" not in (answer := await client.get("/v1/ready")).text:
                await anyio.sleep(0.02)
    assert answer.status_code == 503


async def test_latencies_are_in_opeas_statistics(client):
    await client.post("/rerank", json={"query": QUERY, "texts": DOCS[:2]})
    statistics = (await client.get("/v1/statistics")).json()
    assert statistics["opea_service@reranking"]["p50_latency"] > 0


def test_the_runner_builds_it_from_the_environment_with_opeas_names():
    service = build("reranker", environ={"RERANK_PORT": "8123", "RERANK_COMPONENT_NAME": "OPEA_TEI_RERANKING"})
    assert service.port == 8123
    assert "tei backend" in service.description
    assert build("reranker", port=9001).port == 9001
    assert backend_name("OPEA_TEI_RERANKING") == "tei" and backend_name("Cross_Encoder") == "cross-encoder"
    with pytest.raises(ConfigurationError, match="choose one of embedding, tei, cross-encoder"):
        backend_name("OPEA_OVMS_RERANKING")
    with pytest.raises(ConfigurationError, match="needs RERANK_MODEL"):
        build("reranker", backend="cross-encoder")


class CountingEmbedder:
    """The packaged MiniLM as an `EmbeddingBackend`, recording every list of texts it was asked to embed."""

    name = "local"
    model_id = MODEL_ID
    dimension = 384
    max_input_length = 256
    model_dtype = "int8"

    def __init__(self, model: MiniLM) -> None:
        self.model = model
        self.calls: list[list[str]] = []

    async def start(self) -> None:
        pass

    async def ready(self) -> bool:
        return True

    async def embed(self, texts: list[str], model: str | None = None) -> Embedded:
        self.calls.append(list(texts))
        return Embedded(self.model.embed(texts), 0)

    async def aclose(self) -> None:
        pass


def counted(result: str) -> float:
    return REGISTRY.get_sample_value("rerank_cache_texts_total", {"result": result}) or 0.0


async def test_kept_vectors_give_the_scores_a_fresh_embedding_gives_and_only_new_texts_are_embedded(minilm):
    embedder = CountingEmbedder(minilm)
    reranker = EmbeddingReranker(embedder, cache_texts=100)
    uncached = EmbeddingReranker(CountingEmbedder(minilm))
    hits, misses = counted("hit"), counted("miss")
    question = "Why does guacamole go brown?"

    await reranker.score(QUERY, DOCS[:3])
    again = await reranker.score(question, [DOCS[2], DOCS[0], DOCS[4]])  # two kept, one new

    assert embedder.calls == [[QUERY, *DOCS[:3]], [question, DOCS[4]]]
    assert again == pytest.approx(await uncached.score(question, [DOCS[2], DOCS[0], DOCS[4]]), abs=1e-6)
    assert again == pytest.approx(cosines(minilm, question, [DOCS[2], DOCS[0], DOCS[4]]).tolist(), abs=1e-6)
    assert (counted("hit") - hits, counted("miss") - misses) == (2, 4)


async def test_the_cache_keeps_the_most_recently_used_texts_and_a_request_larger_than_it_still_scores(minilm):
    embedder = CountingEmbedder(minilm)
    reranker = EmbeddingReranker(embedder, cache_texts=2)
    uncached = EmbeddingReranker(CountingEmbedder(minilm))
    hits, misses = counted("hit"), counted("miss")

    scores = await reranker.score(QUERY, [DOCS[0], DOCS[1], DOCS[0], DOCS[2]])  # 3 texts, one twice: 2 kept

    assert embedder.calls == [[QUERY, DOCS[0], DOCS[1], DOCS[2]]]  # the repeated text embedded once
    assert (counted("hit") - hits, counted("miss") - misses) == (0, 4)  # every document scored counts once
    assert scores == pytest.approx(await uncached.score(QUERY, [DOCS[0], DOCS[1], DOCS[0], DOCS[2]]), abs=1e-6)
    assert scores[0] == scores[2]
    assert len(reranker.cache) == 2
    await reranker.score(QUERY, [DOCS[1], DOCS[2]])  # the two last kept
    assert embedder.calls[-1] == [QUERY]
    await reranker.score(QUERY, [DOCS[0]])  # dropped first: embedded again
    assert embedder.calls[-1] == [QUERY, DOCS[0]]


class GatedEmbedder(CountingEmbedder):
    """Embeds only once `gate` is set: requests overlap while their texts are being embedded."""

    def __init__(self, model: MiniLM) -> None:
        super().__init__(model)
        self.gate = anyio.Event()
        self.waiting = 0

    async def embed(self, texts: list[str], model: str | None = None) -> Embedded:
        self.waiting += 1
        await self.gate.wait()
        return await super().embed(texts, model)


async def test_requests_that_overlap_while_embedding_each_get_their_own_scores(minilm):
    embedder = GatedEmbedder(minilm)
    reranker = EmbeddingReranker(embedder, cache_texts=1)
    requests = [(QUERY, [DOCS[0], DOCS[1]]), ("Is the stock market up?", [DOCS[1], DOCS[3], DOCS[0]])]
    answers: list[list[float]] = [[], []]

    async def score(i: int) -> None:
        answers[i] = await reranker.score(*requests[i])

    async with anyio.create_task_group() as tg:
        tg.start_soon(score, 0)
        tg.start_soon(score, 1)
        while embedder.waiting < 2:
            await anyio.sleep(0.001)
        embedder.gate.set()

    for (query, texts), scores in zip(requests, answers, strict=True):
        assert scores == pytest.approx(cosines(minilm, query, texts).tolist(), abs=1e-6)
    assert len(reranker.cache) == 1
    assert await reranker.score(QUERY, [DOCS[0]]) == pytest.approx(answers[0][:1], abs=1e-6)


async def test_no_cache_embeds_every_text_every_time_and_counts_nothing(minilm):
    embedder = CountingEmbedder(minilm)
    reranker = EmbeddingReranker(embedder, cache_texts=0)
    hits, misses = counted("hit"), counted("miss")
    await reranker.score(QUERY, DOCS[:2])
    await reranker.score(QUERY, DOCS[:2])
    assert embedder.calls == [[QUERY, *DOCS[:2]]] * 2
    assert len(reranker.cache) == 0
    assert (counted("hit"), counted("miss")) == (hits, misses)


def test_the_in_process_backend_keeps_vectors_and_one_behind_an_embedding_service_does_not(minilm):
    local = load_backend(RerankerSettings.from_env({"RERANK_CACHE_TEXTS": "10"}), model=minilm)
    remote = load_backend(RerankerSettings.from_env({"EMBEDDING_ENDPOINT": "http://127.0.0.1:6000"}))
    assert isinstance(local, EmbeddingReranker) and local.cache.size == 10
    assert isinstance(remote, EmbeddingReranker) and remote.cache.size == 0
    assert RerankerSettings.from_env({}).cache_texts == 8192


def test_kept_vectors_are_found_by_the_exact_text_only():
    kept = TextVectors(4)
    vector = np.ones(3, dtype=np.float32)
    long_text = "guacamole " * 10_000
    kept.put(long_text, vector)
    assert kept.get(long_text) is vector
    assert kept.get(long_text[:-1]) is None
    assert kept.get(long_text + " ") is None
    assert kept.get("\ud800 a lone surrogate") is None  # any str can be asked for
