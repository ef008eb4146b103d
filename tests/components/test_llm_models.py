"""The model list: `GET /v1/models`, `/v1/ready` (503 until the model server answers it), the cache, https."""

import asyncio

import anyio
import orjson
import pytest

from megaservice.client import UpstreamClient
from megaservice.components.llm import LLMSettings, create_service
from megaservice.components.llm.models import ModelList
from megaservice.components.llm.openai_compat import OpenAIBackend
from megaservice.exceptions import UpstreamConnectError, UpstreamStatusError
from megaservice.testing import FakeLLM, client_for, serve, unused_url

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]


async def test_get_v1_models_is_the_model_servers_list():
    llm = FakeLLM(models=["qwen", "llama"])
    async with serve(llm) as url, client_for(create_service(LLMSettings(endpoint=url)).app) as client:
        answer = await client.get("/v1/models")
    assert answer.status_code == 200
    assert [m["id"] for m in answer.json()["data"]] == ["qwen", "llama"]


async def test_get_v1_models_is_a_502_naming_the_model_server_when_it_is_down():
    async with client_for(create_service(LLMSettings(endpoint=unused_url())).app) as client:
        answer = await client.get("/v1/models")
    assert answer.status_code == 502
    assert answer.json()["node"] == "model-server"


async def test_ready_is_503_naming_the_model_server_until_it_answers_its_model_list():
    async with client_for(create_service(LLMSettings(endpoint=unused_url())).app) as client:
        down = await client.get("/v1/ready")
    assert down.status_code == 503
    assert "model-server" in down.json()["reason"]
    assert "UpstreamConnectError" in down.json()["reason"]
    llm = FakeLLM()
    async with serve(llm) as url, client_for(create_service(LLMSettings(endpoint=url)).app) as client:
        up = await client.get("/v1/ready")
    assert up.status_code == 200
    assert llm.model_lists == 1


async def test_ready_turns_200_once_the_model_server_recovers_without_being_hammered_meanwhile():
    llm = FakeLLM(status=503)
    async with serve(llm) as url, client_for(create_service(LLMSettings(endpoint=url)).app) as client:
        assert (await client.get("/v1/ready")).status_code == 503
        llm.status = 200
        with anyio.fail_after(5):
            probes = 1
            while (await client.get("/v1/ready")).status_code == 503:
                probes += 1
                await asyncio.sleep(0.01)
    assert probes > 20  # probed every 10 ms while the failure was kept (1 s) ...
    assert llm.model_lists == 2  # ... and the model server was asked twice: once failing, once answering


async def test_many_probes_ask_the_model_server_once():
    llm = FakeLLM(delay=0.05)
    async with serve(llm) as url, client_for(create_service(LLMSettings(endpoint=url)).app) as client:
        answers = await asyncio.gather(*(client.get("/v1/ready") for _ in range(20)))
        answers += [await client.get("/v1/ready") for _ in range(5)]
        listed = await client.get("/v1/models")
    assert {a.status_code for a in answers} == {200}
    assert listed.status_code == 200
    assert llm.model_lists == 1


async def test_the_model_list_is_fetched_again_once_stale_and_a_failure_is_kept_for_a_while():
    now = [0.0]
    answers: list[bytes | Exception] = [b"one", UpstreamConnectError("down", node="m", url="u"), b"two"]
    calls = []

    async def fetch() -> bytes:
        calls.append(now[0])
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    models = ModelList(fetch, fresh_for=30, retry_after=1, clock=lambda: now[0])
    assert await models.get() == b"one"
    now[0] = 29.9
    assert await models.get() == b"one"
    now[0] = 30.0
    with pytest.raises(UpstreamConnectError):
        await models.get()
    now[0] = 30.9
    with pytest.raises(UpstreamConnectError):  # the failure, kept: the server is not asked again
        await models.get()
    now[0] = 31.0
    assert await models.get() == b"two"
    assert calls == [0.0, 30.0, 31.0]


async def test_a_probe_that_gives_up_does_not_cancel_the_fetch_the_others_wait_for():
    gate = asyncio.Event()

    async def fetch() -> bytes:
        await gate.wait()
        return b"list"

    models = ModelList(fetch)
    impatient = asyncio.ensure_future(models.get())
    patient = asyncio.ensure_future(models.get())
    await asyncio.sleep(0)
    impatient.cancel()
    gate.set()
    assert await patient == b"list"
    await models.aclose()


async def test_the_model_list_carries_the_key_and_a_refusal_is_a_status_error():
    llm = FakeLLM(status=401)
    async with serve(llm) as url:
        backend = OpenAIBackend(LLMSettings(endpoint=url, api_key="sk-1"))
        with pytest.raises(UpstreamStatusError) as refused:
            await backend.models()
    assert refused.value.upstream_status == 401
    assert llm.model_lists == 1


async def test_an_https_model_server_streams_and_lists_its_models(tls):
    llm = FakeLLM(tokens=["a", "b"], models=["m"])
    async with serve(llm, ssl_certfile=tls.pem) as url:
        client = UpstreamClient(ssl_context=tls.client)
        settings = LLMSettings(endpoint=url, model_id="m")
        backend = OpenAIBackend(settings, client=client)
        async with client_for(create_service(settings, backend).app) as service:
            ready = await service.get("/v1/ready")
            listed = await service.get("/v1/models")
            answer = await service.post("/v1/chat/completions", json={"messages": "hi", "stream": True})
        await client.aclose()
    assert url.startswith("https://")
    assert ready.status_code == 200
    assert orjson.loads(listed.content)["data"][0]["id"] == "m"
    assert answer.text.count('"content"') == 2
    assert answer.text.endswith("data: [DONE]\n\n")
