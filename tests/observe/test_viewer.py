"""TraceViewer on a real socket: spans in from OpenTelemetry's own exporter (and OTLP's JSON), the page and API out."""

import asyncio
import json
import subprocess
import sys

import httpx
import pytest

from megaservice import tracing
from megaservice.observe import TraceStore, TraceViewer
from megaservice.testing import serve
from megaservice.tracing import TracingSettings

pytestmark = pytest.mark.anyio


async def test_spans_from_the_sdks_exporter_are_listed_and_shown_as_a_waterfall():
    viewer = TraceViewer()
    async with serve(viewer) as url, httpx.AsyncClient(base_url=url) as client:
        assert tracing.start(TracingSettings(endpoint=f"{url}/v1/traces"), "viewer-test")
        try:
            with tracing.span("outer", {"megaservice.node": "llm"}), tracing.span("inner", tokens=3) as inner:
                inner.set("gen_ai.usage.output_tokens", 7)
            with pytest.raises(RuntimeError), tracing.span("failing"):
                raise RuntimeError("boom")
        finally:
            await asyncio.to_thread(tracing.stop)  # exports what it holds
        listed = (await client.get("/api/traces")).json()
        assert listed["held"] == {"traces": 2, "spans": 3} and listed["received_spans"] == 3
        failing, outer = listed["traces"]  # the most recent first
        assert (outer["root"], outer["services"], outer["spans"], outer["errors"]) == ("outer", ["viewer-test"], 2, 0)
        assert (failing["root"], failing["errors"]) == ("failing", 1)
        assert [t["trace_id"] for t in (await client.get("/api/traces?errors=1")).json()["traces"]] == [
            failing["trace_id"]
        ]
        assert (await client.get("/api/traces?service=nobody")).json()["traces"] == []
        trace = (await client.get(f"/api/traces/{outer['trace_id']}")).json()
        [root, child] = trace["spans"]
        assert (root["name"], root["depth"], root["key_attributes"]) == ("outer", 0, {"megaservice.node": "llm"})
        assert (child["name"], child["depth"], child["parent_id"]) == ("inner", 1, root["span_id"])
        assert child["key_attributes"] == {"gen_ai.usage.output_tokens": 7} and child["attributes"]["tokens"] == 3
        assert child["offset_ms"] >= 0 and child["offset_ms"] + child["duration_ms"] <= trace["duration_ms"] + 0.001
        shown = (await client.get(f"/api/traces/{failing['trace_id']}")).json()["spans"][0]
        assert (shown["status"], shown["status_message"]) == ("error", "boom")


async def test_otlp_json_is_received_too():
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "from-json"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "ab" * 16,
                                "spanId": "01" * 8,
                                "name": "GET /thing",
                                "kind": 2,
                                "startTimeUnixNano": "1000000",
                                "endTimeUnixNano": "4000000",
                            }
                        ]
                    }
                ],
            }
        ]
    }
    viewer = TraceViewer()
    async with serve(viewer) as url, httpx.AsyncClient(base_url=url) as client:
        answer = await client.post("/v1/traces", content=json.dumps(body), headers={"content-type": "application/json"})
        assert answer.status_code == 200 and answer.json() == {}
        junk = await client.post("/v1/traces", content=b"\xff", headers={"content-type": "application/x-protobuf"})
        assert junk.status_code == 400
        trace = (await client.get(f"/api/traces/{'AB' * 16}")).json()
    assert (trace["root"], trace["root_service"], trace["duration_ms"]) == ("GET /thing", "from-json", 3.0)
    assert trace["spans"][0]["kind"] == "server"
    assert viewer.store.received == 1


async def test_the_page_its_assets_and_the_errors_of_the_api():
    viewer = TraceViewer(TraceStore(max_traces=3, max_spans=10))
    async with serve(viewer) as url, httpx.AsyncClient(base_url=url) as client:
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert (
            '<script src="/static/viewer.js">' in page.text
            and "script-src 'self'" in page.headers["content-security-policy"]
        )
        for asset, kind in (("viewer.js", "text/javascript"), ("viewer.css", "text/css")):
            answer = await client.get(f"/static/{asset}")
            assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
        assert "/api/traces" in (await client.get("/static/viewer.js")).text
        assert (await client.get("/v1/ready")).json() == {"status": "ok"}
        listed = (await client.get("/api/traces")).json()
        assert listed["traces"] == [] and listed["limits"] == {"max_traces": 3, "max_spans": 10}
        assert (await client.get(f"/api/traces/{'0' * 32}")).status_code == 404
        assert (await client.get("/api/traces/not-an-id")).status_code == 404
        bad = await client.get("/api/traces?limit=many")
        assert bad.status_code == 400 and "limit" in bad.json()["error"]
        assert (await client.post("/api/traces")).status_code == 405
        assert (await client.get("/nothing")).status_code == 404


async def test_it_runs_as_a_process_on_two_ports_each_serving_the_whole_app():
    command = [sys.executable, "-m", "megaservice.observe", "--port", "0", "--ui-port", "0", "--max-traces", "7"]
    proc = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            otlp = (await proc.stdout.readline()).decode().split()[-1]
            ui = (await proc.stdout.readline()).decode().split()[-1]
        assert otlp.endswith("/v1/traces") and ui.endswith("/")
        assert tracing.start(TracingSettings(endpoint=otlp), "in-a-process")
        try:
            with tracing.span("sent"):
                pass
        finally:
            await asyncio.to_thread(tracing.stop)
        async with httpx.AsyncClient() as client:
            listed = (await client.get(f"{ui}api/traces")).json()
            same = (await client.get(otlp.replace("/v1/traces", "/api/traces"))).json()
    finally:
        proc.terminate()
        code = await proc.wait()
    assert [t["root"] for t in listed["traces"]] == ["sent"] and listed["limits"]["max_traces"] == 7
    assert same["traces"] == listed["traces"]
    assert code == 0  # SIGTERM: a clean stop
