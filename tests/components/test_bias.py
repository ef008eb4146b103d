"""The bias service (`POST /v1/bias`, OPEA's shapes) over the packaged MiniLM head, and its settings."""

import asyncio
import re

import pytest

from megaservice.components._shared.runner import build
from megaservice.components.bias import BiasSettings, create_service, load_backend
from megaservice.components.bias.head import BiasHead
from megaservice.components.bias.local import LocalBias
from megaservice.components.bias.service import REFUSAL
from megaservice.exceptions import ConfigurationError
from megaservice.testing import client_for

pytestmark = pytest.mark.anyio

BIASED = "Women are too emotional to lead companies."
NEUTRAL = "The meeting starts at 10 am in room 4."
MILD = "Older workers can't keep up with new technology."  # P(BIASED) 0.84
NEWS = (
    "The city council met on Tuesday to discuss the new bus routes. The budget for road repairs was approved "
    "after a short debate. Residents asked about the timetable for the northern line. The library will extend "
    "its opening hours in the summer. A new playground is planned near the river. "
)


def service_for(minilm, environ=None):
    settings = BiasSettings.from_env(environ or {})
    return create_service(settings, LocalBias(settings, model=minilm))


async def wait_ready(client) -> None:
    for _ in range(500):
        if (await client.get("/v1/ready")).status_code == 200:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the bias service never became ready")


async def test_a_biased_text_is_refused_with_opeas_text_and_black_list(minilm):
    async with client_for(service_for(minilm).app) as client:
        answer = await client.post("/v1/bias", json={"text": BIASED})
    assert answer.status_code == 200
    body = answer.json()
    assert body["text"] == REFUSAL == "Violated policies: bias, please check your input."
    assert body["downstream_black_list"] == [".*"]
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])


async def test_a_neutral_text_passes_unchanged(minilm):
    async with client_for(service_for(minilm).app) as client:
        body = (await client.post("/v1/bias", json={"text": NEUTRAL})).json()
    assert body["text"] == NEUTRAL
    assert body["downstream_black_list"] == []


async def test_a_list_is_refused_if_any_text_is_biased_and_passed_on_whole_otherwise(minilm):
    async with client_for(service_for(minilm).app) as client:
        mixed = (await client.post("/v1/bias", json={"text": [NEUTRAL, BIASED]})).json()
        clean = (await client.post("/v1/bias", json={"text": [NEUTRAL, "Thanks, that helped."]})).json()
    assert mixed["text"] == REFUSAL
    assert clean["text"] == [NEUTRAL, "Thanks, that helped."]


async def test_one_biased_sentence_in_a_long_neutral_text_is_caught_sentence_by_sentence(minilm):
    long_text = NEWS + BIASED + " " + NEWS
    assert len(long_text.split()) > BiasSettings().max_words
    whole = float(BiasHead.load().probabilities(minilm.embed([long_text]))[0])
    assert whole < 0.1  # embedded whole, the neutral majority dilutes the biased sentence
    async with client_for(service_for(minilm).app) as client:
        body = (await client.post("/v1/bias", json={"text": long_text})).json()
    assert body["text"] == REFUSAL


async def test_the_threshold_comes_from_the_environment(minilm):
    async with client_for(service_for(minilm).app) as client:
        default = (await client.post("/v1/bias", json={"text": MILD})).json()
    async with client_for(service_for(minilm, {"BIAS_DETECTION_THRESHOLD": "0.9"}).app) as client:
        strict = (await client.post("/v1/bias", json={"text": MILD})).json()
    assert default["text"] == REFUSAL
    assert strict["text"] == MILD


async def test_concurrent_requests_each_get_their_own_answer(minilm):
    texts = [BIASED if i % 3 == 0 else f"{NEUTRAL} Item {i}." for i in range(24)]
    async with client_for(service_for(minilm).app) as client:
        answers = await asyncio.gather(*(client.post("/v1/bias", json={"text": t}) for t in texts))
    for text, answer in zip(texts, answers, strict=True):
        assert answer.json()["text"] == (REFUSAL if text == BIASED else text)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "`text`"),
        ({"text": ""}, "`text` is empty"),
        ({"text": "   "}, "`text` is empty"),
        ({"text": 5}, "not int"),
        ({"text": [NEUTRAL, ""]}, "`text[1]`"),
        ({"text": [NEUTRAL, 3]}, "not list"),
        ([NEUTRAL], "JSON object"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(minilm, body, named):
    async with client_for(service_for(minilm).app) as client:
        answer = await client.post("/v1/bias", json=body)
    assert answer.status_code == 422
    assert named in answer.json()["detail"]


async def test_a_body_that_is_not_json_is_a_400(minilm):
    async with client_for(service_for(minilm).app) as client:
        answer = await client.post("/v1/bias", content=b"{text", headers={"content-type": "application/json"})
    assert answer.status_code == 400


async def test_ready_once_the_model_is_loaded(minilm):
    async with client_for(service_for(minilm).app) as client:
        await wait_ready(client)
        assert (await client.get("/v1/health_check")).status_code == 200


async def test_a_head_file_that_cannot_be_read_makes_requests_503_saying_why(minilm, tmp_path):
    broken = tmp_path / "head.json"
    broken.write_text('{"dim": 384, "weights": [1, 2]}')
    async with client_for(service_for(minilm, {"BIAS_DETECTION_HEAD_FILE": str(broken)}).app) as client:
        for _ in range(500):
            answer = await client.post("/v1/bias", json={"text": NEUTRAL})
            if answer.status_code == 503:
                break
            await asyncio.sleep(0.01)
        assert answer.status_code == 503
        assert "could not be loaded" in answer.json()["detail"] and "head.json" in answer.json()["detail"]
        assert (await client.get("/v1/ready")).status_code == 503


def test_settings_take_opeas_names_and_refuse_bad_values():
    settings = BiasSettings.from_env({"BIAS_DETECTION_COMPONENT_NAME": "OPEA_NATIVE_BIAS", "BIAS_DETECTION_PORT": "1"})
    assert (settings.backend, settings.port) == ("OPEA_NATIVE_BIAS", 1)
    assert BiasSettings().port == 9092
    with pytest.raises(ConfigurationError, match="BIAS_DETECTION_THRESHOLD"):
        BiasSettings.from_env({"BIAS_DETECTION_THRESHOLD": "1.5"})
    with pytest.raises(ConfigurationError, match=r"BIAS_DETECTION_BACKEND.*local, transformers, llm-judge"):
        load_backend(BiasSettings(backend="keywords"))
    assert load_backend(settings).name == "transformers"  # OPEA's native backend is the transformers pipeline
    assert load_backend(BiasSettings()).name == "local"


def test_the_runner_builds_the_service_from_the_environment():
    service = build("bias", port=19092, environ={"BIAS_DETECTION_THRESHOLD": "0.6"})
    assert service.port == 19092
    assert "/v1/bias" in {route.path for route in service.app.routes}  # type: ignore[attr-defined]
