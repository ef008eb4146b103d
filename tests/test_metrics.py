"""The `http_*` series of prometheus-fastapi-instrumentator's defaults, which OPEA services expose on `/metrics`."""

import os
import subprocess
import sys
import uuid

import pytest
from fastapi import Request
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import StreamingResponse

from megaservice import MicroService, TextDoc
from megaservice.testing import client_for

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


async def test_requests_are_counted_by_method_status_group_and_route_template() -> None:
    prefix = f"/t{uuid.uuid4().hex[:8]}"
    service = MicroService("metered", port=0)

    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    async def echo(request: Request) -> dict[str, str]:
        return {"echo": (await request.body()).decode()}

    service.app.add_api_route(f"{prefix}/items/{{item_id}}", item, methods=["GET"])
    service.add_route(f"{prefix}/echo", echo)  # served by the direct path
    async with client_for(service.app) as client:
        assert (await client.get(f"{prefix}/items/1")).status_code == 200
        assert (await client.get(f"{prefix}/items/2")).status_code == 200
        assert (await client.get(f"{prefix}/items/x")).status_code == 422
        echoed = await client.post(f"{prefix}/echo", content=b"hello")
        assert (await client.get(f"{prefix}/missing")).status_code == 404
        scraped = samples((await client.get("/metrics")).text)
    items = f"{prefix}/items/{{item_id}}"
    assert value(scraped, "http_requests_total", method="GET", status="2xx", handler=items) == 2
    assert value(scraped, "http_requests_total", method="GET", status="4xx", handler=items) == 1
    assert value(scraped, "http_requests_total", method="POST", status="2xx", handler=f"{prefix}/echo") == 1
    assert value(scraped, "http_requests_total", method="GET", status="4xx", handler="none") >= 1
    assert value(scraped, "http_request_size_bytes_count", handler=f"{prefix}/echo") == 1
    assert value(scraped, "http_request_size_bytes_sum", handler=f"{prefix}/echo") == 5
    assert value(scraped, "http_response_size_bytes_sum", handler=f"{prefix}/echo") == len(echoed.content)
    assert value(scraped, "http_request_duration_seconds_count", method="GET", handler=items) == 3
    assert value(scraped, "http_request_duration_seconds_bucket", method="GET", handler=items, le="+Inf") == 3
    assert value(scraped, "http_request_duration_highr_seconds_count") >= 5


async def test_a_stream_is_counted_once_it_has_been_sent() -> None:
    path = f"/t{uuid.uuid4().hex[:8]}/stream"
    service = MicroService("streamer", port=0)

    async def stream(request: TextDoc) -> StreamingResponse:
        async def body():
            for word in (request.text or "").split():
                yield f"data: {word}\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    service.add_route(path, stream)
    async with client_for(service.app) as client:
        response = await client.post(path, json={"text": "a b c"})
        assert response.text.count("data:") == 3
        scraped = samples((await client.get("/metrics")).text)
    assert value(scraped, "http_requests_total", method="POST", status="2xx", handler=path) == 1
    assert value(scraped, "http_response_size_bytes_sum", handler=path) == 0  # streamed: no Content-Length


def test_megaservice_http_metrics_0_turns_the_series_off() -> None:
    script = (
        "import asyncio\n"
        "from megaservice import MicroService\n"
        "from megaservice.testing import client_for\n"
        "async def main():\n"
        "    async with client_for(MicroService('quiet', port=0).app) as client:\n"
        "        await client.get('/v1/health_check')\n"
        "        print((await client.get('/metrics')).text)\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "MEGASERVICE_HTTP_METRICS": "0"}
    quiet = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    env["MEGASERVICE_HTTP_METRICS"] = "1"
    counted = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert "http_requests_total" not in quiet.stdout
    assert 'http_requests_total{handler="/v1/health_check",method="GET",status="2xx"} 1.0' in counted.stdout


def test_per_process_makes_its_series_once_even_from_many_threads() -> None:
    import threading

    from prometheus_client import CollectorRegistry, Counter

    from megaservice.metrics import per_process

    registry = CollectorRegistry()
    made: list[Counter] = []

    @per_process
    def series() -> Counter:
        counter = Counter("made_once", "Made once.", registry=registry)  # a second registration would raise
        made.append(counter)
        return counter

    results: list[Counter] = []
    threads = [threading.Thread(target=lambda: results.append(series())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and len(results) == 8 and all(result is made[0] for result in results)
    assert series.__name__ == "series"
