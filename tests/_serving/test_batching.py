"""OPEA's dynamic batching: handlers queue requests; the service hands each queue to one function."""

import asyncio

import aiohttp
import pytest

from megaservice import MicroService, ServiceType, TextDoc
from megaservice.testing import serve

pytestmark = pytest.mark.anyio


def batching_service(infer) -> MicroService:
    service = MicroService("batcher", port=0, dynamic_batching=True, dynamic_batching_timeout=0)
    service.dynamic_batching_infer = infer

    async def handler(request: TextDoc) -> dict[str, str]:
        future = asyncio.get_running_loop().create_future()
        async with service.buffer_lock:
            service.request_buffer[ServiceType.EMBEDDING].append({"request": request, "response": future})
        return await future

    service.add_route("/v1/batch", handler)
    return service


async def post_all(url: str, texts: list[str]) -> list[tuple[int, str]]:
    async with aiohttp.ClientSession() as session:

        async def post(text: str) -> tuple[int, str]:
            async with session.post(f"{url}/v1/batch", json={"text": text}) as response:
                return response.status, await response.text()

        return await asyncio.gather(*(post(text) for text in texts))


async def test_dynamic_batching_hands_buffered_requests_to_the_batch_function() -> None:
    batches = []

    async def infer(service_type, batch):
        batches.append((service_type, len(batch)))
        return [{"result": item["request"].text.upper()} for item in batch]

    async with serve(batching_service(infer).app) as url:
        results = await post_all(url, ["a", "b", "c"])
    assert results == [(200, '{"result":"A"}'), (200, '{"result":"B"}'), (200, '{"result":"C"}')]
    assert {key for key, _ in batches} == {ServiceType.EMBEDDING}
    assert sum(size for _, size in batches) == 3


async def test_a_failing_batch_fails_its_requests_and_batching_goes_on() -> None:
    calls = 0

    async def infer(service_type, batch):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the model fell over")
        return [{"result": "ok"} for _ in batch]

    async with serve(batching_service(infer).app) as url:
        failed = await post_all(url, ["a"])
        after = await post_all(url, ["b"])
    assert failed == [(500, "Internal Server Error")]
    assert after == [(200, '{"result":"ok"}')]


async def test_without_batching_function_the_requests_fail() -> None:
    service = MicroService("unset", port=0)
    with pytest.raises(NotImplementedError, match="dynamic_batching_infer"):
        await service.dynamic_batching_infer(ServiceType.LLM, [])
