import socket

import pytest
from pydantic import BaseModel

from megaservice import MicroService, ServiceType, TextDoc, __version__, opea_microservices, register_microservice
from megaservice.testing import client_for, serve

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_name_is_suffixed_like_opea():
    service = MicroService("embedding", use_remote_service=True, service_type=ServiceType.EMBEDDING)
    assert service.name == "embedding/MicroService"


def test_endpoint_path_follows_opea_rules():
    plain = MicroService("llm", host="llm-host", port=9009, endpoint="/v1/chat/completions", use_remote_service=True)
    assert plain.endpoint_path() == "http://llm-host:9009/v1/chat/completions"
    keyed = MicroService(
        "llm", host="https://api.example.com", endpoint="/v1/chat/completions", api_key="k", use_remote_service=True
    )
    assert keyed.endpoint_path("gpt") == "https://api.example.com/v1/chat/completions"


def test_a_remote_service_has_no_app():
    with pytest.raises(AttributeError, match="remote"):
        _ = MicroService("x", use_remote_service=True).app


def test_constructing_a_service_binds_nothing():
    port = free_port()
    MicroService("a", host="127.0.0.1", port=port)
    MicroService("b", host="127.0.0.1", port=port)  # OPEA would raise: its constructor binds the port
    assert port_is_free(port)


async def test_health_routes_answer_opea_keys():
    service = MicroService("opea_service@embedding", port=free_port())
    async with client_for(service.app) as client:
        health = await client.get("/v1/health_check")
        alias = await client.get("/v1/health")
        bare = await client.get("/health")
    expected = {"Service Title": "opea_service@embedding", "Version": __version__,
                "Service Description": "OPEA Microservice Infrastructure"}  # fmt: skip
    assert health.json() == expected
    assert alias.json() == expected
    assert bare.status_code == 200
    assert bare.content == b""


async def test_statistics_and_metrics_routes():
    service = MicroService("s", port=free_port())
    async with client_for(service.app) as client:
        statistics = await client.get("/v1/statistics")
        metrics = await client.get("/metrics")
    assert statistics.status_code == 200
    assert isinstance(statistics.json(), dict)
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "python_info" in metrics.text


async def test_readiness_reflects_the_backend():
    service = MicroService("s", port=free_port())
    backend_up = False
    service.add_readiness_check(lambda: backend_up)
    async with client_for(service.app) as client:
        down = await client.get("/v1/ready")
        backend_up = True
        up = await client.get("/v1/ready")
    assert down.status_code == 503
    assert "failed" in down.json()["reason"]
    assert up.status_code == 200


async def test_readiness_is_503_before_startup():
    service = MicroService("s", port=free_port())
    from httpx import ASGITransport, AsyncClient

    async with AsyncClient(transport=ASGITransport(app=service.app), base_url="http://t") as client:
        response = await client.get("/v1/ready")  # no lifespan ran: not started
    assert response.status_code == 503


class Echo(BaseModel):
    text: str


async def test_add_route_takes_pydantic_bodies_and_rejects_bad_input_with_422():
    service = MicroService("s", port=free_port())

    async def shout(body: Echo) -> dict[str, str]:
        return {"text": body.text.upper()}

    service.add_route("/v1/shout", shout, methods=["POST"])
    async with client_for(service.app) as client:
        good = await client.post("/v1/shout", json={"text": "hi"})
        bad = await client.post("/v1/shout", json={"txt": "hi"})
        not_json = await client.post("/v1/shout", content=b"{", headers={"content-type": "application/json"})
    assert good.json() == {"text": "HI"}
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "text"]
    assert not_json.status_code == 422


async def test_register_microservice_adds_routes_to_the_same_service():
    port = free_port()

    @register_microservice(name="test-registry", host="127.0.0.1", port=port, endpoint="/v1/one")
    async def one(request: TextDoc) -> TextDoc:
        return TextDoc(text=f"one:{request.text}")

    @register_microservice(name="test-registry", port=1, endpoint="/v1/two", methods=["GET"])
    async def two() -> dict[str, int]:
        return {"two": 2}

    try:
        service = opea_microservices["test-registry"]
        assert service.port == port
        async with client_for(service.app) as client:
            first = await client.post("/v1/one", json={"text": "x"})
            second = await client.get("/v1/two")
        assert first.json()["text"] == "one:x"
        assert second.json() == {"two": 2}
    finally:
        del opea_microservices["test-registry"]


async def test_serve_binds_in_a_running_loop_and_stop_frees_the_port():
    import asyncio

    import aiohttp

    port = free_port()
    service = MicroService("s", host="127.0.0.1", port=port)
    task = asyncio.create_task(service.serve())
    while not service.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/v1/health_check") as r:
        assert r.status == 200
    service.stop()
    await asyncio.wait_for(task, 5)
    assert port_is_free(port)


async def test_dynamic_batching_hands_buffered_requests_to_the_batch_function():
    import asyncio

    service = MicroService("batcher", port=free_port(), dynamic_batching=True, dynamic_batching_timeout=0)
    batches = []

    async def infer(service_type, batch):
        batches.append(len(batch))
        return [{"result": item["request"].text.upper()} for item in batch]

    service.dynamic_batching_infer = infer

    async def handler(request: TextDoc) -> dict[str, str]:
        future = asyncio.get_running_loop().create_future()
        async with service.buffer_lock:
            service.request_buffer[ServiceType.EMBEDDING].append({"request": request, "response": future})
        return await future

    service.add_route("/v1/batch", handler)
    async with serve(service.app) as url:
        import aiohttp

        async with aiohttp.ClientSession() as session:

            async def post(text):
                async with session.post(f"{url}/v1/batch", json={"text": text}) as response:
                    return await response.json()

            results = await asyncio.gather(post("a"), post("b"), post("c"))
    assert [r["result"] for r in results] == ["A", "B", "C"]
    assert sum(batches) == 3
