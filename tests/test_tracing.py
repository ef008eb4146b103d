"""Tracing in one process: the settings, the spans of a served megaservice, `traceparent` on every transport."""

import asyncio
import base64
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from megaservice import LLMParams, MicroService, ServiceOrchestrator, ServiceRoleType, ServiceType, tracing
from megaservice._transport import pool
from megaservice._transport.asgi import ASGITransport
from megaservice.client import UpstreamClient
from megaservice.exceptions import ConfigurationError
from megaservice.resilience import Timeout
from megaservice.settings import Settings
from megaservice.testing import FakeLLM, FakeRetriever, FakeService, serve
from megaservice.testing.otlp import OTLPReceiver, ReceivedSpan, summary, tree
from megaservice.tracing import NO_SPAN, TracingSettings

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


# -- settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, None),
        ({"TELEMETRY_ENDPOINT": ""}, None),  # OPEA's compose files pass it blank when unset: off
        ({"TELEMETRY_ENDPOINT": "http://jaeger:4318/v1/traces"}, "http://jaeger:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4318/"}, "https://c:4318/v1/traces"),
        (
            {"TELEMETRY_ENDPOINT": "http://a:4318/v1/traces", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://b:4318"},
            "http://a:4318/v1/traces",
        ),
        ({"TELEMETRY_ENDPOINT": "http://a:4318/v1/traces", "OTEL_SDK_DISABLED": "true"}, None),
    ],
)
def test_the_endpoint_variables_turn_tracing_on(environ, url):
    settings = Settings.from_env(environ).tracing
    assert settings.traces_url == url
    assert settings.enabled is (url is not None)


def test_a_grpc_endpoint_is_refused_naming_the_variable():
    with pytest.raises(ConfigurationError, match=r"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.*4318"):
        TracingSettings.from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "grpc://jaeger:4317"})


def test_content_tracing_has_a_switch_and_the_genai_alias():
    assert TracingSettings.from_env({}).content is False
    assert TracingSettings.from_env({"MEGASERVICE_TRACING_CONTENT": "1"}).content is True
    assert TracingSettings.from_env({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}).content is True


def test_off_starts_nothing_and_spans_cost_nothing():
    assert tracing.start(TracingSettings(), "svc") is False
    assert tracing.tracer is None
    with tracing.span("work", items=3) as work:
        work.set("tokens", 4)
        work.content("text", "secret")
    assert work is NO_SPAN and work.recording is False
    with pytest.raises(ConfigurationError):
        tracing.stop()


