import asyncio

import httpx
import pytest
from fastapi import Request

from megaservice import InputError, Limits, MicroService
from megaservice.testing import client_for, serve

pytestmark = pytest.mark.anyio


def service(**kwargs) -> MicroService:
    svc = MicroService("guarded", port=0, **kwargs)

    async def echo(request: Request) -> dict[str, object]:
        return {"got": len(await request.body())}

    svc.add_route("/v1/echo", echo, methods=["POST"])
    return svc


async def test_without_keys_nothing_is_asked():
    async with client_for(service().app) as client:
        assert (await client.post("/v1/echo", content=b"{}")).status_code == 200


async def test_a_key_is_required_and_checked():
    async with client_for(service(auth_keys=["s3cret", "other"]).app) as client:
        missing = await client.post("/v1/echo", content=b"{}")
        wrong = await client.post("/v1/echo", content=b"{}", headers={"Authorization": "Bearer nope"})
        bearer = await client.post("/v1/echo", content=b"{}", headers={"Authorization": "Bearer s3cret"})
        header = await client.post("/v1/echo", content=b"{}", headers={"X-API-Key": "other"})
        probe = await client.get("/v1/health_check")
        metrics = await client.get("/metrics")
    assert missing.status_code == wrong.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json() == {"detail": "missing or invalid API key"}
    assert bearer.status_code == header.status_code == 200
    assert probe.status_code == metrics.status_code == 200  # probes stay public


async def test_keys_and_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MEGASERVICE_API_KEYS", "k1, k2")
    monkeypatch.setenv("MEGASERVICE_MAX_BODY_BYTES", "10")
    monkeypatch.setenv("MEGASERVICE_MAX_INFLIGHT", "0")
    limits = Limits.from_env()
    assert limits.api_keys == ("k1", "k2")
    assert limits.max_body_bytes == 10
    assert limits.max_inflight is None
    async with client_for(service().app) as client:
        ok = await client.post("/v1/echo", content=b"{}", headers={"X-API-Key": "k2"})
        big = await client.post("/v1/echo", content=b"x" * 11, headers={"X-API-Key": "k2"})
    assert ok.status_code == 200
    assert big.status_code == 413


async def test_a_body_over_the_limit_is_refused_with_its_size():
    async with client_for(service(max_body_bytes=100).app) as client:
        fits = await client.post("/v1/echo", content=b"x" * 100)
        declared = await client.post("/v1/echo", content=b"x" * 101)

        async def chunks():
            for _ in range(10):
                yield b"x" * 50

        streamed = await client.post("/v1/echo", content=chunks())  # no Content-Length: counted as it arrives
    assert fits.json() == {"got": 100}
    assert declared.status_code == 413
    assert declared.json() == {"detail": "request body larger than 100 bytes"}
    assert streamed.status_code == 413


async def test_beyond_max_inflight_the_answer_is_503_with_retry_after():
    svc = MicroService("busy", port=0, max_inflight=2)
    release = asyncio.Event()

    async def slow(request: Request) -> dict[str, object]:
        await release.wait()
        return {"ok": True}

    svc.add_route("/v1/slow", slow, methods=["POST"])
    async with serve(svc.app) as url, httpx.AsyncClient(base_url=url) as client:
        first = [asyncio.create_task(client.post("/v1/slow", content=b"{}")) for _ in range(2)]
        while svc.app.inflight < 2:  # type: ignore[attr-defined]
            await asyncio.sleep(0.005)
        refused = await client.post("/v1/slow", content=b"{}")
        health = await client.get("/v1/health_check")  # probes are not counted
        release.set()
        done = await asyncio.gather(*first)
        after = await client.post("/v1/slow", content=b"{}")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "busy" in refused.json()["detail"]
    assert health.status_code == 200
    assert [r.status_code for r in done] == [200, 200]
    assert after.status_code == 200
    assert svc.app.inflight == 0  # type: ignore[attr-defined]


async def test_input_error_becomes_its_status_with_a_detail():
    svc = MicroService("strict", port=0)

    async def picky(request: Request) -> dict[str, object]:
        raise InputError("field 'x' must be positive", status_code=422)

    svc.add_route("/v1/picky", picky, methods=["POST"])
    async with client_for(svc.app) as client:
        answer = await client.post("/v1/picky", content=b"{}")
    assert answer.status_code == 422
    assert answer.json() == {"detail": "field 'x' must be positive"}


async def test_a_body_that_is_not_json_is_a_400():
    svc = MicroService("json", port=0)

    async def parse(request: Request) -> dict[str, object]:
        return await request.json()

    svc.add_route("/v1/parse", parse, methods=["POST"])
    async with client_for(svc.app) as client:
        answer = await client.post("/v1/parse", content=b"{not json")
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("request body is not valid JSON")


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
