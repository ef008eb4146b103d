"""The `tei` and `openai` backends against the fakes megaservice.testing ships, failures included."""

import numpy as np
import pytest

from megaservice.components.embedding import EmbeddingSettings, create_service
from megaservice.testing import FakeOpenAIEmbeddings, FakeTEI, Fault, FaultyServer, client_for, serve, unused_url
from tests.components.test_embedding_service import TEXTS, wait_ready

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]


def tei_service(url: str, **environ: str):
    settings = EmbeddingSettings.from_env({"EMBEDDING_BACKEND": "tei", "TEI_EMBEDDING_ENDPOINT": url, **environ})
    return create_service(settings)


def openai_service(url: str, **environ: str):
    settings = EmbeddingSettings.from_env({"EMBEDDING_BACKEND": "openai", "OPENAI_EMBEDDING_ENDPOINT": url, **environ})
    return create_service(settings)


async def test_tei_vectors_come_back_normalised_in_order_in_calls_tei_accepts(minilm):
    tei = FakeTEI(embed=minilm.embed, model_id="BAAI/bge-base-en-v1.5")
    texts = [f"text number {i}" for i in range(70)]
    async with serve(tei) as url, client_for(tei_service(url, HF_TOKEN="hf_secret").app) as client:
        assert (await wait_ready(client)).status_code == 200
        answer = await client.post("/v1/embeddings", json={"input": texts})
        tei_answer = await client.post("/embed", json={"inputs": TEXTS[0]})
        info = (await client.get("/info")).json()
    assert answer.status_code == 200
    vectors = [item["embedding"] for item in answer.json()["data"]]
    assert np.allclose(vectors, minilm.embed(texts), atol=1e-6)
    assert np.allclose(tei_answer.json(), minilm.embed(TEXTS[:1]), atol=1e-6)
    sent = [batch for batch in tei.batches if batch != ["ready?"]]
    assert [len(batch) for batch in sent] == [32, 32, 6, 1]  # TEI's max_client_batch_size is 32
    assert [text for batch in sent[:3] for text in batch] == texts
    assert all(request["truncate"] is True for request in tei.requests)
    assert tei.headers[-1]["authorization"] == "Bearer hf_secret"
    assert info["model_id"] == "tei"  # TEI's /embed does not name its model: EMBEDDING_MODEL would


async def test_tei_down_is_a_502_naming_it_and_ready_says_so():
    url = unused_url()
    async with client_for(tei_service(url).app) as client:
        ready = await client.get("/v1/ready")
        answer = await client.post("/v1/embeddings", json={"input": "tea"})
        tei_route = await client.post("/embed", json={"inputs": "tea"})
    assert ready.status_code == 503
    assert f"cannot reach tei at {url}/embed" in ready.json()["reason"]
    assert answer.status_code == 502
    assert answer.json()["node"] == "tei"
    assert answer.json()["type"] == "upstream_unreachable"
    assert tei_route.status_code == 502


async def test_tei_too_slow_is_a_504_and_an_error_status_a_502_with_it():
    async with serve(FakeTEI(delay=0.5)) as slow, serve(FakeTEI(status=500)) as failing:
        async with client_for(tei_service(slow, EMBEDDING_REMOTE_TIMEOUT="0.1").app) as client:
            timed_out = await client.post("/v1/embeddings", json={"input": "tea"})
        async with client_for(tei_service(failing).app) as client:
            failed = await client.post("/v1/embeddings", json={"input": "tea"})
    assert timed_out.status_code == 504
    assert timed_out.json()["node"] == "tei"
    assert failed.status_code == 502
    assert failed.json()["upstream_status"] == 500


