"""Schemathesis over every service's OpenAPI schema: generated inputs, valid and not, never get a 5xx.

The services run as users run them, on real sockets: the ChatQnA example (unmodified OPEA code, in
its own process through `python -m megaservice.compat`, against the fakes), and a microservice
with typed routes (pydantic bodies validated by FastAPI, and a handler that validates itself).
"""

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import Request
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from megaservice import ChatCompletionRequest, LLMParamsDoc, MicroService, TextDoc
from megaservice.testing import FakeEmbedding, FakeGuardrail, FakeLLM, FakeReranker, FakeRetriever, serve

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "chatqna.py"
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)


class Loop:
    """An event loop in a thread, serving ASGI apps on loopback while the (sync) fuzzer runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stack = contextlib.AsyncExitStack()

    def serve(self, app: Any) -> str:
        return asyncio.run_coroutine_threadsafe(self.stack.enter_async_context(serve(app)), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.stack.aclose(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    background = Loop()
    yield background
    background.close()


@pytest.fixture(scope="module")
def chatqna_schema(loop: Loop) -> Iterator[Any]:
    fakes = {
        "GUARDRAIL_SERVICE": FakeGuardrail(record=False),
        "EMBEDDING_SERVER": FakeEmbedding(dim=16, record=False),
        "RETRIEVER_SERVICE": FakeRetriever(record=False),
        "RERANK_SERVER": FakeReranker(record=False),
        "LLM_SERVER": FakeLLM(record=False),
    }
    env = dict(os.environ)
    for prefix, fake in fakes.items():
        env[f"{prefix}_HOST_IP"], env[f"{prefix}_PORT"] = loop.serve(fake).removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env["MEGA_SERVICE_PORT"] = str(port)
    command = [sys.executable, "-m", "megaservice.compat", str(EXAMPLE)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        schema = schemathesis.openapi.from_url(url + "/openapi.json", wait_for_schema=30)
        assert process.poll() is None, "the example exited"
        yield schema
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=10)
    assert b"Traceback" not in errors, errors.decode(errors="replace")[-3000:]


def typed_service() -> MicroService:
    service = MicroService("typed", port=0)

    async def guard(doc: TextDoc) -> TextDoc:
        text = doc.text if isinstance(doc.text, str) else " ".join(doc.text or [])
        return TextDoc(text=text.strip())

    async def llm(doc: LLMParamsDoc) -> dict[str, Any]:
        return {"text": doc.query[: doc.max_new_tokens]}

    async def chat(request: Request) -> dict[str, Any]:
        chat_request = ChatCompletionRequest.model_validate(await request.json())
        return {"messages": len(chat_request.messages)}

    service.add_route("/v1/guardrails", guard, methods=["POST"])
    service.add_route("/v1/llm", llm, methods=["POST"])
    service.add_route("/v1/chat", chat, methods=["POST"])
    return service


@pytest.fixture(scope="module")
def typed_schema(loop: Loop) -> Any:
    url = loop.serve(typed_service().app)
    return schemathesis.openapi.from_url(url + "/openapi.json")


def fuzz(schema: Any) -> int:
    """Send generated requests (valid and not) to every operation of `schema`; fail on a 5xx. Return the operations."""
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:

        @given(case=operation.as_strategy())
        @FUZZ
        def call(case: Any) -> None:
            case.call_and_validate(checks=[not_a_server_error], timeout=30)

        call()
    return len(operations)


def test_the_chatqna_megaservice_never_answers_5xx(chatqna_schema: Any) -> None:
    assert fuzz(chatqna_schema) >= 6  # /v1/chatqna, the health routes, statistics, metrics, ready


def test_a_typed_microservice_never_answers_5xx(typed_schema: Any) -> None:
    assert fuzz(typed_schema) >= 8
