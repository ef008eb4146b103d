"""Tracing across processes: a megaservice and two microservices, each its own process, and an OTLP receiver.

The services are `tests/tracing_services.py`; the receiver is `megaservice.testing.otlp` on a real
socket of this test's event loop. On, one request is one trace over the three `service.name`s with
each span under its caller's; off, no request reaches the receiver, no process imports OpenTelemetry's
SDK or exporter or runs their thread, and none imports OpenTelemetry at all unless FastAPI itself does.
"""

import asyncio
import contextlib
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from megaservice.settings import environment
from megaservice.testing import serve
from megaservice.testing.otlp import OTLPReceiver, ReceivedSpan, summary

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SERVICES = Path(__file__).with_name("tracing_services.py")
SDK = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.proto", "google.protobuf")
"""What tracing brings: the SDK, the exporter, the protobuf messages (and their thread)."""
FASTAPI_IMPORTS_OTEL = (
    "opentelemetry"
    in subprocess.run(
        [sys.executable, "-c", "import sys, fastapi; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
)
"""FastAPI 0.16x imports OpenTelemetry's API itself (its own telemetry, off until a global provider is set)."""
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


class Process:
    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url

    async def debug(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"{self.url}/debug/process")
            return answer.json()


@contextlib.asynccontextmanager
async def started(role: str, env: dict[str, str], *args: str) -> AsyncIterator[Process]:
    log = tempfile.TemporaryFile()  # noqa: SIM115  # closed once the process has ended
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SERVICES), role, *args, env=env, stdout=subprocess.PIPE, stderr=log
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode()
        if not line.startswith("port "):
            await proc.wait()
            log.seek(0)
            raise AssertionError(f"{role} did not start: {line}{log.read().decode()[-3000:]}")
        yield Process(proc, f"http://127.0.0.1:{int(line.split()[1])}")
    finally:
        if proc.returncode is None:
            proc.terminate()  # SIGTERM: the service stops, exporting what is left
        async with asyncio.timeout(20):
            await proc.wait()
        log.close()


@contextlib.asynccontextmanager
async def pipeline(env: dict[str, str]) -> AsyncIterator[tuple[Process, Process, Process]]:
    base = {**environment(), "PYTHONPATH": str(SERVICES.parent.parent), **env}
    async with (
        started("retriever", base) as retriever,
        started("llm", {**base, "OTEL_SERVICE_NAME": "llm-test"}) as llm,
        started(
            "chatqna",
            base,
            "--upstream",
            f"retriever={retriever.url}/v1/retrieval",
            "--upstream",
            f"llm={llm.url}/v1/chat/completions",
        ) as chatqna,
    ):
        yield chatqna, retriever, llm


async def ask(chatqna: Process, *, stream: bool, traceparent: str | None = None) -> httpx.Response:
    headers = {"traceparent": traceparent} if traceparent else {}
    async with httpx.AsyncClient(timeout=20) as client:
        answer = await client.post(
            f"{chatqna.url}/v1/chatqna", json={"question": "spans?", "stream": stream}, headers=headers
        )
        await answer.aread()
    assert answer.status_code == 200, answer.text
    return answer


def one(spans: list[ReceivedSpan], name: str, service: str) -> ReceivedSpan:
    found = [span for span in spans if span.name == name and span.service == service]
    assert len(found) == 1, (name, service, [(s.name, s.service) for s in spans])
    return found[0]


async def test_one_request_is_one_trace_across_three_processes():
    receiver = OTLPReceiver()
    async with serve(receiver) as url:
        env = {"TELEMETRY_ENDPOINT": f"{url}/v1/traces", "OTEL_BSP_SCHEDULE_DELAY": "100"}
        async with pipeline(env) as (chatqna, _, _):
            await ask(chatqna, stream=False, traceparent=f"00-{TRACE_ID}-{CALLER_SPAN}-01")
            streamed = await ask(chatqna, stream=True)
            assert streamed.text.count("data:") == 6 and "processes" in streamed.text
        # every process has exported what it had by the time it stopped
        traces = receiver.traces()
    assert len(traces) == 2, [summary(spans) for spans in traces.values()]
    spans = traces.pop(TRACE_ID)
    streamed_spans = next(iter(traces.values()))
    for trace in (spans, streamed_spans):
        assert {span.service for span in trace} == {"chatqna", "retriever", "llm-test"}
        assert len(trace) == 8, [(s.name, s.service) for s in trace]  # chatqna 1 + 2 x 2, retriever 2, llm 1

        server = one(trace, "POST /v1/chatqna", "chatqna")
        assert server.kind == "server"
        for node, route, service in (
            ("retriever", "POST /v1/retrieval", "retriever"),
            ("llm", "POST /v1/chat/completions", "llm-test"),
        ):
            node_span = one(trace, f"node {node}", "chatqna")
            client = one(trace, f"POST {node}", "chatqna")
            served = one(trace, route, service)
            assert node_span.parent_id == server.span_id
            assert client.parent_id == node_span.span_id and client.kind == "client"
            assert served.parent_id == client.span_id and served.kind == "server"
            assert served.attributes["http.response.status_code"] == 200
        search = one(trace, "retrieval.search", "retriever")
        assert search.parent_id == one(trace, "POST /v1/retrieval", "retriever").span_id
        assert search.attributes["megaservice.retrieved_docs"] == 3
        assert all(
            "megaservice.input" not in span.attributes and "megaservice.output" not in span.attributes for span in trace
        )
    assert one(spans, "POST /v1/chatqna", "chatqna").parent_id == CALLER_SPAN  # the caller's traceparent
    assert one(streamed_spans, "POST /v1/chatqna", "chatqna").parent_id is None
    llm_node = one(spans, "node llm", "chatqna")
    assert (llm_node.attributes["gen_ai.usage.input_tokens"], llm_node.attributes["gen_ai.usage.output_tokens"]) == (
        11,
        5,
    )
    assert one(spans, "node retriever", "chatqna").attributes["megaservice.retrieved_docs"] == 3
    assert one(streamed_spans, "node llm", "chatqna").attributes["megaservice.stream.events"] == 6


@pytest.mark.parametrize(
    "off",
    [
        {"TELEMETRY_ENDPOINT": "", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "", "OTEL_EXPORTER_OTLP_ENDPOINT": ""},
        {"OTEL_SDK_DISABLED": "true"},  # the receiver's URL is set too: the switch wins
    ],
    ids=["blank-endpoints", "sdk-disabled"],
)
async def test_nothing_is_sent_or_imported_when_tracing_is_off(off):
    receiver = OTLPReceiver()
    async with serve(receiver) as url:
        env = {
            "TELEMETRY_ENDPOINT": f"{url}/v1/traces",
            "OTEL_SERVICE_NAME": "off",
            "MEGASERVICE_TRACING_CONTENT": "1",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            **off,
        }
        async with pipeline(env) as processes:
            chatqna, retriever, llm = processes
            await ask(chatqna, stream=False, traceparent=f"00-{TRACE_ID}-{CALLER_SPAN}-01")
            await ask(chatqna, stream=True)
            for process in processes:
                seen = await process.debug()
                assert seen["tracing"] is False
                assert seen["megaservice_otel"] is False
                assert not [name for name in seen["opentelemetry_modules"] if name.startswith(SDK)]
                if not FASTAPI_IMPORTS_OTEL:
                    assert seen["opentelemetry_modules"] == []
                assert not [name for name in seen["threads"] if "span" in name.lower() or "otel" in name.lower()]
            # the megaservice passes no trace context on when off
            assert (await retriever.debug())["traceparents"] == [None, None]
            assert (await llm.debug())["traceparents"] == [None, None]
        await asyncio.sleep(0.3)  # more than the schedule delay an exporter would have used
    assert receiver.requests == 0
