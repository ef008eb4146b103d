"""`BaseService` and `HTTPService`: runtime arguments, routes, the lifespan's hooks, serving and stopping."""

import asyncio
import socket

import aiohttp
import anyio
import pytest
from pydantic import BaseModel

from megaservice import BaseService, HTTPService, Settings
from megaservice.testing import client_for

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_service(port: int = 0, **kwargs: object) -> HTTPService:
    runtime_args = {"protocol": "http", "host": "127.0.0.1", "port": port, "title": "svc", "description": None}
    return HTTPService(runtime_args=runtime_args, settings=Settings(), **kwargs)  # type: ignore[arg-type]


def test_runtime_args_give_opea_properties() -> None:
    service = BaseService("b", {"protocol": ["http", "grpc"], "host": "", "port": [8000, 8001]})
    assert (service.primary_port, service.all_ports) == (8000, [8000, 8001])
    assert service.protocols == ["http", "grpc"]
    assert service.host_address == "127.0.0.1"
    assert (service.title, service.description) == ("b", "OPEA Microservice Infrastructure")
    assert service.server is None


async def test_a_port_accepting_connections_is_ready() -> None:
    with socket.socket() as listening:  # the kernel accepts connections into the backlog
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert await BaseService.async_check_server_readiness(f"127.0.0.1:{port}")
        assert BaseService.check_server_readiness(f"127.0.0.1:{port}")
    assert not await BaseService.async_check_server_readiness(f"127.0.0.1:{free_port()}", timeout=0.5)


class Echo(BaseModel):
    text: str


async def test_add_route_takes_pydantic_bodies_and_rejects_bad_input_with_422() -> None:
    service = http_service()

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


async def test_startup_tasks_run_while_serving_and_shutdown_callbacks_after() -> None:
    service = http_service()
    events: list[str] = []

    async def background() -> None:
        events.append("started")
        try:
            await asyncio.Event().wait()
        finally:
            events.append("cancelled")

    async def closing() -> None:
        events.append("async shutdown")

    service.add_startup_event(background)
    service.on_shutdown(lambda: events.append("sync shutdown"))
    service.on_shutdown(closing)
    async with client_for(service.app) as client:
        await client.get("/health")
        await asyncio.sleep(0)
        assert events == ["started"]
    assert events == ["started", "cancelled", "sync shutdown", "async shutdown"]


async def test_serve_binds_in_a_running_loop_and_stop_frees_the_port() -> None:
    port = free_port()
    service = http_service(port)
    unbound = service.bound_port
    task = asyncio.create_task(service.serve())
    with anyio.fail_after(10):
        while not service.started:
            assert not task.done()
            await asyncio.sleep(0.01)
    assert (unbound, service.bound_port) == (None, port)
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/v1/health_check") as r:
        assert r.status == 200
        assert (await r.json())["Service Title"] == "svc"
    service.stop()
    await asyncio.wait_for(task, 5)
    assert service.bound_port is None
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


async def test_cors_answers_preflights_unless_turned_off() -> None:
    preflight = {"Origin": "http://ui", "Access-Control-Request-Method": "POST"}
    async with client_for(http_service().app) as client:
        allowed = await client.options("/v1/health_check", headers=preflight)
    async with client_for(http_service(cors=False).app) as client:
        plain = await client.options("/v1/health_check", headers=preflight)
    assert allowed.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-origin" not in plain.headers
