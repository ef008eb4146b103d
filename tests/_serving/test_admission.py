"""Admission: keys, body size and requests in flight, checked before any handler runs."""

import asyncio

import httpx
import pytest
from fastapi import Request

from megaservice import MicroService
from megaservice.testing import client_for, serve

pytestmark = pytest.mark.anyio


def service(**kwargs) -> MicroService:
    svc = MicroService("guarded", port=0, **kwargs)

    async def echo(request: Request) -> dict[str, object]:
        return {"got": len(await request.body())}

    svc.add_route("/v1/echo", echo, methods=["POST"])
    return svc


async def test_without_keys_nothing_is_asked():
    async with client_for(service().app) as client:
        assert (await client.post("/v1/echo", content=b"{}")).status_code == 200


async def test_a_key_is_required_and_checked():
    async with client_for(service(auth_keys=["s3cret", "other"]).app) as client:
        missing = await client.post("/v1/echo", content=b"{}")
        wrong = await client.post("/v1/echo", content=b"{}", headers={"Authorization": "Bearer nope"})
        bearer = await client.post("/v1/echo", content=b"{}", headers={"Authorization": "Bearer s3cret"})
        header = await client.post("/v1/echo", content=b"{}", headers={"X-API-Key": "other"})
        probe = await client.get("/v1/health_check")
        metrics = await client.get("/metrics")
    assert missing.status_code == wrong.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["detail"] == missing.json()["error"]["message"] == "missing or invalid API key"
    assert bearer.status_code == header.status_code == 200
    assert probe.status_code == metrics.status_code == 200  # probes stay public


async def test_a_service_checks_the_keys_and_limits_of_the_environment(monkeypatch):
    monkeypatch.setenv("MEGASERVICE_API_KEYS", "k1, k2")
    monkeypatch.setenv("MEGASERVICE_MAX_BODY_BYTES", "10")
    async with client_for(service().app) as client:
        ok = await client.post("/v1/echo", content=b"{}", headers={"X-API-Key": "k2"})
        big = await client.post("/v1/echo", content=b"x" * 11, headers={"X-API-Key": "k2"})
    assert ok.status_code == 200
    assert big.status_code == 413


async def test_a_body_over_the_limit_is_refused_with_its_size():
    async with client_for(service(max_body_bytes=100).app) as client:
        fits = await client.post("/v1/echo", content=b"x" * 100)
        declared = await client.post("/v1/echo", content=b"x" * 101)

        async def chunks():
            for _ in range(10):
                yield b"x" * 50

        streamed = await client.post("/v1/echo", content=chunks())  # no Content-Length: counted as it arrives
    assert fits.json() == {"got": 100}
    assert declared.status_code == 413
    assert declared.json()["detail"] == "request body larger than 100 bytes"
    assert declared.json()["error"]["message"] == "request body larger than 100 bytes"  # OpenAI's, for its clients
    assert streamed.status_code == 413


async def test_beyond_max_inflight_the_answer_is_503_with_retry_after():
    svc = MicroService("busy", port=0, max_inflight=2)
    release = asyncio.Event()

    async def slow(request: Request) -> dict[str, object]:
        await release.wait()
        return {"ok": True}

    svc.add_route("/v1/slow", slow, methods=["POST"])
    async with serve(svc.app) as url, httpx.AsyncClient(base_url=url) as client:
        first = [asyncio.create_task(client.post("/v1/slow", content=b"{}")) for _ in range(2)]
        while svc.app.inflight < 2:  # type: ignore[attr-defined]
            await asyncio.sleep(0.005)
        refused = await client.post("/v1/slow", content=b"{}")
        health = await client.get("/v1/health_check")  # probes are not counted
        release.set()
        done = await asyncio.gather(*first)
        after = await client.post("/v1/slow", content=b"{}")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "busy" in refused.json()["detail"]
    assert health.status_code == 200
    assert [r.status_code for r in done] == [200, 200]
    assert after.status_code == 200
    assert svc.app.inflight == 0  # type: ignore[attr-defined]
