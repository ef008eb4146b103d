"""The viewer as its own process, fed by three real service processes: one request, one trace, one waterfall.

The services are `tests/tracing_services.py` (a megaservice over a retriever and an LLM), started
as `tests/test_tracing_processes.py` starts them; the receiver is `python -m megaservice.observe`.
"""

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.test_tracing_processes import CALLER_SPAN, TRACE_ID, ask, pipeline

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@contextlib.asynccontextmanager
async def observer() -> AsyncIterator[tuple[str, str]]:
    """`python -m megaservice.observe` on free ports: (its traces URL, its viewer URL)."""
    command = [sys.executable, "-m", "megaservice.observe", "--port", "0", "--ui-port", "0"]
    proc = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            otlp = (await proc.stdout.readline()).decode().split()[-1]
            viewer = (await proc.stdout.readline()).decode().split()[-1]
        yield otlp, viewer
    finally:
        proc.terminate()
        await proc.wait()


async def test_a_request_across_three_processes_is_one_trace_in_the_viewer():
    async with observer() as (otlp, viewer):
        async with pipeline({"TELEMETRY_ENDPOINT": otlp, "OTEL_BSP_SCHEDULE_DELAY": "100"}) as (chatqna, _, _):
            await ask(chatqna, stream=False, traceparent=f"00-{TRACE_ID}-{CALLER_SPAN}-01")
        # the services have stopped, exporting what they held
        async with httpx.AsyncClient(base_url=viewer) as client:
            listed = (await client.get("api/traces")).json()
            trace = (await client.get(f"api/traces/{TRACE_ID}")).json()
            page = await client.get("")
    assert [t["trace_id"] for t in listed["traces"]] == [TRACE_ID]
    [summary] = listed["traces"]
    assert (summary["root"], summary["root_service"], summary["spans"], summary["errors"]) == (
        "POST /v1/chatqna",
        "chatqna",
        8,
        0,
    )
    assert set(summary["services"]) == {"chatqna", "retriever", "llm-test"}
    waterfall = [(row["depth"], row["service"], row["name"]) for row in trace["spans"]]
    assert waterfall == [
        (0, "chatqna", "POST /v1/chatqna"),  # its parent is the caller's span, not in the trace
        (1, "chatqna", "node retriever"),
        (2, "chatqna", "POST retriever"),
        (3, "retriever", "POST /v1/retrieval"),
        (4, "retriever", "retrieval.search"),
        (1, "chatqna", "node llm"),
        (2, "chatqna", "POST llm"),
        (3, "llm-test", "POST /v1/chat/completions"),
    ]
    rows = trace["spans"]
    assert rows[0]["parent_id"] == CALLER_SPAN and rows[0]["offset_ms"] == 0
    assert all(0 <= row["offset_ms"] <= trace["duration_ms"] for row in rows)
    assert rows[5]["key_attributes"]["gen_ai.usage.input_tokens"] == 11
    assert rows[5]["key_attributes"]["gen_ai.usage.output_tokens"] == 5
    assert rows[1]["key_attributes"]["megaservice.retrieved_docs"] == 3
    assert page.status_code == 200 and "/static/viewer.js" in page.text
