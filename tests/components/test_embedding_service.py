"""The embedding service over the packaged MiniLM: OPEA's /v1/embeddings in its three shapes, and TEI's routes."""

import base64
import threading
from collections.abc import AsyncIterator

import anyio
import httpx
import numpy as np
import openai
import pytest

from megaservice.components._shared.runner import build
from megaservice.components.embedding import EmbeddingSettings, create_service, load_backend
from megaservice.components.embedding.batched import BatchedBackend
from megaservice.components.embedding.minilm import DIMENSION, MODEL_ID, MiniLM
from megaservice.exceptions import ConfigurationError
from megaservice.protocol.docs import EmbedDoc
from megaservice.protocol.openai import ChatCompletionRequest
from megaservice.protocol.rag import EmbeddingResponse
from megaservice.testing import client_for, serve

pytestmark = pytest.mark.anyio

TEXTS = ["a cat sleeps on the sofa", "stock prices fell sharply today", "the kitten naps on the couch"]


async def wait_ready(client: httpx.AsyncClient, timeout: float = 20.0) -> httpx.Response:
    """Poll /v1/ready until it answers 200 (or the timeout passes); the last answer."""
    with anyio.move_on_after(timeout):
        while (answer := await client.get("/v1/ready")).status_code != 200:
            await anyio.sleep(0.02)
    return answer


def service_for(minilm: MiniLM, **environ: str):
    settings = EmbeddingSettings.from_env(environ)
    return create_service(settings, load_backend(settings, model=minilm))


@pytest.fixture
async def client(minilm: MiniLM) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(service_for(minilm).app) as client:
        assert (await wait_ready(client)).status_code == 200
        yield client


async def test_the_openai_client_embeds_one_text_and_a_list_over_a_socket(minilm):
    expected = minilm.embed(TEXTS)
    async with serve(service_for(minilm).app) as url:
        async with httpx.AsyncClient(base_url=url) as probe:
            await wait_ready(probe)
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused") as client:
            one = await client.embeddings.create(model="any", input=TEXTS[0])  # base64 on the wire
            many = await client.embeddings.create(model="any", input=TEXTS, encoding_format="float")
    assert len(one.data) == 1 and len(one.data[0].embedding) == DIMENSION
    assert np.allclose(one.data[0].embedding, expected[0], atol=1e-6)
    assert [item.index for item in many.data] == [0, 1, 2]
    assert np.allclose([item.embedding for item in many.data], expected, atol=1e-6)
    assert many.model == MODEL_ID
    assert many.usage.prompt_tokens == many.usage.total_tokens == sum(minilm.count_tokens(TEXTS))


