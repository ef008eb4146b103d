"""Test helpers shipped with megaservice: fake backends, a real loopback server, an in-process client."""

from typing import TYPE_CHECKING, Any

from megaservice.testing.embeddings import FakeOpenAIEmbeddings, FakeTEI
from megaservice.testing.fakes import FakeEmbedding, FakeGuardrail, FakeLLM, FakeReranker, FakeRetriever, FakeService
from megaservice.testing.faults import Fault, FaultyServer, unused_url
from megaservice.testing.judge import FakeJudge
from megaservice.testing.knowledge import KnowledgeBase
from megaservice.testing.rerank import FakeTEIReranker
from megaservice.testing.server import serve

if TYPE_CHECKING:
    from megaservice.testing.inprocess import ASGITransport, InProcess, client_for

__all__ = [
    "ASGITransport",
    "FakeEmbedding",
    "FakeGuardrail",
    "FakeJudge",
    "FakeLLM",
    "FakeOpenAIEmbeddings",
    "FakeReranker",
    "FakeRetriever",
    "FakeService",
    "FakeTEI",
    "FakeTEIReranker",
    "Fault",
    "FaultyServer",
    "InProcess",
    "KnowledgeBase",
    "client_for",
    "serve",
    "unused_url",
]


def __getattr__(name: str) -> Any:
    if name in ("ASGITransport", "InProcess", "client_for"):  # need httpx + asgi-lifespan (the `testing` extra)
        from megaservice.testing import inprocess

        return getattr(inprocess, name)
    raise AttributeError(name)
