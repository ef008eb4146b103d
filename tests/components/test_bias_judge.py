"""The `llm-judge` bias backend against a fake OpenAI-compatible judge on a real socket (megaservice.testing)."""

import pytest

from megaservice.components.bias import BiasSettings, create_service
from megaservice.components.bias.service import REFUSAL
from megaservice.testing import FakeJudge, client_for, serve, unused_url

pytestmark = pytest.mark.anyio


def judged_by(url: str, **environ: str):
    return create_service(
        BiasSettings.from_env({"BIAS_DETECTION_BACKEND": "llm-judge", "BIAS_JUDGE_ENDPOINT": url, **environ})
    )


async def test_the_judges_yes_refuses_and_its_no_passes():
    judge = FakeJudge(flagged=("lazy",))
    async with serve(judge) as url, client_for(judged_by(url).app) as client:
        refused = (await client.post("/v1/bias", json={"text": "Immigrants are lazy."})).json()
        passed = (await client.post("/v1/bias", json={"text": "The bus was late."})).json()
    assert refused["text"] == REFUSAL and refused["downstream_black_list"] == [".*"]
    assert passed["text"] == "The bus was late." and passed["downstream_black_list"] == []
    question = judge.requests[0]
    assert question["temperature"] == 0.0 and question["stream"] is False
    assert "model" not in question  # unset: the server's default model
    system, user = question["messages"]
    assert system["role"] == "system" and "yes or no" in system["content"]
    assert "<text>\nImmigrants are lazy.\n</text>" in user["content"] and "stereotype" in user["content"]


async def test_model_and_key_are_sent_and_opeas_endpoint_name_works():
    judge = FakeJudge()
    async with serve(judge) as url:
        service = create_service(
            BiasSettings.from_env(
                {
                    "BIAS_DETECTION_BACKEND": "llm-judge",
                    "SAFETY_GUARD_ENDPOINT": url,
                    "BIAS_JUDGE_MODEL": "llama3.2:1b",
                    "BIAS_JUDGE_API_KEY": "sk-test",
                }
            )
        )
        async with client_for(service.app) as client:
            await client.post("/v1/bias", json={"text": ["one", "two"]})
    assert [request["model"] for request in judge.requests] == ["llama3.2:1b", "llama3.2:1b"]
    assert judge.headers[0]["authorization"] == "Bearer sk-test"


async def test_a_judge_that_is_down_is_a_502_naming_it():
    async with client_for(judged_by(unused_url()).app) as client:
        answer = await client.post("/v1/bias", json={"text": "text"})
    assert answer.status_code == 502
    assert answer.json()["node"] == "bias-judge"


async def test_a_judge_answering_an_error_or_no_verdict_is_a_502_naming_it():
    async with serve(FakeJudge(status=500)) as failing, serve(FakeJudge(answer="Let me think about it.")) as vague:
        async with client_for(judged_by(failing).app) as client:
            error = await client.post("/v1/bias", json={"text": "text"})
        async with client_for(judged_by(vague).app) as client:
            unclear = await client.post("/v1/bias", json={"text": "text"})
    assert error.status_code == 502 and error.json()["node"] == "bias-judge"
    assert error.json()["upstream_status"] == 500
    assert unclear.status_code == 502 and unclear.json()["node"] == "bias-judge"
    assert "Let me think" in unclear.json()["message"]


async def test_a_slow_judge_is_a_504_naming_it():
    async with serve(FakeJudge(delay=2.0)) as url, client_for(judged_by(url, BIAS_JUDGE_TIMEOUT="0.2").app) as client:
        answer = await client.post("/v1/bias", json={"text": "text"})
    assert answer.status_code == 504
    assert answer.json()["node"] == "bias-judge"
