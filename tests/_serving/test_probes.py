"""The probes and `/v1/statistics`; `PROBE_PATHS` is the one list the routes, admission and the access log use."""

import asyncio
import logging

import anyio
import httpx
import pytest
from fastapi import Request

from megaservice import HTTPService, MicroService, Settings, __version__
from megaservice.limits import PROBE_PATHS
from megaservice.testing import client_for

pytestmark = pytest.mark.anyio


async def test_health_routes_answer_opea_keys() -> None:
    service = MicroService("opea_service@embedding", port=0)
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


async def test_statistics_and_metrics_routes() -> None:
    service = MicroService("s", port=0)
    async with client_for(service.app) as client:
        statistics = await client.get("/v1/statistics")
        metrics = await client.get("/metrics")
    assert statistics.status_code == 200
    assert isinstance(statistics.json(), dict)
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "python_info" in metrics.text


async def test_readiness_reflects_the_checks() -> None:
    service = MicroService("s", port=0)
    backend_up = False
    service.add_readiness_check(lambda: backend_up)

    async def broken() -> bool:
        raise ConnectionError("no database")

    async with client_for(service.app) as client:
        down = await client.get("/v1/ready")
        backend_up = True
        up = await client.get("/v1/ready")
        service.add_readiness_check(broken)
        failing = await client.get("/v1/ready")
    assert (down.status_code, down.json()["status"]) == (503, "not ready")
    assert "failed" in down.json()["reason"]
    assert (up.status_code, up.json()) == (200, {"status": "ready"})
    assert failing.status_code == 503
    assert failing.json()["reason"] == "ConnectionError: no database"


async def test_readiness_is_503_before_startup() -> None:
    service = MicroService("s", port=0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://t") as client:
        response = await client.get("/v1/ready")  # no lifespan ran: not started
    assert (response.status_code, response.json()) == (503, {"status": "starting"})


async def test_every_probe_answers_without_a_key_and_is_not_counted_in_flight() -> None:
    service = MicroService("busy", host="127.0.0.1", port=0, max_inflight=1, auth_keys=["k"])
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: Request) -> dict[str, bool]:
        entered.set()
        await release.wait()
        return {"ok": True}

    service.add_route("/v1/slow", slow)
    serving = asyncio.ensure_future(service.serve())
    try:
        with anyio.fail_after(10):
            while not service.started:
                await asyncio.sleep(0.01)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.bound_port}") as client:
                held = asyncio.ensure_future(client.post("/v1/slow", headers={"X-API-Key": "k"}))
                await entered.wait()  # the one request allowed in flight is in
                busy = await client.post("/v1/slow", headers={"X-API-Key": "k"})
                probes = {path: (await client.get(path)).status_code for path in PROBE_PATHS}
                statistics = await client.get("/v1/statistics")
                release.set()
                assert (await held).status_code == 200
    finally:
        service.stop()
        await serving
    assert busy.status_code == 503
    assert probes == dict.fromkeys(PROBE_PATHS, 200)
    assert statistics.status_code == 401  # not a probe: an ordinary route


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def access_lines(service: HTTPService, paths: list[str]) -> list[str]:
    """The paths of the access-log lines `service` writes while it answers GETs of `paths`."""
    access = logging.getLogger("megaservice.access")
    lines = Lines()
    serving = asyncio.ensure_future(service.serve())
    try:
        with anyio.fail_after(10):
            while not service.started:
                await asyncio.sleep(0.01)
            access.addHandler(lines)  # after uvicorn configured its loggers
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.bound_port}") as client:
                for path in paths:
                    await client.get(path)
    finally:
        access.removeHandler(lines)
        service.stop()
        await serving
    return [line.split('"')[1].split()[1] for line in lines.lines]


async def test_the_probes_stay_out_of_the_access_log() -> None:
    service = MicroService("logged", host="127.0.0.1", port=0)
    probes = [p for path in sorted(PROBE_PATHS) for p in (path, f"{path}?verbose=1")]
    paths = await access_lines(service, [*probes, "/v1/statistics", "/healthz?x=1"])
    assert paths == ["/v1/statistics", "/healthz?x=1"]


async def test_the_access_log_can_be_turned_off() -> None:
    by_env = MicroService(
        "quiet", host="127.0.0.1", port=0, settings=Settings.from_env({"MEGASERVICE_ACCESS_LOG": "0"})
    )
    by_uvicorn = MicroService("quiet2", host="127.0.0.1", port=0)
    by_uvicorn_kwargs = HTTPService(uvicorn_kwargs={"access_log": False}, runtime_args={"host": "127.0.0.1", "port": 0})
    assert await access_lines(by_env, ["/v1/statistics"]) == []
    assert await access_lines(by_uvicorn_kwargs, ["/v1/statistics"]) == []
    assert await access_lines(by_uvicorn, ["/v1/statistics"]) == ["/v1/statistics"]
