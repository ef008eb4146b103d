"""The retriever service over the embedded PostgreSQL: OPEA's shapes in and out, bad input, faults."""

import asyncio
import dataclasses
import re

import anyio
import httpx
import pytest

from megaservice.components._shared.runner import build
from megaservice.components._store import Store
from megaservice.components.embedding.minilm import DIMENSION, MODEL_ID
from megaservice.components.retriever import RetrieverSettings, create_service
from megaservice.components.retriever.inputs import read_request
from megaservice.exceptions import ConfigurationError, InputError
from megaservice.protocol.docs import SearchedMultimodalDoc
from megaservice.protocol.openai import ChatCompletionRequest
from megaservice.protocol.rag import RetrievalResponse, RetrievalResponseData
from megaservice.testing import serve
from tests.components.pgdata import FILES, QUERIES, embed, store_files

pytestmark = pytest.mark.anyio


async def wait_ready(client: httpx.AsyncClient, timeout: float = 30.0) -> httpx.Response:
    with anyio.move_on_after(timeout):
        while (answer := await client.get("/v1/ready")).status_code != 200:
            await anyio.sleep(0.05)
    return answer


@pytest.fixture
async def stored(postgres, collection, minilm):
    """The corpus, stored in this test's collection."""
    store = await Store.open(postgres.store_settings(collection=collection), model=MODEL_ID, dimension=DIMENSION)
    await store_files(store, minilm)
    yield store
    await store.aclose()


def settings_for(postgres, collection, **changes) -> RetrieverSettings:
    return RetrieverSettings(store=postgres.store_settings(collection=collection), **changes)


