"""Run the ChatQnA example megaservice end to end on this machine and ask it a question.

Starts the fake backends from `megaservice.testing` on loopback ports (guardrail, TEI-shaped
embedding and rerank, retriever, an OpenAI-compatible LLM), starts `examples/chatqna.py` unchanged
with `python -m megaservice.compat` in its own process, then asks one question twice: streamed
(printing ChatQnA's `data: b'...'` frames as they arrive) and not streamed.

    python examples/demo.py ["your question"]
"""

import asyncio
import contextlib
import os
import socket
import sys
import time
from pathlib import Path

import aiohttp

from megaservice.testing import FakeEmbedding, FakeGuardrail, FakeLLM, FakeReranker, FakeRetriever, serve

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(url: str, process: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise SystemExit(f"the megaservice exited with code {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/v1/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise SystemExit("the megaservice did not become ready")


async def ask(url: str, question: str) -> None:
    body = {"messages": [{"role": "user", "content": question}], "stream": True}
    async with aiohttp.ClientSession() as session:
        print(f"> {question}\n< streamed:")
        async with session.post(url + "/v1/chatqna", json=body) as response:
            response.raise_for_status()
            async for line in response.content:
                if line.strip():
                    print("  " + line.decode().rstrip())
        body["stream"] = False
        async with session.post(url + "/v1/chatqna", json=body) as response:
            response.raise_for_status()
            answer = await response.json()
        print("< not streamed: " + answer["choices"][0]["message"]["content"])


async def main(question: str) -> None:
    fakes = {
        "GUARDRAIL_SERVICE": FakeGuardrail(),
        "EMBEDDING_SERVER": FakeEmbedding(dim=16),
        "RETRIEVER_SERVICE": FakeRetriever(),
        "RERANK_SERVER": FakeReranker(),
        "LLM_SERVER": FakeLLM(token_delay=0.05),
    }
    async with contextlib.AsyncExitStack() as stack:
        env = dict(os.environ)
        for prefix, fake in fakes.items():
            base = await stack.enter_async_context(serve(fake))
            env[f"{prefix}_HOST_IP"], env[f"{prefix}_PORT"] = base.removeprefix("http://").split(":")
        port = free_port()
        env["MEGA_SERVICE_PORT"] = str(port)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "megaservice.compat", str(HERE / "chatqna.py"), env=env
        )
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_ready(url, process)
            await ask(url, question)
        finally:
            process.terminate()
            await process.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "What does a reranker do?"))
