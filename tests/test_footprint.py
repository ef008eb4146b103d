"""What a megaservice process loads: only what its pipeline uses (the referee's RSS budget is 60 MiB).

A fresh interpreter serves a megaservice as `start()` does (a route, plain-http nodes, a stream
and a plain answer, the probes), then reports what it imported and which documents it built.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

GATEWAY = textwrap.dedent(
    """
    import asyncio, json, sys, urllib.parse

    from megaservice import ServiceOrchestrator, ServiceType
    from megaservice.protocol import BaseDoc, docs
    from megaservice.testing import FaultyServer
    from tests.helpers import gateway, node

    async def ask(url, method, path, payload=None):
        parts = urllib.parse.urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        body = json.dumps(payload).encode() if payload is not None else b""
        head = f"{method} {path} HTTP/1.1\\r\\nhost: x\\r\\nconnection: close\\r\\ncontent-length: {len(body)}\\r\\n"
        writer.write(head.encode() + b"content-type: application/json\\r\\n\\r\\n" + body)
        answer = await reader.read()
        writer.close()
        return answer

    async def main():
        async with FaultyServer() as echo, FaultyServer() as llm:  # they answer correctly: a JSON echo, an SSE stream
            pipeline = ServiceOrchestrator()
            first = node("echo", echo.url)
            last = node("llm", llm.url, ServiceType.LLM, endpoint="/v1/chat/completions")
            pipeline.add(first).add(last).flow_to(first, last)
            service = gateway(pipeline)
            serving = asyncio.ensure_future(service.serve())  # as `start()` serves, in this loop
            while not service.started:
                await asyncio.sleep(0.01)
            url = f"http://127.0.0.1:{service.bound_port}"
            try:
                answers = [
                    await ask(url, "POST", "/v1/chat", {"text": "q", "stream": False}),
                    await ask(url, "POST", "/v1/chat", {"text": "q", "stream": True}),
                    await ask(url, "GET", "/v1/health_check"),
                    await ask(url, "GET", "/v1/statistics"),
                ]
            finally:
                service.stop()
                await serving
        built = sorted(
            name for name, value in vars(docs).items()
            if isinstance(value, type) and issubclass(value, BaseDoc) and value.__pydantic_complete__
        )
        print(json.dumps({
            "statuses": [a.split(b"\\r\\n", 1)[0].decode() for a in answers],
            "streamed": b"data: [DONE]" in answers[1],
            "modules": sorted(m for m in ("aiohttp", "pydantic.v1", "websockets") if m in sys.modules),
            "built": built,
        }))

    asyncio.run(main())
    """
)


def test_a_plain_http_megaservice_loads_only_what_it_uses():
    """Out of a plain-http megaservice: aiohttp (about 9 MiB, for https nodes), pydantic.v1 (0.9 MiB,
    FastAPI's check of a response model), a websockets implementation, and unused documents' validators."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", GATEWAY], cwd=root, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])  # after the access log
    assert report["statuses"] == ["HTTP/1.1 200 OK"] * 4
    assert report["streamed"]
    assert report["modules"] == []
    assert report["built"] == ["LLMParams"]
