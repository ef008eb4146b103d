"""What serving requests leaves behind for the garbage collector: nothing (a full collection pauses every request)."""

import gc
import os
import subprocess
import sys

import aiohttp
import anyio
import pytest

from megaservice import ServiceOrchestrator, ServiceType
from megaservice.testing import FakeLLM, FakeService, serve
from tests.helpers import gateway, node


def cyclic_garbage() -> list[str]:
    """Names of the megaservice and uvicorn objects that only the cycle collector would free."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = [type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith(("megaservice", "uvicorn"))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found


@pytest.mark.anyio
@pytest.mark.usefixtures("upstream_client")
@pytest.mark.parametrize("stream", [False, True], ids=["non-streaming", "streaming"])
async def test_serving_requests_leaves_no_reference_cycles(stream: bool) -> None:
    async with serve(FakeService()) as first, serve(FakeLLM(tokens=["a", "b"])) as llm:
        pipeline = ServiceOrchestrator().add(node("first", first)).add(node("llm", llm, ServiceType.LLM))
        pipeline.flow_to(*pipeline.services.values())
        async with serve(gateway(pipeline).app) as url, aiohttp.ClientSession() as session:
            with anyio.fail_after(10):
                gc.collect()
                for _ in range(20):
                    async with session.post(f"{url}/v1/chat", json={"text": "q", "stream": stream}) as response:
                        assert response.status == 200
                        await response.read()
                left = cyclic_garbage()
    assert left == []


def test_a_started_service_freezes_what_exists_at_startup_and_collects_less_often() -> None:
    script = (
        "import gc\n"
        "from fastapi.testclient import TestClient\n"
        "from megaservice import MicroService\n"
        "with TestClient(MicroService('s', port=0).app):\n"
        "    print(gc.get_freeze_count(), gc.get_threshold()[0])\n"
    )
    tuned = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    env = {**os.environ, "MEGASERVICE_GC_TUNING": "0"}
    untouched = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    frozen, young = map(int, tuned.stdout.split())
    assert frozen > 10_000  # FastAPI, pydantic and the app: walked by no later collection
    assert young == 10_000
    assert untouched.stdout.split() == ["0", "700"]


@pytest.mark.anyio
@pytest.mark.usefixtures("upstream_client")
async def test_every_node_connection_goes_back_to_the_pool_or_is_closed() -> None:
    from megaservice.client import get_client

    async with serve(FakeService()) as first, serve(FakeLLM(tokens=["a"] * 50, token_delay=0.01)) as llm:
        pipeline = ServiceOrchestrator().add(node("first", first)).add(node("llm", llm, ServiceType.LLM))
        pipeline.flow_to(*pipeline.services.values())
        async with serve(gateway(pipeline).app) as url, aiohttp.ClientSession() as session:
            with anyio.fail_after(20):
                for stream in (False, True) * 5:
                    async with session.post(f"{url}/v1/chat", json={"text": "q", "stream": stream}) as response:
                        await response.read()
                for _ in range(5):  # clients that leave in the middle of the answer
                    async with session.post(f"{url}/v1/chat", json={"text": "q", "stream": True}) as response:
                        await response.content.readany()
                pool = get_client().pool
                while pool._active:  # the abandoned streams are cancelled within 100 ms
                    await anyio.sleep(0.01)
            idle = [conn for conns in pool._idle.values() for conn in conns if not conn.closed]
            assert 1 <= len(idle) <= 4  # the first node; the LLM's were dropped with the abandoned streams
            assert not any(conn.in_use for conn in idle)


@pytest.mark.anyio
@pytest.mark.usefixtures("upstream_client")
async def test_a_node_connection_that_closes_is_freed_without_the_cycle_collector() -> None:
    """Closed connections used to wait for a full collection: 1 000 of them after a few minutes of load."""
    from megaservice.client import get_client

    gc.collect()
    async with serve(FakeService()) as first:
        pipeline = ServiceOrchestrator().add(node("first", first))
        async with serve(gateway(pipeline).app) as url, aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.post(f"{url}/v1/chat", json={"text": "q", "stream": False}) as response:
                    assert response.status == 200
            pool = get_client().pool
            opened = [conn for conns in pool._idle.values() for conn in conns]
            assert opened
    with anyio.fail_after(5):  # the node stopped: it closed its idle keep-alive connections
        while not all(conn.closed for conn in opened):
            await anyio.sleep(0.01)
    del opened
    assert "Connection" not in cyclic_garbage()
