"""The model server's routes and backend around a scripted model: loading, readiness, model names, failures."""

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from megaservice.components.llm_server import LLMServerSettings, create_service
from megaservice.components.llm_server.llamacpp import LlamaCppBackend
from megaservice.components.llm_server.model import Outcome, Prompt
from megaservice.components.llm_server.request import ChatRequest
from megaservice.testing import serve

pytestmark = pytest.mark.anyio

ASK = {"messages": [{"role": "user", "content": "hi"}]}


class ScriptedModel:
    """Stands in for `LlamaModel`: loads when `gate` opens (or fails), answers `pieces` (then raises `failure`)."""

    def __init__(self, pieces: list[str], *, failure: Exception | None = None, load_error: Exception | None = None):
        self.path = Path("scripted.gguf")
        self.context = 64
        self.threads = 1
        self.parallel = 1
        self.metadata: dict[str, str] = {}
        self.pieces = pieces
        self.failure = failure
        self.load_error = load_error
        self.gate = threading.Event()
        self.loaded = False

    def load(self) -> None:
        self.gate.wait(10)
        if self.load_error is not None:
            raise self.load_error
        self.loaded = True

    def prompt(self, chat: ChatRequest) -> Prompt:
        return Prompt([1, 2, 3], chat.max_tokens or 60, chat.stop)

    def generate(
        self, prompt: Prompt, chat: ChatRequest, emit: Callable[[str], None], stopped: threading.Event
    ) -> Outcome:
        for piece in self.pieces:
            emit(piece)
        if self.failure is not None:
            raise self.failure
        return Outcome(len(self.pieces), "stop")

    def close(self) -> None:
        self.loaded = False


def settings(**changes: Any) -> LLMServerSettings:
    return LLMServerSettings(host="127.0.0.1", port=0, **changes)


def service_over(model: ScriptedModel, **changes: Any) -> Any:
    backend = LlamaCppBackend(settings(**changes), model=model)  # type: ignore[arg-type]
    return create_service(settings(**changes), backend).app


async def test_it_is_not_ready_and_refuses_chats_until_the_model_is_loaded():
    model = ScriptedModel(["Hel", "lo"])
    async with serve(service_over(model)) as url, httpx.AsyncClient(base_url=url) as client:
        loading = await client.get("/v1/ready")
        no_list = await client.get("/v1/models")
        refused = await client.post("/v1/chat/completions", json=ASK)
        model.gate.set()
        with anyio.fail_after(10):
            while (await client.get("/v1/ready")).status_code != 200:
                await anyio.sleep(0.01)
        answered = await client.post("/v1/chat/completions", json=ASK)
    assert loading.status_code == 503
    assert no_list.status_code == 503 and "loading" in no_list.json()["error"]["message"]
    assert refused.status_code == 503 and "not loaded" in refused.json()["error"]["message"]
    assert answered.json()["choices"][0]["message"]["content"] == "Hello"
    assert answered.json()["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


async def test_a_model_that_cannot_load_is_reported_by_the_readiness_probe_and_to_clients():
    model = ScriptedModel([], load_error=ValueError("not a GGUF file"))
    model.gate.set()
    async with serve(service_over(model)) as url, httpx.AsyncClient(base_url=url) as client:
        with anyio.fail_after(10):
            while "not a GGUF" not in (ready := await client.get("/v1/ready")).text:
                await anyio.sleep(0.01)
        refused = await client.post("/v1/chat/completions", json=ASK)
    assert ready.status_code == 503
    assert refused.status_code == 503 and "not a GGUF file" in refused.json()["error"]["message"]


@pytest.mark.parametrize("refuse", [False, True])
async def test_a_request_naming_another_model_is_answered_or_refused_as_configured(refuse):
    model = ScriptedModel(["ok"])
    model.gate.set()
    app = service_over(model, refuse_other_models=refuse, model_name="tiny")
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        with anyio.fail_after(10):
            while (await client.get("/v1/ready")).status_code != 200:
                await anyio.sleep(0.01)
        named = await client.post("/v1/chat/completions", json={**ASK, "model": "tiny"})
        other = await client.post("/v1/chat/completions", json={**ASK, "model": "llama3.2:1b"})
        listed = await client.get("/v1/models")
    assert named.json()["model"] == "tiny"
    assert [m["id"] for m in listed.json()["data"]] == ["tiny"]
    if refuse:
        assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"
    else:
        assert other.status_code == 200 and other.json()["model"] == "tiny"


async def test_a_generation_that_fails_after_the_stream_started_ends_with_an_error_event():
    model = ScriptedModel(["a", "b"], failure=RuntimeError("decode failed"))
    model.gate.set()
    async with serve(service_over(model)) as url, httpx.AsyncClient(base_url=url) as client:
        with anyio.fail_after(10):
            while (await client.get("/v1/ready")).status_code != 200:
                await anyio.sleep(0.01)
        response = await client.post("/v1/chat/completions", json={**ASK, "stream": True})
    events = response.content.split(b"\n\n")
    error = [e for e in events if e.startswith(b"event: error")]
    texts = [orjson.loads(e[6:])["choices"][0]["delta"].get("content") for e in events if e.startswith(b"data: {")]
    assert texts == ["", "a", "b"]
    assert len(error) == 1 and b"decode failed" in error[0]
    assert b"[DONE]" not in response.content