async def test_base64_is_little_endian_float32(client, minilm):
    answer = (await client.post("/v1/embeddings", json={"input": "tea", "encoding_format": "base64"})).json()
    vector = np.frombuffer(base64.b64decode(answer["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(vector, minilm.embed(["tea"])[0], atol=1e-6)


async def test_tei_embed_answers_what_v1_embeddings_answers(client):
    openai_answer = (await client.post("/v1/embeddings", json={"input": TEXTS})).json()
    tei_batch = (await client.post("/embed", json={"inputs": TEXTS})).json()
    tei_single = (await client.post("/embed", json={"inputs": TEXTS[1], "truncate": True})).json()
    tei_root = (await client.post("/", json={"inputs": TEXTS, "options": {"wait_for_model": True}})).json()
    vectors = [item["embedding"] for item in openai_answer["data"]]
    assert np.array(tei_batch).shape == (3, DIMENSION)
    assert np.allclose(tei_batch, vectors, atol=1e-6)
    assert np.array(tei_single).shape == (1, DIMENSION)  # TEI answers a list of vectors for one string too
    assert np.allclose(tei_single[0], vectors[1], atol=1e-6)
    assert np.allclose(tei_root, tei_batch, atol=1e-6)  # langchain's HuggingFaceInferenceAPIEmbeddings posts to /


async def test_tei_normalize_false_gives_the_raw_mean_pooled_vector(client):
    raw = np.array((await client.post("/embed", json={"inputs": "tea time", "normalize": False})).json()[0])
    unit = np.array((await client.post("/embed", json={"inputs": "tea time"})).json()[0])
    assert abs(np.linalg.norm(raw) - 1) > 0.01
    assert np.allclose(raw / np.linalg.norm(raw), unit, atol=1e-6)


async def test_tei_info_describes_the_model_as_tei_does(client):
    info = (await client.get("/info")).json()
    tei_keys = {
        "model_id", "model_sha", "model_dtype", "model_type", "max_concurrent_requests", "max_input_length",
        "max_batch_tokens", "max_batch_requests", "max_client_batch_size", "auto_truncate",
        "tokenization_workers", "version", "sha", "docker_label",
    }  # fmt: skip
    assert tei_keys <= info.keys()
    assert info["model_id"] == MODEL_ID
    assert info["max_input_length"] == 256
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["model_dtype"] == "int8"  # report D7: it said float32 of the packaged int8 ONNX model
    assert info["auto_truncate"] is True
    models = (await client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == [MODEL_ID]


async def test_a_text_doc_gets_an_embed_doc_as_opea_answers(client, minilm):
    one = (await client.post("/v1/embeddings", json={"text": TEXTS[0]})).json()
    many = (await client.post("/v1/embeddings", json={"text": TEXTS[:2]})).json()
    doc = EmbedDoc.model_validate(one)
    assert doc.text == TEXTS[0]
    assert np.allclose(doc.embedding, minilm.embed(TEXTS[:1])[0], atol=1e-6)
    assert (doc.search_type, doc.k, doc.fetch_k) == ("similarity", 4, 20)  # retrieval defaults for the retriever
    assert len(one["id"]) == 32
    assert many["text"] == TEXTS[:2]
    assert np.array(many["embedding"]).shape == (2, DIMENSION)


async def test_a_chat_request_comes_back_with_its_embedding(client, minilm):
    body = {"messages": [{"role": "user", "content": "ignored"}], "input": TEXTS[0], "k": 7}
    answer = (await client.post("/v1/embeddings", json=body)).json()
    request = ChatCompletionRequest.model_validate(answer)
    assert request.k == 7 and request.input == TEXTS[0]
    embedding = EmbeddingResponse.model_validate(request.embedding)
    assert np.allclose(embedding.data[0].embedding, minilm.embed(TEXTS[:1])[0], atol=1e-6)
    without_input = {"messages": [{"role": "user", "content": TEXTS[2]}]}
    answer = (await client.post("/v1/embeddings", json=without_input)).json()
    assert np.allclose(answer["embedding"]["data"][0]["embedding"], minilm.embed(TEXTS[2:])[0], atol=1e-6)


async def test_dimensions_truncate_and_renormalise(client, minilm):
    answer = (await client.post("/v1/embeddings", json={"input": TEXTS[0], "dimensions": 64})).json()
    vector = np.array(answer["data"][0]["embedding"])
    full = minilm.embed(TEXTS[:1])[0][:64]
    assert vector.shape == (64,)
    assert np.allclose(vector, full / np.linalg.norm(full), atol=1e-6)
    tei = np.array((await client.post("/embed", json={"inputs": TEXTS[0], "dimensions": 64})).json()[0])
    assert np.allclose(tei, vector, atol=1e-6)


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"input": []}, 400, "empty list"),
        ({"input": ""}, 400, "empty string"),
        ({"input": ["a", ""]}, 400, "`input[1]` is an empty string"),
        ({"input": 42}, 400, "must be a string or a list of strings, not int"),
        ({"input": ["a", None]}, 400, "`input[1]` must be a string, not null"),
        ({"input": [[101, 2023, 102]]}, 400, "token ids"),
        ({"input": "a", "dimensions": 385}, 400, "`dimensions` 385 is larger than the model's 384"),
        ({"input": "a", "dimensions": 0}, 400, "`dimensions` must be a positive integer"),
        ({"input": "a", "encoding_format": "int8"}, 400, "`encoding_format` must be 'float' or 'base64'"),
        ({"input": "a", "model": 3}, 400, "`model` must be a string"),
        ({"text": None}, 400, "`text` must be a string or a list of strings"),
        ({"query": "a"}, 400, "the body must have `input`"),
        (["a"], 400, "the body must be a JSON object"),
        ({"input": ["a"] * 11}, 413, "`input` has 11 texts; at most 10 per request"),
        ({"messages": 5, "input": "a"}, 422, "messages"),
    ],
)
async def test_bad_input_is_refused_naming_what_is_wrong(minilm, body, status, names):
    async with client_for(service_for(minilm, EMBEDDING_MAX_INPUTS="10").app) as client:
        answer = await client.post("/v1/embeddings", json=body)
    assert answer.status_code == status
    assert names in str(answer.json()["detail"])