@pytest.fixture
async def retriever(postgres, collection, stored):
    async with serve(create_service(settings_for(postgres, collection, model=MODEL_ID)).app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert (await wait_ready(client)).status_code == 200
            yield client


async def test_embed_doc_in_searched_multimodal_doc_out(retriever, minilm):
    for query, source in QUERIES.items():
        vector = embed(minilm, [query])[0].tolist()
        answer = await retriever.post("/v1/retrieval", json={"text": query, "embedding": vector, "k": 3})
        assert answer.status_code == 200, answer.text
        doc = SearchedMultimodalDoc.model_validate(answer.json())
        assert doc.initial_query == query
        assert len(doc.retrieved_docs) == len(doc.metadata) == 3
        top, meta = doc.retrieved_docs[0], doc.metadata[0]
        assert meta["source"] == source
        assert top.text == FILES[source][meta["chunk_index"]]
        assert meta["page"] == meta["chunk_index"] // 2 + 1
        assert 0 < meta["score"] <= 1 and meta["distance"] == pytest.approx(1 - meta["score"])
        assert len(answer.json()["id"]) == 32


async def test_the_answer_is_the_stores_search(retriever, stored, minilm):
    vector = embed(minilm, ["gas giants and galaxies"])[0]
    for options in (
        {"search_type": "similarity", "k": 5},
        {"search_type": "mmr", "k": 4, "fetch_k": 12, "lambda_mult": 0.2},
        {"search_type": "hybrid", "k": 4},
        {"search_type": "similarity_score_threshold", "score_threshold": 0.1, "k": 10},
        {"search_type": "similarity_distance_threshold", "distance_threshold": 0.8, "k": 10},
        {"k": 6, "filters": {"page": {"$lte": 2}, "topic": {"$ne": "astronomy"}}},
    ):
        answer = await retriever.post(
            "/v1/retrieval", json={"text": "gas giants and galaxies", "embedding": vector.tolist(), **options}
        )
        assert answer.status_code == 200, (options, answer.text)
        filters = options.pop("filters", None)
        expected = await stored.search(vector, text="gas giants and galaxies", filters=filters, **options)
        assert [d["text"] for d in answer.json()["retrieved_docs"]] == [hit.text for hit in expected], options


async def test_opea_constraints_filter_too(retriever, minilm):
    vector = embed(minilm, ["planets"])[0].tolist()
    answer = await retriever.post(
        "/v1/retrieval",
        json={"text": "planets", "embedding": vector, "k": 10, "constraints": {"topic": "finance", "page": ["<=", 1]}},
    )
    assert answer.status_code == 200, answer.text
    metadata = answer.json()["metadata"]
    assert metadata and all(m["topic"] == "finance" and m["page"] <= 1 for m in metadata)


async def test_retrieval_request_in_retrieval_response_out(retriever, minilm):
    vector = embed(minilm, ["when to prune roses"])[0].tolist()
    embedding = {"object": "list", "data": [{"index": 0, "object": "embedding", "embedding": vector}]}
    for given in (vector, embedding):
        answer = await retriever.post(
            "/v1/retrieval", json={"input": "when to prune roses", "embedding": given, "k": 2}
        )
        assert answer.status_code == 200, answer.text
        docs = RetrievalResponse.model_validate(answer.json()).retrieved_docs
        assert docs[0].metadata is not None and docs[0].metadata["source"] == "gardening.md"
        assert "Prune rose bushes" in docs[0].text


async def test_chat_request_gets_retrieved_docs_and_documents(retriever, minilm):
    query = "how often to oil a bicycle chain"
    vector = embed(minilm, [query])[0].tolist()
    body = {
        "model": "any",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": query}],
        "embedding": {"object": "list", "data": [{"index": 0, "object": "embedding", "embedding": vector}]},
        "k": 2,
        "temperature": 0.3,
    }
    answer = await retriever.post("/v1/retrieval", json=body)
    assert answer.status_code == 200, answer.text
    chat = ChatCompletionRequest.model_validate(answer.json())
    assert chat.temperature == 0.3 and chat.messages == body["messages"]
    top = RetrievalResponseData.model_validate(chat.retrieved_docs[0])
    assert chat.documents is not None and len(chat.documents) == len(chat.retrieved_docs) == 2
    assert top.metadata is not None and top.metadata["source"] == "cycling.md"
    assert chat.documents[0] == top.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"text": "", "embedding": [0.1] * DIMENSION}, "`text` is empty"),
        ({"text": "   ", "embedding": [0.1] * DIMENSION}, "`text` is empty"),
        ({"text": "q", "embedding": [0.1] * 768}, f"768 dimensions, but collection .* holds {DIMENSION}"),
        (
            {"text": "q", "embedding": [0.1] * DIMENSION, "search_type": "semantic"},
            '`search_type` "semantic" is not one of',
        ),
        ({"text": "q", "embedding": [0.1] * DIMENSION, "k": 0}, "`k` must be from 1 to 1000, got 0"),
        ({"text": "q", "embedding": [0.1] * DIMENSION, "k": -3}, "`k` must be from 1 to 1000, got -3"),
        ({"text": "q", "embedding": [0.1] * DIMENSION, "k": 10**12}, "`k` must be from 1 to 1000"),
        ({"text": "q", "embedding": [0.1] * DIMENSION, "k": "4"}, "`k` must be an integer"),
        ({"text": "q", "embedding": []}, "`embedding` is missing or empty"),
        ({"text": "q"}, "`embedding` is missing or empty"),
        ({"text": "q", "embedding": ["a"] * DIMENSION}, r"`embedding\[0\]` must be a number"),
        ({"text": ["a", "b"], "embedding": [0.1] * DIMENSION}, "one query per request"),
        ({"text": "q", "embedding": [0.1] * DIMENSION, "search_type": "hybrid", "fetch_k": 0}, "`fetch_k` must be"),
        ({"text": "q", "embedding": [0.1] * DIMENSION, "filters": {"page": {"$regex": "x"}}}, "unknown operator"),
        ({"text": "q", "embedding": [0.1] * DIMENSION, "lambda_mult": 2}, "`lambda_mult` must be between 0 and 1"),
        # report D6: OPEA's EmbedDoc refuses negative thresholds (NonNegativeFloat); a similarity is at most 1
        ({"text": "q", "embedding": [0.1] * DIMENSION, "score_threshold": -1}, "`score_threshold` must not be"),
        ({"text": "q", "embedding": [0.1] * DIMENSION, "score_threshold": 5}, "`score_threshold` must be at most 1"),
        ({"text": "q", "embedding": [0.1] * DIMENSION, "distance_threshold": -0.5}, "`distance_threshold` must not be"),
        ({"text": "q", "embedding": [0.0] * DIMENSION}, "all zeros"),
        ({"query": "q"}, "the body must have `text` and `embedding`"),
    ],
)
async def test_bad_input_is_a_422_saying_what_is_wrong(retriever, body, message):
    answer = await retriever.post("/v1/retrieval", json=body)
    assert answer.status_code == 422, answer.text
    assert re.search(message, answer.json()["detail"]), answer.json()["detail"]


async def test_a_body_that_is_not_json_is_refused(retriever):
    answer = await retriever.post("/v1/retrieval", content=b"{not json", headers={"content-type": "application/json"})
    assert 400 <= answer.status_code < 500


