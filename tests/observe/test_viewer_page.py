"""The trace viewer in a real browser (Debian's chromium, headless, driven by Playwright), fed by real processes.

The spans come from the three service processes of `tests/tracing_services.py`; the viewer runs
in this test's event loop. A screenshot goes to tests/artifacts/trace-viewer.png (git-ignored);
with `MEGASERVICE_UPDATE_SCREENSHOT=1` also to docs/images/trace-viewer.png, docs/observability.md's.
"""

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from megaservice.observe import TraceViewer
from megaservice.testing import serve
from tests.gateway.test_page import ARGS, CHROMIUM
from tests.test_tracing_processes import CALLER_SPAN, TRACE_ID, ask, pipeline

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHOT = ROOT / "tests" / "artifacts" / "trace-viewer.png"
DOCS_IMAGE = ROOT / "docs" / "images" / "trace-viewer.png"


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (Debian's; Playwright's own is not used)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def test_the_page_lists_the_traces_and_shows_one_as_a_waterfall(browser):
    viewer = TraceViewer()
    async with serve(viewer) as url:
        env = {"TELEMETRY_ENDPOINT": f"{url}/v1/traces", "OTEL_BSP_SCHEDULE_DELAY": "100"}
        async with pipeline(env) as (chatqna, _, _):
            await ask(chatqna, stream=True)
            await ask(chatqna, stream=False, traceparent=f"00-{TRACE_ID}-{CALLER_SPAN}-01")
        assert len(viewer.store) == 2  # the services have stopped, exporting what they held

        page = await browser.new_page(viewport={"width": 1280, "height": 640})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(url)
        rows = page.get_by_test_id("trace-row")
        await rows.nth(1).wait_for()
        assert await rows.count() == 2
        first = rows.first
        assert await first.get_attribute("data-trace") == TRACE_ID  # the latest first
        text = await first.text_content() or ""
        assert "POST /v1/chatqna" in text and "llm-test" in text and "retriever" in text and "ok" in text
        assert "2 traces, 16 spans held" in (await page.get_by_test_id("stats").text_content() or "")

        await first.click()
        spans = page.get_by_test_id("span-row")
        await spans.nth(7).wait_for()
        assert await spans.count() == 8
        assert "POST /v1/chatqna" in (await page.get_by_test_id("trace-title").text_content() or "")
        llm_node = spans.filter(has_text="node llm")
        assert "input_tokens=11" in (await llm_node.text_content() or "")
        assert "output_tokens=5" in (await llm_node.text_content() or "")
        search = spans.filter(has_text="retrieval.search")
        await search.click()
        assert '"megaservice.retrieved_docs": 3' in (await search.locator(".detail").text_content() or "")
        assert page.url.endswith(f"#trace={TRACE_ID}")

        SHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOT), full_page=True)
        if os.environ.get("MEGASERVICE_UPDATE_SCREENSHOT") == "1":
            DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SHOT, DOCS_IMAGE)

        await page.get_by_test_id("back").click()
        await rows.nth(1).wait_for()
        assert errors == []
