"""The ChatQnA example, unmodified OPEA code, run end to end with `python -m megaservice.compat` over real sockets."""

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anyio
import pytest

from megaservice.testing import FakeEmbedding, FakeGuardrail, FakeLLM, FakeReranker, FakeRetriever, serve

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chatqna.py"
QUESTION = {"messages": [{"role": "user", "content": "What does a reranker do?"}]}


@pytest.fixture
async def chatqna() -> AsyncIterator[tuple[str, FakeLLM]]:
    llm = FakeLLM(token_delay=0.01)
    fakes = {
        "GUARDRAIL_SERVICE": FakeGuardrail(banned=["stupid"]),
        "EMBEDDING_SERVER": FakeEmbedding(dim=16),
        "RETRIEVER_SERVICE": FakeRetriever(),
        "RERANK_SERVER": FakeReranker(),
        "LLM_SERVER": llm,
    }
    async with contextlib.AsyncExitStack() as stack:
        env = dict(os.environ)
        for prefix, fake in fakes.items():
            base = await stack.enter_async_context(serve(fake))
            env[f"{prefix}_HOST_IP"], env[f"{prefix}_PORT"] = base.removeprefix("http://").split(":")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env["MEGA_SERVICE_PORT"] = str(port)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "megaservice.compat", str(EXAMPLE), env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            with anyio.fail_after(30):
                async with aiohttp.ClientSession() as session:
                    while True:
                        assert process.returncode is None, "the example exited"
                        with contextlib.suppress(aiohttp.ClientError):
                            async with session.get(url + "/v1/ready") as response:
                                if response.status == 200:
                                    break
                        await asyncio.sleep(0.1)
            yield url, llm
        finally:
            process.terminate()
            await process.wait()


async def test_chatqna_streams_opea_frames_grounded_in_the_reranked_document(chatqna):
    url, llm = chatqna
    async with aiohttp.ClientSession() as session, session.post(url + "/v1/chatqna", json=QUESTION) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [line.decode().rstrip("\n") async for line in response.content if line.strip()]
    assert frames[-1] == "data: [DONE]"
    assert all(frame.startswith(("data: b'", 'data: b"')) for frame in frames[:-1])
    prompt = llm.requests[-1]["messages"][0]["content"]
    assert "A reranker scores each retrieved passage" in prompt.split("Search results:")[1].split("###")[0]
    assert llm.requests[-1]["model"] == "meta-llama/Meta-Llama-3-8B-Instruct"


async def test_chatqna_answers_without_streaming(chatqna):
    url, _ = chatqna
    body = {**QUESTION, "stream": False}
    async with aiohttp.ClientSession() as session, session.post(url + "/v1/chatqna", json=body) as response:
        answer = await response.json()
    assert response.status == 200
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"].startswith(" Based on the retrieved documents: A reranker")


async def test_chatqna_guardrail_refusal_is_still_a_stream(chatqna):
    url, llm = chatqna
    calls = len(llm.requests)
    body = {"messages": [{"role": "user", "content": "a stupid question"}]}
    async with aiohttp.ClientSession() as session, session.post(url + "/v1/chatqna", json=body) as response:
        text = await response.text()
    assert text == f"data: b'{FakeGuardrail.REFUSAL}'\n\ndata: [DONE]\n\n"
    assert len(llm.requests) == calls  # the LLM was never called


async def test_chatqna_rejects_a_request_without_messages(chatqna):
    url, _ = chatqna
    async with aiohttp.ClientSession() as session, session.post(url + "/v1/chatqna", json={"stream": False}) as r:
        assert r.status >= 400
