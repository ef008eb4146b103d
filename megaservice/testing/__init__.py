"""Test helpers shipped with megaservice: fake backends, a real loopback server, an in-process client."""

from typing import TYPE_CHECKING, Any

from megaservice.testing.fakes import FakeEmbedding, FakeGuardrail, FakeLLM, FakeReranker, FakeRetriever, FakeService
from megaservice.testing.faults import Fault, FaultyServer, unused_url
from megaservice.testing.server import serve

if TYPE_CHECKING:
    from megaservice.testing.inprocess import client_for

__all__ = [
    "FakeEmbedding",
    "FakeGuardrail",
    "FakeLLM",
    "FakeReranker",
    "FakeRetriever",
    "FakeService",
    "Fault",
    "FaultyServer",
    "client_for",
    "serve",
    "unused_url",
]


def __getattr__(name: str) -> Any:
    if name == "client_for":  # needs httpx + asgi-lifespan (the `testing` extra)
        from megaservice.testing.inprocess import client_for

        return client_for
    raise AttributeError(name)
