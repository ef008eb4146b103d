"""Concurrent requests share the model's batches (seen on /metrics), and every answer stays with its request."""

import asyncio
import re

import httpx
import numpy as np
import pytest

from megaservice.components.embedding import EmbeddingSettings, create_service, load_backend
from megaservice.testing import serve
from tests.components.test_embedding_service import wait_ready

pytestmark = pytest.mark.anyio

_SAMPLE = re.compile(r'^embedding_batch_size_(bucket|count|sum)\{backend="local"(?:,le="([^"]+)")?\} (\S+)$', re.M)


async def batch_sizes(client: httpx.AsyncClient) -> dict[str, float]:
    """The `embedding_batch_size` histogram of the local backend: `count`, `sum`, and `le=N` buckets."""
    text = (await client.get("/metrics")).text
    return {(le if kind == "bucket" else kind): float(value) for kind, le, value in _SAMPLE.findall(text)}


async def test_concurrent_requests_are_embedded_together_and_answered_apart(minilm):
    texts = [f"request number {i} asks about {word}" for i, word in enumerate(["tea", "cats", "rain"] * 11)][:31]
    expected = minilm.embed(texts)
    settings = EmbeddingSettings.from_env({"EMBEDDING_MAX_BATCH": "32"})
    service = create_service(settings, load_backend(settings, model=minilm))
    async with serve(service.app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        await wait_ready(client)
        before = await batch_sizes(client)
        # A 64-text request keeps the model busy for two batches; the 31 single-text requests sent
        # meanwhile wait in the queue and go to the model together.
        big = asyncio.ensure_future(client.post("/v1/embeddings", json={"input": ["filler text"] * 64}))
        await asyncio.sleep(0.005)
        singles = await asyncio.gather(*(client.post("/v1/embeddings", json={"input": t}) for t in texts))
        assert (await big).status_code == 200
        after = await batch_sizes(client)
    answered = np.array([answer.json()["data"][0]["embedding"] for answer in singles])
    assert np.allclose(answered, expected, atol=1e-5)  # each request got its own text's vector
    assert after["sum"] - before["sum"] == 64 + 31
    calls = after["count"] - before["count"]
    assert calls < 2 + 31 / 2, f"{calls:.0f} model calls for 95 texts: the singles were not batched"
    alone = after["1.0"] - before["1.0"]
    assert alone < 31, "every single-text request went to the model alone"
