"""CPU per request of a megaservice's own request path, with no I/O: the app, a 5-node chain, the client.

The megaservice's app is called as an ASGI app (no server, no socket); its nodes answer at once
from a transport that returns a canned answer. What is measured is the process's CPU time (all
threads: with tracing on, the exporter's thread too) per request, after a warm-up:

    python benchmarks/request_path.py --requests 5000
    TELEMETRY_ENDPOINT=http://127.0.0.1:4318/v1/traces python benchmarks/request_path.py   # tracing on
    PYTHONPATH=/path/to/other/checkout python benchmarks/request_path.py                  # another build

With `--calls` it prints the Python function calls per request instead (cProfile's count: the same
on any machine, so two builds compare exactly).
"""

import argparse
import asyncio
import cProfile
import logging
import pstats
import time
from typing import Any

import orjson
from starlette.requests import Request

from megaservice import LLMParams, MicroService, ServiceOrchestrator, ServiceRoleType, ServiceType
from megaservice.client import UpstreamClient
from megaservice.settings import Settings

try:
    from megaservice import tracing
except ImportError:  # a build from before tracing
    tracing = None  # type: ignore[assignment]

ANSWER = orjson.dumps({"text": "x", "retrieved_docs": [{"text": "d"}], "choices": [{"message": {"content": "hi"}}]})
BODY = b'{"q": "hello"}'
SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/ask",
    "raw_path": b"/ask",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"t"), (b"content-type", b"application/json"), (b"content-length", b"14")],
    "client": ("127.0.0.1", 1),
    "server": ("t", 80),
}


class Canned:
    """A transport whose nodes answer `ANSWER` at once."""

    async def post(self, *args: Any) -> tuple[str, bytes]:
        return "application/json", ANSWER

    async def aclose(self) -> None:
        pass


def build() -> Any:
    client = UpstreamClient(mounts={"http://node": Canned()})  # type: ignore[dict-item]
    orchestrator = ServiceOrchestrator(client=client)
    previous = None
    for i in range(5):
        node = MicroService(
            f"n{i}", host="node", port=80, endpoint="/x", use_remote_service=True, service_type=ServiceType.RETRIEVER
        )
        orchestrator.add(node)
        if previous is not None:
            orchestrator.flow_to(previous, node)
        previous = node
    service = MicroService("ask", service_role=ServiceRoleType.MEGASERVICE, port=0)

    async def ask(request: Request) -> dict[str, Any]:
        body = await request.json()
        await orchestrator.schedule({"text": body["q"]}, llm_parameters=LLMParams(stream=False))
        return {"ok": True}

    service.add_route("/ask", ask, methods=["POST"])
    return service.app


async def request(app: Any) -> None:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    statuses = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app({**SCOPE, "state": {}}, receive, send)
    assert statuses == [200], statuses


async def main(args: argparse.Namespace) -> None:
    app = build()
    traced = tracing is not None and tracing.start(Settings.from_env().tracing, "request-path")  # as a lifespan does
    for _ in range(500):
        await request(app)
    if args.calls:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.requests):
            await request(app)
        profile.disable()
        print(f"{pstats.Stats(profile).total_calls / args.requests:.1f} calls/request")  # type: ignore[attr-defined]
    else:
        started = time.process_time()
        for _ in range(args.requests):
            await request(app)
        if traced:
            tracing.stop()  # the export of the last batch counts too
        print(f"{(time.process_time() - started) / args.requests * 1e6:.1f} us CPU/request")
    if traced and args.calls:
        tracing.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--calls", action="store_true", help="count Python calls per request instead")
    logging.disable(logging.CRITICAL)  # the access log line is not what is measured here
    asyncio.run(main(parser.parse_args()))
