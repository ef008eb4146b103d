"""A whole ChatQnA pipeline on loopback sockets, its megaservice in front (`create_gateway`).

The nodes are the real LLM and embedding services where that is cheap (the LLM service over a
`FakeLLM`, the embedding service over a `FakeTEI`), and `megaservice.testing`'s `KnowledgeBase`
for dataprep, the retriever and the reranker; the guardrail is a `FakeGuardrail` (refuses
"stupid") unless a test passes the real bias service.
"""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from megaservice.client import close_client
from megaservice.components.embedding import EmbeddingSettings, create_service as embedding_service
from megaservice.components.llm import LLMSettings, create_service as llm_service
from megaservice.gateway import GatewaySettings, create_gateway
from megaservice.microservice import MicroService
from megaservice.pipeline import Pipeline, parse_pipeline
from megaservice.settings import Settings
from megaservice.testing import FakeGuardrail, FakeLLM, FakeTEI, KnowledgeBase, unused_url

FACT = "The Zorblax project keeps its launch code in the blue safe. The launch code of the Zorblax project is 4417."
DOCUMENTS = {
    "zorblax.md": FACT,
    "garden.txt": "Tomatoes need six hours of sun a day. Water them in the morning.",
}
QUESTION = "What is the launch code of the Zorblax project?"
FLOW = ("guardrail", "embedding", "retriever", "reranker", "llm")


@dataclass
class Stack:
    """A running pipeline: the megaservice's URL and the fakes behind it."""

    url: str
    pipeline: Pipeline
    gateway: MicroService
    llm: FakeLLM
    kb: KnowledgeBase
    guardrail: Any
    urls: dict[str, str] = field(default_factory=dict)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30, **kwargs)


def extra(model: Any) -> dict[str, Any]:
    """The fields an openai model has beyond OpenAI's (`sources`, `refused_by`)."""
    return model.model_extra or {}


def content(completion: Any) -> str:
    return completion.choices[0].message.content or ""


def pipeline_yaml(urls: dict[str, str], flow: Sequence[str], *, model: str | None = None, routes=None) -> str:
    roles = {"guardrail": "guardrail", "embedding": "embedding", "retriever": "retriever", "reranker": "reranker"}
    roles["llm"] = "llm"
    lines = ["name: chatqna", "description: Questions about your documents", "services:"]
    for name, url in urls.items():
        role = f", role: {roles[name]}" if name in roles else ""
        lines.append(f"  {name}: {{url: '{url}'{role}}}")
    lines.append("megaservice:")
    lines.append(f"  flow: [{', '.join(flow)}]")
    if "dataprep" in urls:
        lines.append("  dataprep: dataprep")
    if model:
        lines.append(f"  model: {model}")
    if routes is not None:
        lines.append(f"  routes: [{', '.join(routes)}]")
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def serve_all(apps: dict[str, ASGIApp]) -> AsyncIterator[dict[str, str]]:
    """Serve each app on its own loopback socket (as `megaservice.testing.serve`); all stopped together at the end."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None], socket.socket]] = []
    urls = {}
    try:
        for name, app in apps.items():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
            server = uvicorn.Server(config)
            server.config.setup_event_loop = lambda: None  # inside a running loop
            servers.append((server, asyncio.get_running_loop().create_task(server.serve(sockets=[sock])), sock))
            urls[name] = f"http://127.0.0.1:{sock.getsockname()[1]}"
        for server, task, _ in servers:
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("a server stopped before it started")
                await asyncio.sleep(0.002)
        yield urls
    finally:
        for server, _, _ in servers:
            server.should_exit = True
        await asyncio.gather(*(task for _, task, _ in servers), return_exceptions=True)
        for _, _, sock in servers:
            sock.close()


@contextlib.asynccontextmanager
async def run_stack(
    *,
    llm: FakeLLM | None = None,
    kb: KnowledgeBase | None = None,
    guardrail: ASGIApp | None = None,
    embedding: ASGIApp | None = None,
    flow: Sequence[str] = FLOW,
    down: Sequence[str] = (),
    settings: Settings | None = None,
    gateway_settings: GatewaySettings | None = None,
    model: str | None = None,
    llm_model: str | None = None,
    routes: Sequence[str] | None = None,
) -> AsyncIterator[Stack]:
    """Serve every service of the flow (those in `down`: an address nothing answers), then the megaservice."""
    llm = llm if llm is not None else FakeLLM()
    kb = kb if kb is not None else KnowledgeBase(documents=DOCUMENTS)
    guardrail = guardrail if guardrail is not None else FakeGuardrail()
    async with serve_all({"tei": FakeTEI(dim=32), "model-server": llm}) as backends:
        if embedding is None:
            embedding = embedding_service(EmbeddingSettings(backend="tei", tei_endpoint=backends["tei"])).app
        apps: dict[str, ASGIApp] = {
            "guardrail": guardrail,
            "embedding": embedding,
            "retriever": kb.retriever,
            "reranker": kb.reranker,
            "llm": llm_service(LLMSettings(endpoint=backends["model-server"], model_id=llm_model)).app,
            "dataprep": kb.dataprep,
        }
        wanted = {name: app for name, app in apps.items() if name == "dataprep" or name in flow}
        async with serve_all({n: a for n, a in wanted.items() if n not in down}) as served:
            urls = {name: served[name] if name in served else unused_url() for name in wanted}
            pipeline = parse_pipeline(pipeline_yaml(urls, flow, model=model, routes=routes), environ={})
            gateway = create_gateway(
                pipeline,
                settings if settings is not None else Settings(),
                gateway_settings=gateway_settings if gateway_settings is not None else GatewaySettings(),
            )
            async with serve_all({"gateway": gateway.app}) as front:
                try:
                    yield Stack(front["gateway"], pipeline, gateway, llm, kb, guardrail, urls)
                finally:
                    await close_client()  # the pooled connections to the nodes: closed, the servers stop at once


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with run_stack() as running:
        yield running
