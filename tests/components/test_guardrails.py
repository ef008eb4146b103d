"""The guardrails service: `/v1/guardrails` (TextDoc, GeneratedDoc), `/v1/toxicity`, checks from the environment."""

import asyncio

import pytest

from megaservice.components._shared.runner import build
from megaservice.components.guardrails import GuardrailsSettings, create_service, load_backend
from megaservice.exceptions import ConfigurationError
from megaservice.testing import client_for

pytestmark = pytest.mark.anyio

TOXIC = "You are a stupid idiot and I hate you."
CLEAN = "Could you summarise the quarterly report for me?"
BIASED = "Immigrants are lazy."


def service_for(minilm=None, **environ: str):
    settings = GuardrailsSettings.from_env(environ)
    return create_service(settings, load_backend(settings, minilm=minilm))


async def test_a_clean_text_passes_unchanged_as_a_textdoc():
    async with client_for(service_for().app) as client:
        answer = await client.post("/v1/guardrails", json={"text": CLEAN})
    assert answer.status_code == 200
    body = answer.json()
    assert body["text"] == CLEAN and body["downstream_black_list"] == []
    assert "violations" not in body


async def test_a_toxic_text_is_refused_naming_the_check_in_the_text_and_a_field():
    async with client_for(service_for().app) as client:
        body = (await client.post("/v1/guardrails", json={"text": TOXIC})).json()
    assert body["text"] == "Violated policies: toxicity, please check your input."
    assert body["downstream_black_list"] == [".*"]
    (violation,) = body["violations"]
    assert violation["check"] == "toxicity" and violation["score"] > 0.9


async def test_personal_data_is_masked_by_default_and_refused_when_configured():
    text = "Mail jane.doe@example.com or call +44 20 7946 0958 about card 4111 1111 1111 1111."
    async with client_for(service_for().app) as client:
        masked = (await client.post("/v1/guardrails", json={"text": text})).json()
    async with client_for(service_for(GUARDRAILS_PII_ACTION="refuse").app) as client:
        refused = (await client.post("/v1/guardrails", json={"text": text})).json()
    assert masked["text"] == "Mail [EMAIL] or call [PHONE] about card [CARD]."
    assert masked["downstream_black_list"] == []
    assert refused["text"] == "Violated policies: pii (email, phone, card), please check your input."
    assert refused["violations"] == [{"check": "pii", "detail": "email, phone, card"}]


async def test_banned_substrings_and_regexes_are_refused_naming_what_matched():
    service = service_for(
        GUARDRAILS_BANNED_SUBSTRINGS="backdoor, Project Falcon",
        GUARDRAILS_BANNED_REGEXES='["\\\\bsk-[A-Za-z0-9]{8,}", "x{2,3}y"]',
    )
    async with client_for(service.app) as client:
        substring = (await client.post("/v1/guardrails", json={"text": "Status of PROJECT FALCON?"})).json()
        regex = (await client.post("/v1/guardrails", json={"text": "my key is sk-abcdef123456"})).json()
        fine = (await client.post("/v1/guardrails", json={"text": "Projects are fine."})).json()
    assert substring["text"] == "Violated policies: banned (project falcon), please check your input."
    assert regex["violations"] == [{"check": "banned", "detail": "/\\bsk-[A-Za-z0-9]{8,}/"}]
    assert fine["text"] == "Projects are fine."


async def test_a_pattern_refusal_reports_every_pattern_check_and_spends_no_model_time():
    service = service_for(GUARDRAILS_BANNED_SUBSTRINGS="idiot", GUARDRAILS_PII_ACTION="refuse")
    async with client_for(service.app) as client:
        body = (await client.post("/v1/guardrails", json={"text": TOXIC + " Mail me: a@b.org"})).json()
    assert [v["check"] for v in body["violations"]] == ["banned", "pii"]  # toxicity did not run


async def test_an_llm_answer_comes_back_as_a_generateddoc(minilm):
    service = service_for(minilm, GUARDRAILS_CHECKS="pii,toxicity,bias")
    async with client_for(service.app) as client:
        passed = await client.post("/v1/guardrails", json={"prompt": "Who wrote it?", "text": "Ann, ann@x.io."})
        refused = await client.post("/v1/guardrails", json={"prompt": "Describe them.", "text": BIASED})
    assert passed.json()["text"] == "Ann, [EMAIL]." and passed.json()["prompt"] == "Who wrote it?"
    assert "downstream_black_list" not in passed.json()
    assert refused.json()["downstream_black_list"] == [".*"]
    assert {v["check"] for v in refused.json()["violations"]} == {"bias", "toxicity"}
    assert refused.json()["text"] == "Violated policies: toxicity, bias, please check your input."


async def test_the_bias_check_runs_in_process_with_its_threshold(minilm):
    mild = "Older workers can't keep up with new technology."  # P(BIASED) 0.84
    async with client_for(service_for(minilm, GUARDRAILS_CHECKS="bias").app) as client:
        refused = (await client.post("/v1/guardrails", json={"text": mild})).json()
    async with client_for(service_for(minilm, GUARDRAILS_CHECKS="bias", GUARDRAILS_BIAS_THRESHOLD="0.9").app) as c:
        passed = (await c.post("/v1/guardrails", json={"text": mild})).json()
    assert refused["violations"][0]["check"] == "bias" and refused["violations"][0]["score"] > 0.8
    assert passed["text"] == mild


