"""Which client carries a node call: httptools for plain http, aiohttp for https, each on real sockets.

The failure cases of both are in tests/_pipeline/test_faults.py (every fault, over each scheme); here: a whole
pipeline over https and what https verifies. That a plain-http pipeline never loads aiohttp is in
test_footprint.py.
"""

import aiohttp
import pytest

from megaservice import (
    ServiceOrchestrator,
    ServiceType,
    Timeout,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from megaservice.client import UpstreamClient
from megaservice.testing import FakeEmbedding, FakeLLM, FakeService, FaultyServer, serve, unused_url
from tests.conftest import TLS
from tests.helpers import gateway, node

pytestmark = pytest.mark.anyio


class Pipeline(ServiceOrchestrator):
    def align_outputs(self, data, cur_node, inputs, runtime_graph, llm_parameters_dict, **kwargs):
        if self.services[cur_node].service_type == ServiceType.EMBEDDING:
            return {"messages": [{"role": "user", "content": f"{len(data[0])} numbers"}]}
        return data


def pipeline(embedding_url: str, llm_url: str, client: UpstreamClient) -> ServiceOrchestrator:
    embedding = node("embedding", embedding_url, ServiceType.EMBEDDING, endpoint="/embed")
    llm = node("llm", llm_url, ServiceType.LLM, endpoint="/v1/chat/completions")
    orchestrator = Pipeline(client=client).add(embedding).add(llm)
    orchestrator.flow_to(embedding, llm)
    return orchestrator


@pytest.mark.parametrize("stream", [False, True], ids=["non-streaming", "streaming"])
async def test_a_pipeline_of_https_nodes_answers(tls: TLS, stream):
    embedder, llm = FakeEmbedding(dim=4), FakeLLM(tokens=["over", " tls"])
    client = UpstreamClient(ssl_context=tls.client)
    try:
        async with serve(embedder, ssl_certfile=tls.pem) as embedding_url, serve(llm, ssl_certfile=tls.pem) as llm_url:
            assert embedding_url.startswith("https://")
            orchestrator = pipeline(embedding_url, llm_url, client)
            async with serve(gateway(orchestrator).app) as url, aiohttp.ClientSession() as session:
                async with session.post(f"{url}/v1/chat", json={"text": "q", "stream": stream}) as response:
                    status, body = response.status, await response.read()
    finally:
        await client.aclose()
    assert status == 200
    assert llm.requests[0]["messages"] == [{"role": "user", "content": "4 numbers"}]
    if stream:
        assert b'"content":"over"' in body
        assert body.endswith(b"data: [DONE]\n\n")
    else:
        assert b"over tls" in body


async def test_an_https_node_with_an_untrusted_certificate_is_unreachable(tls: TLS):
    client = UpstreamClient()  # the system's CAs: the private CA is not among them
    try:
        async with FaultyServer(ssl=tls.server) as upstream:
            with pytest.raises(UpstreamConnectError) as caught:
                await client.post("llm", upstream.url + "/v1", b"{}", headers={}, timeout=Timeout())
    finally:
        await client.aclose()
    assert caught.value.node == "llm"
    assert "certificate" in str(caught.value).lower()
    assert upstream.requests == 0


async def test_an_https_redirect_is_the_nodes_error_not_followed(tls: TLS):
    target = FakeService()

    async def redirect(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 307, "headers": [(b"location", b"/v1/moved")]})
        await send({"type": "http.response.body", "body": b"moved"})

    client = UpstreamClient(ssl_context=tls.client)
    try:
        async with serve(redirect, ssl_certfile=tls.pem) as url, serve(target):
            with pytest.raises(UpstreamStatusError) as caught:
                await client.post("node", url + "/v1", b"{}", headers={}, timeout=Timeout())
    finally:
        await client.aclose()
    assert caught.value.upstream_status == 307
    assert target.requests == []


@pytest.mark.parametrize("status", [204, 205])
async def test_a_node_answering_no_content_is_refused_by_every_transport(scheme, status):
    # regression (issue 14): a 204 from a node became b'' passed downstream as if it were an answer
    async def blank(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"image/png")]})
        await send({"type": "http.response.body", "body": b""})

    client = scheme.client() or UpstreamClient()
    try:
        async with serve(blank, ssl_certfile=scheme.certfile) as url:
            with pytest.raises(UpstreamProtocolError, match=f"blank answered {status} with no content"):
                await client.post("blank", url + "/v1", b"{}", headers={}, timeout=Timeout())
    finally:
        await client.aclose()


async def test_a_get_reaches_the_node_over_every_transport(scheme):
    # a model list, TEI's /info, a health check: what components read from the servers they call
    seen = []

    async def info(scope, receive, send):
        if scope["type"] != "http":
            return
        seen.append((scope["method"], scope["path"]))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"model_id": "m"}'})

    client = scheme.client() or UpstreamClient()
    try:
        async with serve(info, ssl_certfile=scheme.certfile) as url:
            assert await client.get("tei", url + "/info", timeout=Timeout()) == (
                "application/json",
                b'{"model_id": "m"}',
            )
            with pytest.raises(UpstreamConnectError, match="gone"):
                await client.get("gone", unused_url(scheme.name) + "/info", timeout=Timeout())
    finally:
        await client.aclose()
    assert seen == [("GET", "/info")]
