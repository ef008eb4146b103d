"""The `llm-judge` check: how answers are read, and the guardrails service asking a fake judge on a real socket."""

import pytest

from megaservice.components.guardrails import GuardrailsSettings, create_service, load_backend
from megaservice.components.guardrails.judge import parse_answer
from megaservice.testing import FakeJudge, client_for, serve, unused_url

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("answer", "flagged", "category"),
    [
        ("Yes.", True, None),
        ("no", False, None),
        ("**No**, the text is a neutral question.", False, None),
        ('"Yes" - it insults a group', True, None),
        ("safe", False, None),
        ("unsafe\nS10", True, "Hate"),
        ("unsafe\nS1,S10", True, "Violent Crimes, Hate"),
        ("unsafe\nO3", True, "Criminal Planning"),
        ("unsafe", True, None),
    ],
)
def test_answers_are_read_as_verdicts(answer, flagged, category):
    judgement = parse_answer(answer)
    assert (judgement.flagged, judgement.category) == (flagged, category)


@pytest.mark.parametrize("answer", ["", "Maybe.", "I cannot decide", "The answer is yes"])
def test_answers_that_are_not_verdicts_are_refused(answer):
    with pytest.raises(ValueError, match="neither yes/no nor safe/unsafe"):
        parse_answer(answer)


def service_for(url: str, **environ: str):
    settings = GuardrailsSettings.from_env(
        {"GUARDRAILS_CHECKS": "pii,llm-judge", "SAFETY_GUARD_ENDPOINT": url, **environ}
    )
    return create_service(settings, load_backend(settings))


async def test_the_judge_sees_the_text_with_its_pii_masked_and_its_yes_refuses():
    judge = FakeJudge(flagged=("bomb",))
    async with serve(judge) as url, client_for(service_for(url, SAFETY_GUARD_MODEL_ID="guard-1b").app) as client:
        refused = (await client.post("/v1/guardrails", json={"text": "How do I build a bomb? Mail a@b.org"})).json()
        passed = (await client.post("/v1/guardrails", json={"text": "How do I bake bread?"})).json()
    assert refused["text"] == "Violated policies: llm-judge, please check your input."
    assert refused["violations"] == [{"check": "llm-judge"}]
    assert passed["text"] == "How do I bake bread?"
    first = judge.requests[0]
    assert first["model"] == "guard-1b"
    assert "<text>\nHow do I build a bomb? Mail [EMAIL]\n</text>" in first["messages"][-1]["content"]
    assert "a@b.org" not in str(first)


async def test_a_custom_question_and_an_llm_answer_with_its_prompt():
    judge = FakeJudge(flagged=("competitor",))
    question = "Does the text recommend a competitor's product?"
    async with serve(judge) as url, client_for(service_for(url, GUARDRAILS_JUDGE_QUESTION=question).app) as client:
        body = (await client.post("/v1/guardrails", json={"prompt": "Which DB?", "text": "Use competitor DB."})).json()
    assert body["violations"] == [{"check": "llm-judge"}]
    user = judge.requests[0]["messages"][-1]["content"]
    assert question in user and "<prompt>\nWhich DB?\n</prompt>" in user


async def test_opeas_llama_guard_backend_sends_the_conversation_and_names_the_category():
    judge = FakeJudge(flagged=("hate",), llama_guard=True, category="S10")
    environ = {"GUARDRAILS_COMPONENT_NAME": "OPEA_LLAMA_GUARD", "GUARDRAILS_CHECKS": "pii"}
    async with serve(judge) as url, client_for(service_for(url, **environ).app) as client:
        refused = (await client.post("/v1/guardrails", json={"text": "I hate them all"})).json()
        answer = (await client.post("/v1/guardrails", json={"prompt": "Hi", "text": "Hello! How can I help?"})).json()
    assert refused["text"] == "Violated policies: llm-judge (Hate), please check your input."
    assert refused["violations"] == [{"check": "llm-judge", "detail": "Hate"}]
    assert answer["text"] == "Hello! How can I help?" and answer["prompt"] == "Hi"
    assert judge.requests[0]["messages"] == [{"role": "user", "content": "I hate them all"}]
    assert judge.requests[1]["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
    ]


async def test_a_judge_that_is_down_is_a_502_naming_it():
    async with client_for(service_for(unused_url()).app) as client:
        answer = await client.post("/v1/guardrails", json={"text": "anything"})
        pii_only = await client.post("/v1/pii", json={"text": "anything"})  # the single-purpose route needs no judge
    assert answer.status_code == 502
    assert answer.json()["node"] == "llm-judge"
    assert pii_only.status_code == 200


async def test_a_judge_without_a_verdict_is_a_502_naming_it():
    async with serve(FakeJudge(answer="I'd rather not say.")) as url, client_for(service_for(url).app) as client:
        answer = await client.post("/v1/guardrails", json={"text": "anything"})
    assert answer.status_code == 502
    assert answer.json()["node"] == "llm-judge" and "rather not" in answer.json()["message"]
