"""What the megaservice of a pipeline costs per request, with nodes that answer at once.

    python benchmarks/gateway.py --requests 2000 --concurrency 1 8

The five nodes of ChatQnA's flow (guardrail, embedding, retriever, reranker, llm) are instant
fakes in one process (raw ASGI, no work); `create_gateway()` runs in a second process, over a
pipeline file pointing at them; this process is the client (aiohttp). So what is measured is the
gateway: five node calls, the hooks, reading the request, writing the answer with its sources.

Reported per mode (non-streamed; streamed, 32 tokens) and concurrency: latency p50/p90 as the client
sees it, requests/s, and the gateway process's CPU time per request (from /proc: the one number a
busy shared machine does not blur much).
"""

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

TOKENS = [f" tok{i}" for i in range(32)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _embedding_app() -> Any:
    """An instant embedding service: OPEA's TextDoc → EmbedDoc."""
    vector = [0.1] * 384

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        text = orjson.loads(body).get("text", "")
        answer = orjson.dumps({"text": text, "embedding": vector})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})

    return app


def _serve_nodes(ports: dict[str, int]) -> None:
    import uvicorn

    from megaservice.testing import FakeGuardrail, FakeLLM, KnowledgeBase

    kb = KnowledgeBase(documents={"doc.md": "The answer to the benchmark question is forty-two."})
    apps = {
        "guardrail": FakeGuardrail(record=False),
        "embedding": _embedding_app(),
        "retriever": kb.retriever,
        "reranker": kb.reranker,
        "llm": FakeLLM(TOKENS, record=False),
    }

    async def main() -> None:
        servers = [
            uvicorn.Server(uvicorn.Config(apps[name], port=port, log_level="warning", access_log=False))
            for name, port in ports.items()
        ]
        await asyncio.gather(*(server.serve() for server in servers))

    asyncio.run(main())


def _serve_gateway(pipeline_file: str, port: int) -> None:
    from megaservice.gateway import create_gateway
    from megaservice.pipeline import load_pipeline
    from megaservice.settings import Settings

    settings = Settings.from_env({"MEGASERVICE_ACCESS_LOG": "0"})
    create_gateway(load_pipeline(pipeline_file, environ={}), settings, port=port).start()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _wait(url: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for _ in range(500):
            try:
                async with session.get(url) as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def _run(url: str, stream: bool, requests: int, concurrency: int) -> list[float]:
    import aiohttp

    body = orjson.dumps({"messages": "What is the answer to the benchmark question?", "stream": stream})
    latencies: list[float] = []
    left = requests

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            async with session.post(url, data=body, headers={"content-type": "application/json"}) as answer:
                data = await answer.read()
                assert answer.status == 200, data[:300]
                assert b"sources" in data
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    ports = {name: _free_port() for name in ("guardrail", "embedding", "retriever", "reranker", "llm")}
    gateway_port = _free_port()
    lines = ["name: bench", "services:"]
    lines += [f"  {name}: {{url: 'http://127.0.0.1:{port}', role: {name}}}" for name, port in ports.items()]
    lines += ["megaservice:", "  flow: [guardrail, embedding, retriever, reranker, llm]"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
    context = multiprocessing.get_context("spawn")
    nodes = context.Process(target=_serve_nodes, args=(ports,), daemon=True)
    gateway = context.Process(target=_serve_gateway, args=(handle.name, gateway_port), daemon=True)
    nodes.start()
    gateway.start()
    try:
        base = f"http://127.0.0.1:{gateway_port}"
        asyncio.run(_wait(f"{base}/v1/health_check"))
        url = f"{base}/v1/chat/completions"
        asyncio.run(_run(url, False, 200, 4))  # warm-up
        print(f"{'mode':<11} {'c':>3} {'p50 ms':>8} {'p90 ms':>8} {'req/s':>8} {'gateway CPU ms/req':>19}")
        for stream in (False, True):
            for concurrency in args.concurrency:
                assert gateway.pid is not None
                cpu = _cpu_seconds(gateway.pid)
                started = time.perf_counter()
                latencies = asyncio.run(_run(url, stream, args.requests, concurrency))
                elapsed = time.perf_counter() - started
                cpu = _cpu_seconds(gateway.pid) - cpu
                cuts = statistics.quantiles(latencies, n=10)
                print(
                    f"{'streamed' if stream else 'whole':<11} {concurrency:>3} {cuts[4] * 1000:>8.2f} "
                    f"{cuts[8] * 1000:>8.2f} {len(latencies) / elapsed:>8.0f} {cpu / len(latencies) * 1000:>19.2f}"
                )
    finally:
        gateway.terminate()
        nodes.terminate()
        gateway.join(5)
        nodes.join(5)
        Path(handle.name).unlink()


if __name__ == "__main__":
    main()