async def test_another_embedding_model_is_refused_naming_both(postgres, collection, stored, minilm):
    service = create_service(settings_for(postgres, collection, model="BAAI/bge-small-en-v1.5"))
    async with serve(service.app) as url, httpx.AsyncClient(base_url=url) as client:
        with anyio.move_on_after(10):
            while "BAAI" not in (await client.get("/v1/ready")).text:
                await anyio.sleep(0.05)
        answer = await client.post("/v1/retrieval", json={"text": "q", "embedding": embed(minilm, ["q"])[0].tolist()})
        assert answer.status_code == 409
        assert MODEL_ID in answer.json()["detail"] and "BAAI/bge-small-en-v1.5" in answer.json()["detail"]
        status = await client.get("/v1/ready")
        assert status.status_code == 503 and "BAAI/bge-small-en-v1.5" in status.text


async def test_an_empty_collection_answers_no_documents(postgres, collection, minilm):
    async with serve(create_service(settings_for(postgres, collection)).app) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await wait_ready(client)).status_code == 200
            answer = await client.post(
                "/v1/retrieval", json={"text": "q", "embedding": embed(minilm, ["q"])[0].tolist()}
            )
            assert answer.status_code == 200
            assert answer.json()["retrieved_docs"] == [] and answer.json()["metadata"] == []


async def test_index_name_searches_another_collection(postgres, collection, minilm):
    other = collection + "_other"
    store = await Store.open(postgres.store_settings(collection=other), model=MODEL_ID, dimension=DIMENSION)
    try:
        await store_files(store, minilm, {"other.md": ["only the other collection has this sentence about owls"]})
        async with serve(create_service(settings_for(postgres, collection)).app) as url:
            async with httpx.AsyncClient(base_url=url) as client:
                await wait_ready(client)
                vector = embed(minilm, ["owls"])[0].tolist()
                answer = await client.post(
                    "/v1/retrieval", json={"text": "owls", "embedding": vector, "index_name": other}
                )
                assert [d["text"] for d in answer.json()["retrieved_docs"]] == [
                    "only the other collection has this sentence about owls"
                ]
                bad = await client.post(
                    "/v1/retrieval", json={"text": "owls", "embedding": vector, "index_name": "a b"}
                )
                assert bad.status_code == 422 and "index_name" in bad.json()["detail"]
    finally:
        await store.aclose()


async def test_an_unknown_index_name_is_searched_as_empty_and_takes_no_slot(postgres, collection, minilm):
    """Report D1: searches of collections that do not exist used up RETRIEVER_MAX_COLLECTIONS."""
    other = collection + "_other"
    store = await Store.open(postgres.store_settings(collection=other), model=MODEL_ID, dimension=DIMENSION)
    try:
        await store_files(store, minilm, {"other.md": ["only the other collection has this sentence about owls"]})
        settings = settings_for(postgres, collection, max_collections=2)  # the default and one other
        async with serve(create_service(settings).app) as url, httpx.AsyncClient(base_url=url) as client:
            await wait_ready(client)
            vector = embed(minilm, ["owls"])[0].tolist()
            for i in range(3):
                body = {"text": "owls", "embedding": vector, "index_name": f"{collection}_unknown_{i}"}
                answer = await client.post("/v1/retrieval", json=body)
                assert answer.status_code == 200 and answer.json()["retrieved_docs"] == [], answer.text
            answer = await client.post("/v1/retrieval", json={"text": "owls", "embedding": vector, "index_name": other})
            assert answer.status_code == 200, answer.text  # the one slot was still free
            assert [d["text"] for d in answer.json()["retrieved_docs"]] == [
                "only the other collection has this sentence about owls"
            ]
        unknown = Store(postgres.store_settings(collection=f"{collection}_unknown_0"))
        try:
            assert await unknown.count() == 0 and unknown.collection is None  # nothing was created
        finally:
            await unknown.aclose()
    finally:
        await store.aclose()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_database_down_is_a_503_naming_it_and_it_recovers(postgres, retriever, minilm):
    vector = embed(minilm, ["what is the biggest planet"])[0].tolist()
    body = {"text": "what is the biggest planet", "embedding": vector, "k": 2}
    assert (await retriever.post("/v1/retrieval", json=body)).status_code == 200
    postgres.stop()
    try:
        answer = await retriever.post("/v1/retrieval", json=body)
        assert answer.status_code == 503
        error = answer.json()
        assert error["node"] == "postgres" and "database" in error["message"] and "PostgreSQL" in error["message"]
        assert (await retriever.get("/v1/ready")).status_code == 503
    finally:
        postgres.start()
    answer = await retriever.post("/v1/retrieval", json=body)  # the same service, not restarted
    assert answer.status_code == 200, answer.text
    assert answer.json()["metadata"][0]["source"] == "astronomy.md"
    assert (await retriever.get("/v1/ready")).status_code == 200


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_postgres_restarted_under_load(postgres, retriever, minilm):
    """Searches keep coming while PostgreSQL restarts: each is answered 200 or 503, and all are 200 after."""
    vectors = embed(minilm, list(QUERIES))
    statuses: list[int] = []
    done = asyncio.Event()

    async def client_loop(i: int) -> None:
        while not done.is_set():
            body = {"text": "q", "embedding": vectors[i % len(vectors)].tolist(), "k": 3}
            answer = await retriever.post("/v1/retrieval", json=body)
            statuses.append(answer.status_code)
            if answer.status_code == 503:
                assert answer.json()["node"] == "postgres"

    tasks = [asyncio.create_task(client_loop(i)) for i in range(6)]
    await asyncio.sleep(0.5)
    await asyncio.to_thread(postgres.restart)
    await asyncio.sleep(0.5)
    done.set()
    await asyncio.gather(*tasks)
    assert set(statuses) <= {200, 503}
    assert 200 in statuses
    after = [await retriever.post("/v1/retrieval", json={"text": "q", "embedding": v.tolist()}) for v in vectors]
    assert [a.status_code for a in after] == [200] * len(vectors)


