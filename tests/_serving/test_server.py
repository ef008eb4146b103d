"""The sockets a service binds itself (before uvicorn starts, so OPEA code can fork after binding)."""

import socket

import pytest

from megaservice import MicroService


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
