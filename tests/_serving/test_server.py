"""The sockets a service binds itself (before uvicorn starts, so OPEA code can fork after binding)."""

import asyncio
import socket
from typing import Any

import anyio
import httpx
import pytest
import uvicorn

from megaservice import MicroService
from megaservice.testing import serve


def test_start_refuses_a_taken_port_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = MicroService("late", host="127.0.0.1", port=port)
        with pytest.raises(RuntimeError, match=f"port:{port} cannot be bound on 127.0.0.1"):
            service.start()
    assert service.bound_port is None
    assert service.server is None


def test_the_compat_alias_binds_the_port_when_a_service_is_constructed() -> None:
    import megaservice.compat

    megaservice.compat.install()
    try:
        service = MicroService("early", host="localhost", port=0)
        port = service.bound_port
        assert port is not None
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) == 0  # listening before start()
    finally:
        megaservice.compat.uninstall()
    service.stop()
    assert service.bound_port is None


def _nodelay(server: uvicorn.Server) -> list[int]:
    """TCP_NODELAY of each connection the server holds."""
    return [
        conn.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        for conn in server.server_state.connections
    ]


@pytest.mark.anyio
async def test_a_service_served_on_asyncio_answers_without_nagle() -> None:
    # asyncio (unlike uvloop) sets TCP_NODELAY only on connections of an IPPROTO_TCP socket; without
    # it each response written in two parts waits for the client's delayed ACK (40 ms on loopback)
    assert asyncio.get_running_loop().__class__.__module__.startswith("asyncio")
    service = MicroService("nodelay", host="127.0.0.1", port=0)
    serving = asyncio.ensure_future(service.serve())
    try:
        with anyio.fail_after(10):
            while not service.started:
                await asyncio.sleep(0.01)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.bound_port}") as client:
                assert (await client.get("/v1/health_check")).status_code == 200
                assert service.server is not None
                flags = _nodelay(service.server)  # the client's keep-alive connection is still open
    finally:
        service.stop()
        await serving
    assert flags and all(flags)


@pytest.mark.anyio
async def test_the_testing_server_answers_without_nagle(monkeypatch: pytest.MonkeyPatch) -> None:
    servers: list[uvicorn.Server] = []

    class Recorded(uvicorn.Server):
        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            servers.append(self)

    monkeypatch.setattr(uvicorn, "Server", Recorded)  # as megaservice.testing.serve looks it up
    service = MicroService("nodelay")
    async with serve(service.app) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/v1/health_check")).status_code == 200
        flags: list[Any] = _nodelay(servers[0])
    assert flags and all(flags)