async def test_a_retriever_started_before_the_database_waits_for_it(tmp_path, minilm):
    """No PostgreSQL at the connection string: 503 naming it, not a crash; /v1/ready says why."""
    settings = RetrieverSettings(
        store=dataclasses.replace(
            RetrieverSettings.from_env({}).store_settings(),
            connection=f"host={tmp_path} port=5432 dbname=postgres user=postgres",
            pool_timeout=0.5,
        )
    )
    async with serve(create_service(settings).app) as url, httpx.AsyncClient(base_url=url) as client:
        answer = await client.post("/v1/retrieval", json={"text": "q", "embedding": embed(minilm, ["q"])[0].tolist()})
        assert answer.status_code == 503
        assert answer.json()["node"] == "postgres" and str(tmp_path) in answer.json()["message"]
        assert (await client.get("/v1/ready")).status_code == 503


def test_settings_and_opea_names():
    settings = RetrieverSettings.from_env(
        {"RETRIEVER_COMPONENT_NAME": "OPEA_RETRIEVER_PGVECTOR", "PG_INDEX_NAME": "rag", "RETRIEVER_PORT": "7100"}
    )
    assert settings.backend == "OPEA_RETRIEVER_PGVECTOR" and settings.port == 7100
    assert settings.store_settings().collection == "rag"
    service = build("retriever", environ={"PG_INDEX_NAME": "rag"})
    assert service.port == 7000 and service.endpoint == "/v1/retrieval"
    with pytest.raises(ConfigurationError, match="RETRIEVER_BACKEND='redis' is not a backend"):
        create_service(RetrieverSettings(backend="redis"))


def test_requests_are_read_into_searches():
    asked = read_request({"text": ["q"], "embedding": [[0.5, 0.5]], "k": 7, "search_type": "mmr", "fetch_k": 30})
    assert asked.search.text == "q" and list(asked.search.vector) == [0.5, 0.5]
    assert (asked.search.k, asked.search.search_type, asked.search.fetch_k) == (7, "mmr", 30)
    constraints = read_request({"text": "q", "embedding": [1.0], "constraints": [{"a": 1}, {"b": [">=", 2]}]})
    assert constraints.search.filters == {"$and": [{"a": 1}, {"b": {"$gte": 2}}]}
    with pytest.raises(InputError, match="not both"):
        read_request({"text": "q", "embedding": [1.0], "filters": {"a": 1}, "constraints": {"a": 1}})


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("k", True, "`k` must be an integer from 1 to 1000, not true"),
        ("fetch_k", "20", '`fetch_k` must be an integer from 1 to 1000, not "20"'),
        ("search_type", None, "`search_type` null is not one of similarity"),
        ("search_type", ["mmr"], '`search_type` ["mmr"] is not one of similarity'),
        ("score_threshold", False, "`score_threshold` must be a number, not false"),
        ("lambda_mult", {"a": None}, '`lambda_mult` must be a number, not {"a":null}'),
        ("k", "x" * 500, '`k` must be an integer from 1 to 1000, not "' + "x" * 59 + "..."),
    ],
)
def test_refusals_show_the_value_as_the_json_sent(field, value, shown):
    """Report D7: the messages showed Python's reprs (True, None) of JSON values."""
    with pytest.raises(InputError) as caught:
        read_request({"text": "q", "embedding": [1.0], field: value})
    assert str(caught.value).startswith(shown) and caught.value.status_code == 422