async def test_a_list_of_texts_is_checked_text_by_text():
    async with client_for(service_for().app) as client:
        masked = (await client.post("/v1/guardrails", json={"text": [CLEAN, "write to a@b.org"]})).json()
        refused = (await client.post("/v1/guardrails", json={"text": [CLEAN, TOXIC]})).json()
    assert masked["text"] == [CLEAN, "write to [EMAIL]"]
    assert refused["downstream_black_list"] == [".*"]


async def test_the_toxicity_threshold_comes_from_the_environment():
    mild = "Immigrants are lazy."  # predict_prob 0.66
    async with client_for(service_for().app) as client:
        default = (await client.post("/v1/guardrails", json={"text": mild})).json()
    async with client_for(service_for(GUARDRAILS_TOXICITY_THRESHOLD="0.8").app) as client:
        lenient = (await client.post("/v1/guardrails", json={"text": mild})).json()
    assert default["violations"][0]["check"] == "toxicity"
    assert lenient["text"] == mild


async def test_one_insult_in_a_long_text_is_caught_sentence_by_sentence():
    news = "The council approved the budget for road repairs after a short debate on Tuesday evening. " * 8
    async with client_for(service_for().app) as client:
        body = (await client.post("/v1/guardrails", json={"text": news + TOXIC + " " + news})).json()
    assert body["violations"][0]["check"] == "toxicity"


async def test_opeas_toxicity_route_runs_its_check_even_when_the_list_leaves_it_out():
    async with client_for(service_for(GUARDRAILS_CHECKS="pii").app) as client:
        toxic = (await client.post("/v1/toxicity", json={"text": TOXIC})).json()
        clean = (await client.post("/v1/toxicity", json={"text": "mail a@b.org"})).json()
        guardrails = (await client.post("/v1/guardrails", json={"text": TOXIC})).json()
    assert toxic["text"] == "Violated policies: toxicity, please check your input."
    assert toxic["downstream_black_list"] == [".*"]
    assert clean["text"] == "mail a@b.org"  # /v1/toxicity does not mask PII
    assert guardrails["text"] == TOXIC  # toxicity is not among GUARDRAILS_CHECKS


async def test_concurrent_requests_each_get_their_own_answer():
    texts = [TOXIC if i % 4 == 0 else f"{CLEAN} ({i})" for i in range(32)]
    async with client_for(service_for().app) as client:
        answers = await asyncio.gather(*(client.post("/v1/guardrails", json={"text": t}) for t in texts))
    for text, answer in zip(texts, answers, strict=True):
        assert (answer.json()["downstream_black_list"] == [".*"]) == (text == TOXIC)


@pytest.mark.parametrize(
    ("route", "body", "named"),
    [
        ("/v1/guardrails", {}, "`text`"),
        ("/v1/guardrails", {"text": ""}, "`text` is empty"),
        ("/v1/guardrails", {"text": ["fine", 3]}, "`text`"),
        ("/v1/guardrails", {"text": "fine", "prompt": 5}, "`prompt`"),
        ("/v1/guardrails", "just a string", "JSON object"),
        ("/v1/toxicity", {"text": None}, "`text`"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(route, body, named):
    async with client_for(service_for().app) as client:
        answer = await client.post(route, json=body)
    assert answer.status_code == 422
    assert named in answer.json()["detail"]


async def test_ready_once_the_enabled_models_are_loaded():
    async with client_for(service_for().app) as client:
        for _ in range(1000):
            if (await client.get("/v1/ready")).status_code == 200:
                break
            await asyncio.sleep(0.01)
        assert (await client.get("/v1/ready")).status_code == 200


def test_settings_refuse_unknown_checks_bad_regexes_and_backends():
    with pytest.raises(ConfigurationError, match="GUARDRAILS_CHECKS must be a comma list of banned, pii"):
        GuardrailsSettings.from_env({"GUARDRAILS_CHECKS": "pii,profanity"})
    with pytest.raises(ConfigurationError, match="GUARDRAILS_BANNED_REGEXES must be a JSON array of regexes"):
        GuardrailsSettings.from_env({"GUARDRAILS_BANNED_REGEXES": "(unclosed"})
    with pytest.raises(ConfigurationError, match="GUARDRAILS_PII_TYPES must be a comma list of email"):
        GuardrailsSettings.from_env({"GUARDRAILS_PII_TYPES": "email,ssn"})
    with pytest.raises(ConfigurationError, match="GUARDRAILS_BACKEND"):
        load_backend(GuardrailsSettings(backend="OPEA_WILD_GUARD"))
    assert GuardrailsSettings().port == 9090
    assert GuardrailsSettings().checks == ("banned", "pii", "toxicity")


def test_opeas_llama_guard_component_adds_the_judge_asked_the_conversation():
    backend = load_backend(GuardrailsSettings.from_env({"GUARDRAILS_COMPONENT_NAME": "OPEA_LLAMA_GUARD"}))
    assert backend.name == "llama-guard"
    assert backend.checks == ("banned", "pii", "toxicity", "llm-judge")


def test_the_runner_builds_the_service_from_the_environment():
    service = build("guardrails", port=19090, environ={"GUARDRAILS_CHECKS": "banned,pii"})
    assert service.port == 19090
    paths = {route.path for route in service.app.routes}  # type: ignore[attr-defined]
    assert {"/v1/guardrails", "/v1/toxicity", "/v1/pii"} <= paths
