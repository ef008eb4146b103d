"""Real sockets: the LLM service relays the model server's stream as it comes, ends it cleanly when it fails."""

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import anyio
import orjson
import pytest

from megaservice.components.llm import LLMSettings, create_service
from megaservice.testing import FakeLLM, FaultyServer, serve

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]

ASK = {"messages": [{"role": "user", "content": "Count."}], "stream": True}


@asynccontextmanager
async def llm_service(endpoint: str, **env: str) -> AsyncIterator[str]:
    service = create_service(LLMSettings.from_env({"LLM_ENDPOINT": endpoint, **env}))
    async with serve(service.app) as url:
        yield url


async def timed_events(response: aiohttp.ClientResponse, started: float) -> list[tuple[float, bytes]]:
    """Each event of the answer with the time it arrived (seconds after `started`)."""
    events = []
    buffer = b""
    async for data in response.content.iter_any():
        buffer += data
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            events.append((time.monotonic() - started, event + b"\n\n"))
    return events


def tokens(events: list[tuple[float, bytes]]) -> list[str]:
    found = []
    for _, event in events:
        if event.startswith(b"data: {"):
            found.append(orjson.loads(event[6:])["choices"][0]["delta"]["content"])
    return found


async def test_tokens_reach_the_client_as_the_model_server_makes_them():
    words = [f" w{i}" for i in range(8)]
    llm = FakeLLM(words, token_delay=0.1)
    async with serve(llm) as upstream, llm_service(upstream) as url, aiohttp.ClientSession() as session:
        with anyio.fail_after(10):
            started = time.monotonic()
            async with session.post(f"{url}/v1/chat/completions", json=ASK) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                events = await timed_events(response, started)
    assert tokens(events) == words
    assert events[-1][1] == b"data: [DONE]\n\n"
    first, last = events[0][0], events[-2][0]
    # The first token left the model server 0.1 s in; it arrives long before the last one is made (0.8 s).
    assert first < 0.1 + 0.3
    assert last - first > 0.5  # spread as generated, not held back and sent at the end
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(events[:-1])]
    assert min(gaps) > 0.03  # one event per token, none waiting for the next


async def test_the_stream_is_the_model_servers_bytes_unchanged():
    llm = FakeLLM(["a", "b", "c"])
    async with serve(llm) as upstream, llm_service(upstream) as url, aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/chat/completions", json=ASK) as response:
            relayed = await response.read()
        async with session.post(f"{upstream}/v1/chat/completions", json=ASK) as response:
            direct = await response.read()

    def without_time(body: bytes) -> list[dict[str, object]]:
        events = [orjson.loads(e[6:]) for e in body.split(b"\n\n") if e.startswith(b"data: {")]
        return [{k: v for k, v in e.items() if k != "created"} for e in events]

    assert without_time(relayed) == without_time(direct)
    assert relayed.endswith(b"data: [DONE]\n\n")


async def test_a_client_that_leaves_mid_stream_stops_the_model_server():
    llm = FakeLLM([f" t{i}" for i in range(200)], token_delay=0.02)
    async with serve(llm) as upstream, llm_service(upstream) as url, aiohttp.ClientSession() as session:
        with anyio.fail_after(10):
            async with session.post(f"{url}/v1/chat/completions", json=ASK) as response:
                await response.content.readuntil(b"\n\n")
                await response.content.readuntil(b"\n\n")
            # leaving the block closes the connection with 190-odd tokens to go
            while llm.cancelled < 1:
                await asyncio.sleep(0.01)
    assert llm.completed == 0
    assert llm.active == 0


async def test_a_model_server_that_stalls_mid_stream_ends_the_stream_with_an_error_event():
    async with FaultyServer("stall") as upstream, llm_service(upstream.url, LLM_READ_TIMEOUT="0.3") as url:
        async with aiohttp.ClientSession() as session:
            with anyio.fail_after(10):
                started = time.monotonic()
                async with session.post(f"{url}/v1/chat/completions", json=ASK) as response:
                    assert response.status == 200
                    events = await timed_events(response, started)
            while not upstream.disconnects:  # the stalled connection was dropped, not left open
                await asyncio.sleep(0.01)
    assert tokens(events[:1]) == ["partial"]
    at, error = events[-1]
    assert error.startswith(b"event: error\ndata: ")
    body = orjson.loads(error.split(b"data: ", 1)[1])
    assert body["node"] == "model-server"
    assert body["type"] == "upstream_timeout"
    assert body["error"]["message"] == body["message"]  # OpenAI's shape too: the openai client raises it
    assert 0.3 <= at < 2.0


async def test_a_connection_reset_mid_stream_ends_the_stream_with_an_error_event():
    async with FaultyServer("reset") as upstream, llm_service(upstream.url) as url:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/chat/completions", json=ASK) as response:
                events = await timed_events(response, time.monotonic())
    assert tokens(events[:1]) == ["partial"]
    body = orjson.loads(events[-1][1].split(b"data: ", 1)[1])
    assert events[-1][1].startswith(b"event: error\n")
    assert body["type"] == "upstream_unreachable"


async def test_an_unknown_model_is_refused_before_a_stream_starts():
    llm = FakeLLM(models=["qwen"])
    async with serve(llm) as upstream, llm_service(upstream) as url, aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/chat/completions", json={**ASK, "model": "nope"}) as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "model_not_found"
