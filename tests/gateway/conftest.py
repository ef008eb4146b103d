"""A whole ChatQnA pipeline on loopback sockets, its megaservice in front (`create_gateway`).

The nodes are the real LLM and embedding services where that is cheap (the LLM service over a
`FakeLLM`, the embedding service over a `FakeTEI`), and `megaservice.testing`'s `KnowledgeBase`
for dataprep, the retriever and the reranker; the guardrail is a `FakeGuardrail` (refuses
"stupid") unless a test passes the real bias service.
"""

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from megaservice.components.embedding import EmbeddingSettings
from megaservice.components.embedding import create_service as embedding_service
from megaservice.components.llm import LLMSettings
from megaservice.components.llm import create_service as llm_service
from megaservice.gateway import GatewaySettings, create_gateway
from megaservice.microservice import MicroService
from megaservice.pipeline import Pipeline, parse_pipeline
from megaservice.settings import Settings
from megaservice.testing import FakeGuardrail, FakeLLM, FakeTEI, KnowledgeBase, serve, unused_url
from starlette.types import ASGIApp

FACT = (
    "The Zorblax project keeps its launch code in the blue safe. The launch code of the Zorblax project is 4417."
)
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
    async with contextlib.AsyncExitStack() as stack:
        tei = await stack.enter_async_context(serve(FakeTEI(dim=32)))
        if embedding is None:
            embedding = embedding_service(EmbeddingSettings(backend="tei", tei_endpoint=tei)).app
        model_server = await stack.enter_async_context(serve(llm))
        apps: dict[str, ASGIApp] = {
            "guardrail": guardrail,
            "embedding": embedding,
            "retriever": kb.retriever,
            "reranker": kb.reranker,
            "llm": llm_service(LLMSettings(endpoint=model_server, model_id=llm_model)).app,
            "dataprep": kb.dataprep,
        }
        urls = {}
        for name, app in apps.items():
            if name != "dataprep" and name not in flow:
                continue
            urls[name] = unused_url() if name in down else await stack.enter_async_context(serve(app))
        pipeline = parse_pipeline(pipeline_yaml(urls, flow, model=model, routes=routes), environ={})
        gateway = create_gateway(
            pipeline,
            settings if settings is not None else Settings(),
            gateway_settings=gateway_settings if gateway_settings is not None else GatewaySettings(),
        )
        url = await stack.enter_async_context(serve(gateway.app))
        yield Stack(url, pipeline, gateway, llm, kb, guardrail, urls)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with run_stack() as running:
        yield running
