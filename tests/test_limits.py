"""`Limits` (what a service accepts: its fields, the environment, keys) and `InputLimits` on the wire."""

import pytest
from fastapi import Request

from megaservice import Limits, MicroService
from megaservice.limits import PROBE_PATHS
from megaservice.testing import client_for

pytestmark = pytest.mark.anyio


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MEGASERVICE_API_KEYS", "k1, k2")
    monkeypatch.setenv("MEGASERVICE_MAX_BODY_BYTES", "10")
    monkeypatch.setenv("MEGASERVICE_MAX_INFLIGHT", "0")
    monkeypatch.setenv("MEGASERVICE_PUBLIC_PATHS", "/v1/health_check,/v1/statistics")
    limits = Limits.from_env()
    assert limits.api_keys == ("k1", "k2")
    assert limits.max_body_bytes == 10
    assert limits.max_inflight is None
    assert limits.public_paths == frozenset({"/v1/health_check", "/v1/statistics"})


def test_the_probes_are_the_public_paths_by_default():
    assert Limits().public_paths == PROBE_PATHS
    assert sorted(PROBE_PATHS) == ["/health", "/metrics", "/v1/health", "/v1/health_check", "/v1/ready"]


@pytest.mark.parametrize(
    ("credential", "accepted"),
    [
        (b"Bearer s3cret", True),
        (b"bearer s3cret ", True),
        (b"other", True),
        (b"Bearer other", True),
        (b"s3cre", False),
        (b"s3cret2", False),
        (b"Basic s3cret", False),
        (b"", False),
        (None, False),
    ],
)
def test_a_key_is_accepted_bare_or_as_a_bearer_token(credential, accepted):
    assert Limits(api_keys=("s3cret", "other")).authorized(credential) is accepted


@pytest.fixture
def input_limits():
    from megaservice.protocol.limits import set_input_limits

    previous = set_input_limits(max_messages=2, max_tokens=100)
    yield
    set_input_limits(previous)


@pytest.mark.usefixtures("input_limits")
async def test_too_many_messages_or_tokens_are_refused_with_a_4xx_naming_the_limit():
    from megaservice import ChatCompletionRequest, LLMParamsDoc

    svc = MicroService("chat", port=0)

    async def parse_itself(request: Request) -> dict[str, object]:  # the OPEA way: validate in the handler
        chat = ChatCompletionRequest.model_validate(await request.json())
        return {"messages": len(chat.messages)}

    async def typed(doc: LLMParamsDoc) -> dict[str, object]:  # a pydantic body: FastAPI validates
        return {"max_new_tokens": doc.max_new_tokens}

    svc.add_route("/v1/chat", parse_itself, methods=["POST"])
    svc.add_route("/v1/llm", typed, methods=["POST"])
    two = [{"role": "user", "content": "hi"}] * 2
    async with client_for(svc.app) as client:
        ok = await client.post("/v1/chat", json={"messages": two})
        many = await client.post("/v1/chat", json={"messages": two * 2})
        greedy = await client.post("/v1/chat", json={"messages": two, "max_tokens": 101})
        typed_ok = await client.post("/v1/llm", json={"query": "q", "max_new_tokens": 100})
        typed_greedy = await client.post("/v1/llm", json={"query": "q", "max_new_tokens": 5000})
    assert (ok.status_code, ok.json()) == (200, {"messages": 2})
    assert many.status_code == greedy.status_code == typed_greedy.status_code == 422
    assert "4 messages; at most 2 are accepted" in many.text
    assert "asks for 101 tokens; at most 100 are accepted" in greedy.text
    assert "asks for 5000 tokens" in typed_greedy.text
    assert typed_ok.status_code == 200


def test_input_limits_come_from_the_environment(monkeypatch):
    from megaservice.protocol.limits import InputLimits

    monkeypatch.setenv("MEGASERVICE_MAX_MESSAGES", "0")
    monkeypatch.setenv("MEGASERVICE_MAX_TOKENS", "4096")
    assert InputLimits.from_env() == InputLimits(max_messages=None, max_tokens=4096)
    assert InputLimits() == InputLimits(max_messages=1000, max_tokens=32768)