async def test_tei_dimensions_beyond_the_remote_models_are_refused():
    async with serve(FakeTEI(dim=16)) as url, client_for(tei_service(url).app) as client:
        answer = await client.post("/v1/embeddings", json={"input": "tea", "dimensions": 17})
        short = await client.post("/v1/embeddings", json={"input": "tea", "dimensions": 8})
        after = await client.post("/v1/embeddings", json={"input": "tea", "dimensions": 17})
    assert answer.status_code == after.status_code == 400
    assert "larger than the model's 16 dimensions" in answer.json()["detail"]
    assert len(short.json()["data"][0]["embedding"]) == 8


async def test_openai_backend_sends_the_key_and_the_model_and_reads_usage():
    server = FakeOpenAIEmbeddings(dim=12, models=["nomic-embed-text"], api_key="sk-test")
    async with serve(server) as url:
        environ = {"OPENAI_API_KEY": "sk-test", "EMBEDDING_MODEL": "nomic-embed-text"}
        async with client_for(openai_service(url, **environ).app) as client:
            assert (await wait_ready(client)).status_code == 200
            answer = (await client.post("/v1/embeddings", json={"input": TEXTS, "model": "ignored"})).json()
            doc = (await client.post("/v1/embeddings", json={"text": TEXTS[0]})).json()
            info = (await client.get("/info")).json()
    assert server.requests[-1]["model"] == "nomic-embed-text"
    assert server.headers[-1]["authorization"] == "Bearer sk-test"
    assert answer["model"] == info["model_id"] == "nomic-embed-text"
    assert info["model_dtype"] is None  # a remote model's is not known
    assert answer["usage"]["prompt_tokens"] == sum(len(t.split()) for t in TEXTS)
    assert np.array(answer["data"][0]["embedding"]) == pytest.approx(np.array(doc["embedding"]))
    assert np.linalg.norm(doc["embedding"]) == pytest.approx(1.0)


async def test_openai_backend_passes_the_requests_model_when_none_is_configured():
    server = FakeOpenAIEmbeddings(models=["a", "b"])
    async with serve(server) as url, client_for(openai_service(url + "/v1").app) as client:
        first = await client.post("/v1/embeddings", json={"input": "tea", "model": "b"})
        unknown = await client.post("/v1/embeddings", json={"input": "tea", "model": "c"})
    assert first.status_code == 200 and first.json()["model"] == "b"
    assert unknown.status_code == 502
    assert unknown.json()["upstream_status"] == 404


async def test_openai_backend_failures_name_it():
    async with serve(FakeOpenAIEmbeddings(api_key="right")) as guarded, serve(FakeOpenAIEmbeddings(delay=0.5)) as slow:
        async with client_for(openai_service(guarded, OPENAI_API_KEY="wrong").app) as client:
            refused = await client.post("/v1/embeddings", json={"input": "tea"})
            ready = await client.get("/v1/ready")
        async with client_for(openai_service(slow, EMBEDDING_REMOTE_TIMEOUT="0.1").app) as client:
            timed_out = await client.post("/v1/embeddings", json={"input": "tea"})
        async with client_for(openai_service(unused_url()).app) as client:
            down = await client.post("/v1/embeddings", json={"input": "tea"})
    assert refused.status_code == 502 and refused.json()["upstream_status"] == 401
    assert ready.status_code == 503 and "openai answered HTTP 401" in ready.json()["reason"]
    assert timed_out.status_code == 504 and timed_out.json()["node"] == "openai"
    assert down.status_code == 502 and down.json()["node"] == "openai"


async def test_a_remote_answer_that_is_not_embeddings_is_a_502():
    async with FaultyServer(Fault.OK) as echo, FaultyServer(Fault.BAD_JSON) as garbled:  # OK echoes the request
        async with client_for(openai_service(echo.url).app) as client:
            echoed = await client.post("/v1/embeddings", json={"input": "tea"})
        async with client_for(tei_service(garbled.url).app) as client:
            not_json = await client.post("/v1/embeddings", json={"input": "tea"})
    assert echoed.status_code == not_json.status_code == 502
    assert echoed.json()["type"] == not_json.json()["type"] == "upstream_protocol"
    assert "openai answered not the expected JSON" in echoed.json()["message"]