def test_without_the_extra_turning_tracing_on_names_it():
    code = (
        "import sys\nsys.modules['opentelemetry'] = None\n"
        "from megaservice import tracing\n"
        "try:\n"
        "    tracing.start(tracing.TracingSettings(endpoint='http://127.0.0.1:9/v1/traces'), 'x')\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("MissingDependencyError") and "megaservice[tracing]" in out


# -- helpers ------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[tuple[OTLPReceiver, str]]:
    receiver = OTLPReceiver()
    async with serve(receiver) as url:
        yield receiver, f"{url}/v1/traces"


@contextlib.asynccontextmanager
async def traced(endpoint: str, *, content: bool = False) -> AsyncIterator[None]:
    """Tracing on in this process, as a service's lifespan turns it on; flushed at the end."""
    assert tracing.start(TracingSettings(endpoint=endpoint, content=content), "test-process")
    try:
        yield
    finally:
        await asyncio.to_thread(tracing.stop)


def by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [span.name for span in spans]
    return named


def megaservice_of(llm_url: str, retriever_url: str, environ: dict[str, str]) -> MicroService:
    """A megaservice (retriever → llm) whose settings come from `environ`, serving POST /v1/ask."""
    orchestrator = ServiceOrchestrator(settings=Settings.from_env(environ))
    nodes = []
    for name, url, kind in (("retriever", retriever_url, ServiceType.RETRIEVER), ("llm", llm_url, ServiceType.LLM)):
        host, _, port = url.removeprefix("http://").partition(":")
        node = MicroService(name, host=host, port=int(port), endpoint="/", use_remote_service=True, service_type=kind)
        orchestrator.add(node)
        nodes.append(node)
    orchestrator.flow_to(nodes[0], nodes[1])
    service = MicroService(
        "asker", service_role=ServiceRoleType.MEGASERVICE, port=0, settings=Settings.from_env(environ)
    )

    async def ask(request: Request) -> Any:
        body = await request.json()
        params = LLMParams(stream=bool(body.get("stream")), max_tokens=8)
        results, graph = await orchestrator.schedule({"text": body["question"]}, llm_parameters=params)
        answer = results[graph.all_leaves()[-1]]
        return answer if not isinstance(answer, dict) else {"answer": answer["choices"][0]["message"]["content"]}

    service.add_route("/v1/ask", ask, methods=["POST"])
    return service


async def ask(
    llm: FakeService, retriever: FakeService, environ: dict[str, str], *, stream: bool = False
) -> httpx.Response:
    async with serve(llm) as llm_url, serve(retriever) as retriever_url:
        service = megaservice_of(llm_url, retriever_url, environ)
        async with serve(service.app) as url, httpx.AsyncClient(base_url=url) as client:
            body = {"question": "what is traced?", "stream": stream}
            answer = await client.post("/v1/ask", json=body, headers={"traceparent": TRACEPARENT})
            await answer.aread()
    return answer


# -- a served megaservice -----------------------------------------------------------------------------


async def test_a_request_to_a_megaservice_is_one_trace_continuing_the_callers(upstream_client):
    llm, retriever = FakeLLM(), FakeRetriever()
    async with receiving() as (receiver, endpoint):
        answer = await ask(llm, retriever, {"TELEMETRY_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "asker-svc"})
        assert answer.status_code == 200
        spans = await receiver.wait_for(lambda spans: len(spans) >= 5)
    assert {span.trace_id for span in spans} == {TRACE_ID}
    named = by_name(spans)
    server = named["POST /v1/ask"]
    assert (server.kind, server.parent_id, server.service) == ("server", CALLER_SPAN, "asker-svc")
    assert server.attributes["http.response.status_code"] == 200
    for node, fake in (("retriever", retriever), ("llm", llm)):
        node_span, client_span = named[f"node {node}"], named[f"POST {node}"]
        assert node_span.parent_id == server.span_id
        assert node_span.attributes["megaservice.status"] == "ok"
        assert (client_span.kind, client_span.parent_id) == ("client", node_span.span_id)
        assert fake.headers[0]["traceparent"].startswith(f"00-{TRACE_ID}-{client_span.span_id}-")
    assert named["node retriever"].attributes["megaservice.retrieved_docs"] >= 1
    llm_span = named["node llm"]
    assert llm_span.attributes["gen_ai.usage.output_tokens"] == 0  # what the fake's `usage` says
    assert llm_span.attributes["gen_ai.usage.input_tokens"] == 0
    assert not any(
        key.startswith("megaservice.input") or key == "megaservice.output" for s in spans for key in s.attributes
    )


async def test_content_is_recorded_only_when_its_switch_is_on(upstream_client):
    async with receiving() as (receiver, endpoint):
        environ = {"TELEMETRY_ENDPOINT": endpoint, "MEGASERVICE_TRACING_CONTENT": "1"}
        answer = await ask(FakeLLM(), FakeRetriever(), environ)
        spans = await receiver.wait_for(lambda spans: len(spans) >= 5)
    llm_span = by_name(spans)["node llm"]
    assert "what is traced?" in llm_span.attributes["megaservice.input"]  # the prompt sent to the LLM
    assert llm_span.attributes["megaservice.output"] == answer.json()["answer"]


async def test_a_streaming_node_span_lasts_until_its_stream_ends(upstream_client):
    async with receiving() as (receiver, endpoint):
        answer = await ask(
            FakeLLM([f" t{i}" for i in range(12)]), FakeRetriever(), {"TELEMETRY_ENDPOINT": endpoint}, stream=True
        )
        assert answer.text.count("data:") >= 12
        spans = await receiver.wait_for(lambda spans: len(spans) >= 5)
    named = by_name(spans)
    node, client, server = named["node llm"], named["POST llm"], named["POST /v1/ask"]
    assert node.attributes["megaservice.stream"] is True
    assert node.attributes["megaservice.stream.events"] >= 12
    assert client.attributes["http.response.status_code"] == 200
    assert (
        client.end_ns <= node.end_ns <= server.end_ns
    )  # the client span ends at the headers, the node's with the body


async def test_a_failing_node_marks_its_spans_as_errors(upstream_client):
    async with receiving() as (receiver, endpoint):
        answer = await ask(FakeLLM(), FakeService(status=503), {"TELEMETRY_ENDPOINT": endpoint})
        assert answer.status_code == 502
        spans = await receiver.wait_for(lambda spans: len(spans) >= 3)
    named = by_name(spans)
    node, client = named["node retriever"], named["POST retriever"]
    for span in (node, client):
        assert span.status == "error"
        assert span.attributes["http.response.status_code"] == 503
        assert span.attributes["error.type"] == "upstream_status"
    assert named["POST /v1/ask"].attributes["http.response.status_code"] == 502
    assert "node llm" not in named


# -- traceparent on every transport -------------------------------------------------------------------


class Recorder:
    """An ASGI app answering `{}` to any request, recording each request's headers."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})


@contextlib.asynccontextmanager
async def node_url(transport: str, app: Recorder, tls: Any) -> AsyncIterator[tuple[UpstreamClient, str]]:
    if transport == "asgi":
        client = UpstreamClient(mounts={"http://in-process:9": ASGITransport(app)})
        yield client, "http://in-process:9/v1/x"
    else:
        client = UpstreamClient(ssl_context=tls.client)
        async with serve(app, ssl_certfile=tls.pem if transport == "https" else None) as url:
            yield client, f"{url}/v1/x"
    await client.aclose()


@pytest.mark.parametrize("transport", ["http", "https", "asgi"])
@pytest.mark.parametrize("method", ["post", "get", "open_stream"])
async def test_every_transport_sends_the_client_spans_traceparent(transport, method, tls):
    app = Recorder()
    timeout = Timeout(total=5)
    async with receiving() as (receiver, endpoint), node_url(transport, app, tls) as (client, url):
        async with traced(endpoint):
            with tracing.span("caller"):
                if method == "post":
                    await client.post("node", url, b"{}", headers={"x-own": "1"}, timeout=timeout)
                elif method == "get":
                    await client.get("node", url, headers={"x-own": "1"}, timeout=timeout)
                else:
                    answer = await client.open_stream("node", url, b"{}", headers={"x-own": "1"}, timeout=timeout)
                    async for _ in answer.content.iter_any():
                        pass
                    answer.release()
            await client.get("node", url, headers={"x-own": "2"}, timeout=timeout)  # outside a trace
        spans = await receiver.wait_for(lambda spans: len(spans) >= 2)
    named = by_name(spans)
    caller, call = named["caller"], named[f"{'GET' if method == 'get' else 'POST'} node"]
    assert (call.kind, call.parent_id, call.trace_id) == ("client", caller.span_id, caller.trace_id)
    assert call.attributes["url.full"] == url
    traced_call, untraced = app.headers
    assert traced_call["traceparent"].startswith(f"00-{call.trace_id}-{call.span_id}-")
    assert traced_call["x-own"] == "1"
    assert "traceparent" not in untraced and untraced["x-own"] == "2"


async def test_traced_calls_leave_the_pools_header_cache_alone(upstream_client):
    fake = FakeService()
    client = UpstreamClient()
    async with receiving() as (_, endpoint), serve(fake) as url:
        await client.post("node", url, b"{}", headers={"x-cached": "yes"}, timeout=Timeout(total=5))
        cached = len(pool._header_blocks)
        async with traced(endpoint):
            for _ in range(5):
                with tracing.span("caller"):
                    await client.post("node", url, b"{}", headers={"x-cached": "yes"}, timeout=Timeout(total=5))
        await client.aclose()
    assert len(pool._header_blocks) == cached
    parents = {headers["traceparent"] for headers in fake.headers[1:]}
    assert len(parents) == 5 and all(headers["x-cached"] == "yes" for headers in fake.headers)


async def test_work_spans_nest_and_convert_their_attributes():
    async with receiving() as (receiver, endpoint):
        async with traced(endpoint, content=True):
            with tracing.span("outer", {"gen_ai.request.model": "m"}, items=2) as outer:
                assert outer.recording
                with tracing.span("inner", shape=(1, 2), thing=object) as inner:
                    inner.set("tokens", 7)
                    inner.content("text", b"bytes are decoded")
                with pytest.raises(ValueError), tracing.span("failing"):
                    raise ValueError("boom")
        spans = await receiver.wait_for(lambda spans: len(spans) >= 3)
    named = by_name(spans)
    outer_span, inner_span, failing = named["outer"], named["inner"], named["failing"]
    assert outer_span.attributes == {"gen_ai.request.model": "m", "items": 2}
    assert inner_span.parent_id == failing.parent_id == outer_span.span_id
    assert inner_span.attributes["shape"] == [1, 2]
    assert inner_span.attributes["thing"] == str(object)
    assert inner_span.attributes["tokens"] == 7
    assert inner_span.attributes["text"] == "bytes are decoded"
    assert (failing.status, failing.status_message, failing.attributes["error.type"]) == ("error", "boom", "ValueError")


# -- the receiver -------------------------------------------------------------------------------------


def export_request() -> Any:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    name = resource_spans.resource.attributes.add()
    name.key, name.value.string_value = "service.name", "by-hand"
    spans = resource_spans.scope_spans.add()
    spans.scope.name = "hand"
    for span_id, parent, title in ((b"\x01" * 8, b"", "root"), (b"\x02" * 8, b"\x01" * 8, "child")):
        span = spans.spans.add()
        span.trace_id, span.span_id, span.parent_span_id, span.name = b"\xab" * 16, span_id, parent, title
        span.kind, span.start_time_unix_nano, span.end_time_unix_nano = 2, 1_000_000, 3_500_000
        count = span.attributes.add()
        count.key, count.value.int_value = "count", 3
        listed = span.attributes.add()
        listed.key = "listed"
        listed.value.array_value.values.add().string_value = "a"
    spans.spans[1].status.code, spans.spans[1].status.message = 2, "it broke"
    return request


@pytest.mark.parametrize("encoding", ["protobuf", "protobuf+gzip", "json"])
async def test_the_receiver_decodes_what_exporters_send(encoding):
    import gzip

    from google.protobuf import json_format

    request = export_request()
    if encoding == "json":
        message = json_format.MessageToDict(request)
        for span in message["resourceSpans"][0]["scopeSpans"][0]["spans"]:  # OTLP's JSON: ids in hex
            for key in ("traceId", "spanId", "parentSpanId"):
                if key in span:
                    span[key] = base64.b64decode(span[key]).hex()
        body, headers = json.dumps(message).encode(), {"content-type": "application/json"}
    else:
        body, headers = request.SerializeToString(), {"content-type": "application/x-protobuf"}
        if encoding.endswith("gzip"):
            body, headers["content-encoding"] = gzip.compress(body), "gzip"
    receiver = OTLPReceiver()
    async with serve(receiver) as url, httpx.AsyncClient(base_url=url) as client:
        answer = await client.post("/v1/traces", content=body, headers=headers)
        assert answer.status_code == 200
        assert (await client.post("/v1/traces", content=b"\xff junk", headers=headers)).status_code == 400
        assert (await client.post("/v1/logs", content=body, headers=headers)).status_code == 404
    assert receiver.requests == 3
    root, child = receiver.traces()["ab" * 16]
    assert (root.name, root.parent_id, root.service, root.kind, root.scope) == (
        "root",
        None,
        "by-hand",
        "server",
        "hand",
    )
    assert (child.parent_id, child.status, child.status_message) == ("01" * 8, "error", "it broke")
    assert child.attributes == {"count": 3, "listed": ["a"]}
    assert child.duration_ms == 2.5
    line = summary([root, child])
    assert line.startswith(f"trace {'ab' * 16}  root [by-hand]  2.5 ms  2 spans") and "ERRORS: 1" in line
    assert tree([root, child]).splitlines() == [
        "  root [by-hand] +0.0 ms 2.5 ms",
        "    child [by-hand] +0.0 ms 2.5 ms  ERROR it broke",
    ]


async def test_the_receiver_runs_as_a_process_printing_a_line_per_trace():
    command = [sys.executable, "-m", "megaservice.testing.otlp", "--port", "0", "--settle", "0.2", "--tree"]
    proc = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            endpoint = (await proc.stdout.readline()).decode().split()[-1]
            assert endpoint.endswith("/v1/traces")
            async with traced(endpoint):
                with tracing.span("outer"), tracing.span("inner"):
                    pass
            lines = [(await proc.stdout.readline()).decode() for _ in range(3)]
    finally:
        proc.terminate()
        await proc.wait()
    assert lines[0].startswith("trace ") and "outer [test-process]" in lines[0] and "2 spans" in lines[0]
    assert lines[1].startswith("  outer [test-process] +0.0 ms")
    assert lines[2].startswith("    inner [test-process] +")


# -- components and OPEA code -------------------------------------------------------------------------


async def test_the_llm_services_work_span_has_the_usage_and_with_content_the_texts(upstream_client):
    from megaservice.components.llm import LLMSettings, create_service
    from megaservice.testing import client_for

    async with receiving() as (receiver, endpoint), serve(FakeLLM([" Hello", " there"])) as llm_url:
        settings = LLMSettings.from_env({"LLM_ENDPOINT": llm_url})
        async with traced(endpoint, content=True), client_for(create_service(settings).app) as service:
            body = {"messages": [{"role": "user", "content": "say hello"}], "model": "m"}
            answer = await service.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200
        spans = await receiver.wait_for(lambda spans: len(spans) >= 3)
    named = by_name(spans)
    server, work = named["POST /v1/chat/completions"], named["llm.generate"]
    call = next(span for span in spans if span.kind == "client")
    assert (work.parent_id, call.parent_id) == (server.span_id, work.span_id)
    assert work.attributes["gen_ai.request.model"] == "m"
    assert (work.attributes["gen_ai.usage.input_tokens"], work.attributes["gen_ai.usage.output_tokens"]) == (0, 0)
    assert "say hello" in work.attributes["gen_ai.prompt"]
    assert work.attributes["gen_ai.completion"] == " Hello there"


async def test_opea_codes_telemetry_decorator_makes_spans_while_tracing_is_on():
    from megaservice.compat.opea import opea_telemetry, tracer

    @opea_telemetry
    async def embedding(text: str) -> str:
        with tracer.start_as_current_span("inner") as inner:
            inner.set_attribute("size", len(text))
        return text

    assert await embedding("off") == "off"  # no span, no error
    async with receiving() as (receiver, endpoint):
        async with traced(endpoint):
            assert await embedding("on") == "on"
        spans = await receiver.wait_for(lambda spans: len(spans) >= 2)
    named = by_name(spans)
    outer = named["test_opea_codes_telemetry_decorator_makes_spans_while_tracing_is_on.<locals>.embedding"]
    assert named["inner"].parent_id == outer.span_id and named["inner"].attributes == {"size": 2}


class FoundTwo:
    """A retriever backend that finds two chunks for any query."""

    name = "found-two"

    async def start(self) -> None:
        pass

    async def ready(self) -> bool:
        return True

    async def search(self, search: Any) -> list[Any]:
        from megaservice.components._store.types import Hit

        return [Hit(i, "a.txt", i, f"chunk {i}", {"source": "a.txt"}, 0.1, 0.9) for i in range(2)]

    async def aclose(self) -> None:
        pass


async def test_the_retrievers_work_span_counts_the_documents_found():
    from megaservice.components.retriever import RetrieverSettings, create_service
    from megaservice.testing import client_for

    async with receiving() as (receiver, endpoint):
        service = create_service(RetrieverSettings(), FoundTwo())
        async with traced(endpoint), client_for(service.app) as client:
            answer = await client.post("/v1/retrieval", json={"text": "where?", "embedding": [0.1, 0.2], "k": 2})
            assert answer.status_code == 200 and len(answer.json()["retrieved_docs"]) == 2
        spans = await receiver.wait_for(lambda spans: len(spans) >= 2)
    named = by_name(spans)
    search = named["retrieval.search"]
    assert search.parent_id == named["POST /v1/retrieval"].span_id
    assert search.attributes == {"k": 2, "search_type": "similarity", "megaservice.retrieved_docs": 2}