async def test_tei_routes_refuse_in_teis_shape(minilm):
    async with client_for(service_for(minilm, EMBEDDING_MAX_INPUTS="2").app) as client:
        empty = await client.post("/embed", json={"inputs": []})
        too_many = await client.post("/embed", json={"inputs": ["a", "b", "c"]})
        wrong = await client.post("/embed", json={"input": "a"})
        normalize = await client.post("/embed", json={"inputs": "a", "normalize": "yes"})
        not_json = await client.post("/v1/embeddings", content=b"{nope", headers={"content-type": "application/json"})
    assert empty.status_code == 400 and "empty list" in empty.json()["error"]
    assert too_many.status_code == 413 and too_many.json() == {
        "error": "`inputs` has 3 texts; at most 2 per request",
        "error_type": "Validation",
    }
    assert wrong.status_code == 400 and "`inputs`" in wrong.json()["error"]
    assert normalize.status_code == 400 and "`normalize` must be true or false" in normalize.json()["error"]
    assert not_json.status_code == 400


class GatedModel(MiniLM):
    """The packaged MiniLM, whose loading waits until the test opens the gate (or fails on purpose)."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.fail = fail

    def load(self) -> None:
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("no model file here")
        super().load()


async def test_ready_answers_503_until_the_model_is_loaded():
    model = GatedModel()
    settings = EmbeddingSettings.from_env({})
    async with client_for(create_service(settings, BatchedBackend("local", model)).app) as client:
        before = await client.get("/v1/ready")
        model.gate.set()
        after = await wait_ready(client)
    assert before.status_code == 503
    assert after.status_code == 200


async def test_a_model_that_cannot_load_keeps_ready_at_503_saying_why():
    model = GatedModel(fail=True)
    model.gate.set()
    async with client_for(create_service(EmbeddingSettings(), BatchedBackend("local", model)).app) as client:
        with anyio.move_on_after(10):
            while "no model file" not in (answer := await client.get("/v1/ready")).text:
                await anyio.sleep(0.02)
    assert answer.status_code == 503
    assert answer.json()["reason"] == "RuntimeError: no model file here"


async def test_latencies_are_in_opeas_statistics(client):
    await client.post("/v1/embeddings", json={"input": "tea"})
    statistics = (await client.get("/v1/statistics")).json()
    assert statistics["opea_service@embedding"]["p50_latency"] > 0


def test_the_runner_builds_the_backend_the_environment_names():
    assert build("embedding", environ={"EMBEDDING_COMPONENT_NAME": "OPEA_TEI_EMBEDDING"}).port == 6000
    assert build("embedding", backend="openai", port=7100, environ={}).port == 7100
    service = build("embedding", environ={"EMBEDDING_BACKEND": "clip", "EMBEDDING_PORT": "6123"})
    assert service.port == 6123
    assert "clip backend" in service.description
    with pytest.raises(ConfigurationError, match="EMBEDDING_BACKEND='nope' is not a backend"):
        build("embedding", environ={"EMBEDDING_BACKEND": "nope"})
