import ssl
from collections.abc import AsyncIterator
from typing import NamedTuple

import pytest
import trustme

from megaservice.client import UpstreamClient, close_client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp and uvloop are asyncio-only


@pytest.fixture
async def upstream_client() -> AsyncIterator[None]:
    """Close the loop's pooled upstream client after the test (it is per event loop)."""
    yield
    await close_client()


class TLS(NamedTuple):
    server: ssl.SSLContext
    client: ssl.SSLContext
    pem: str
    """The server's key and certificate chain in one PEM file (for uvicorn's `ssl_certfile`)."""


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLS:
    """A private CA: a server context with its certificate for 127.0.0.1, a client context trusting it."""
    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    pem = tmp_path_factory.mktemp("tls") / "server.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(pem))
    return TLS(server, client, str(pem))


class Scheme:
    """How a test's nodes are reached: plain http on the process's pool, or https with a private CA."""

    def __init__(self, name: str, tls: TLS) -> None:
        self.name = name
        self.server_ssl = tls.server if name == "https" else None
        self.certfile = tls.pem if name == "https" else None
        """What `megaservice.testing.serve(ssl_certfile=)` serves this scheme with."""
        self._tls = tls
        self._client: UpstreamClient | None = None

    def client(self) -> UpstreamClient | None:
        """The client to give the orchestrator (`None`: the process's pooled client), made on first use."""
        if self.name == "https" and self._client is None:
            self._client = UpstreamClient(ssl_context=self._tls.client)
        return self._client


@pytest.fixture(params=["http", "https"])
async def scheme(request: pytest.FixtureRequest, tls: TLS) -> AsyncIterator[Scheme]:
    scheme = Scheme(request.param, tls)
    yield scheme
    client = scheme.client()
    if client is not None:
        await client.aclose()
