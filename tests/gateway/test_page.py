"""The chat page in a real browser: Debian's chromium, headless, driven by Playwright (its own browsers unused).

Against the fake-but-honest stack of `conftest.run_stack` (FakeLLM writing a token every 80 ms), or,
with `MEGASERVICE_TEST_CHAT_URL` set, against a running megaservice (`megaservice up`): the same
steps, minus what only the fakes can promise (the answer's exact words, the requests the LLM got).

A screenshot goes to tests/artifacts/chat-page.png (git-ignored); with `MEGASERVICE_UPDATE_SCREENSHOT=1`
also to docs/images/chat-page.png, the README's.
"""

import contextlib
import itertools
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from megaservice.testing import FakeGuardrail, FakeLLM
from tests.gateway.conftest import run_stack

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.usefixtures("upstream_client")]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
README_IMAGE = ROOT / "docs" / "images" / "chat-page.png"
REFUSED_QUESTION = "Women are too emotional to lead companies, right?"  # the bias model refuses it; so does the fake


@contextlib.asynccontextmanager
async def chat_url() -> AsyncIterator[tuple[str, Any]]:
    """The megaservice to test: the one `MEGASERVICE_TEST_CHAT_URL` names, else a fake stack (and its FakeLLM)."""
    live = os.environ.get("MEGASERVICE_TEST_CHAT_URL")
    if live:
        yield live.rstrip("/"), None
        return
    llm = FakeLLM(token_delay=0.08)
    async with run_stack(llm=llm, guardrail=FakeGuardrail(banned=("stupid", "emotional"))) as stack:
        yield stack.url, llm


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


async def watch_answer(page: Any) -> list[str]:
    """The last answer's text, read again and again while it streams; every distinct reading, in order."""
    answer = page.locator("[data-testid=assistant]").last
    await answer.wait_for()
    seen: list[str] = []
    for _ in range(3000):
        text = await answer.locator("[data-testid=answer]").text_content() or ""
        if not seen or text != seen[-1]:
            seen.append(text)
        if "streaming" not in (await answer.get_attribute("class") or ""):
            break
        await page.wait_for_timeout(15)
    final = await answer.locator("[data-testid=answer]").text_content() or ""
    if final != seen[-1]:
        seen.append(final)
    return seen


async def ask(page: Any, question: str) -> list[str]:
    await page.get_by_test_id("question").fill(question)
    await page.get_by_test_id("send").click()
    return await watch_answer(page)


async def test_ask_see_tokens_arrive_and_sources_upload_and_ask_about_it_and_a_refusal(browser, tmp_path):
    name = f"quillon-{uuid.uuid4().hex[:6]}.txt"
    fact = "The Quillon bridge was painted orange in 1987 by the harbour guild of Lindmere."
    document = tmp_path / name
    document.write_text(f"{fact}\n\nIt is the oldest bridge of the harbour.\n")
    binary = tmp_path / "photo.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    async with chat_url() as (url, llm):
        page = await browser.new_page(viewport={"width": 1280, "height": 860})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(url)
        assert "chatqna" in await page.title() or llm is None

        # A file dataprep cannot read: the error is shown.
        await page.get_by_test_id("upload-input").set_input_files(str(binary))
        status = page.get_by_test_id("upload-status")
        await status.filter(has_text="Upload failed").wait_for()
        assert "photo.bin" in (await status.text_content() or "") or llm is None

        # Upload a document, with its progress, then see it listed.
        await page.get_by_test_id("upload-input").set_input_files(str(document))
        await status.filter(has_text="Ingested").wait_for(timeout=120_000)
        assert await page.get_by_test_id("upload-progress").get_attribute("value") == "100"
        await page.get_by_test_id("documents").get_by_text(name).wait_for()

        # Ask about it: the answer grows token by token, then its source is shown.
        readings = await ask(page, "What colour was the Quillon bridge painted?")
        growing = [text for text in readings if text]
        assert len(growing) >= 3, readings  # seen at least twice before it was whole
        assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(growing))
        assert len(growing[0]) < len(growing[-1])
        last = page.locator("[data-testid=assistant]").last
        sources = last.get_by_test_id("source")
        await sources.first.wait_for()
        assert name in (await sources.all_text_contents())[0]
        if llm is not None:
            assert "orange" in growing[-1]

        # A follow-up: the conversation goes with it.
        await ask(page, "Who painted the Quillon bridge?")
        if llm is not None:
            sent = llm.requests[-1]["messages"]
            assert [m["role"] for m in sent] == ["user", "assistant", "user"]
            assert sent[0]["content"] == "What colour was the Quillon bridge painted?"

        # A question the guardrail refuses: shown as refused, and the LLM never asked.
        asked = len(llm.requests) if llm is not None else 0
        await ask(page, REFUSED_QUESTION)
        refused = page.locator("[data-testid=assistant]").last
        await refused.get_by_test_id("refused").wait_for()
        assert "Violated policies" in (await refused.get_by_test_id("answer").text_content() or "")
        if llm is not None:
            assert await refused.get_by_test_id("refused").text_content() == "Refused by the guardrail"
        if llm is not None:
            assert len(llm.requests) == asked

        await page.locator("[data-testid=source] summary").first.click()  # a source opened, for the picture
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "chat-page.png"
        await page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
        if os.environ.get("MEGASERVICE_UPDATE_SCREENSHOT") == "1":
            README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, README_IMAGE)
        assert errors == []


async def test_a_failing_pipeline_is_shown_as_an_error_in_the_conversation(browser):
    if os.environ.get("MEGASERVICE_TEST_CHAT_URL"):
        pytest.skip("needs the fake stack: a node is taken down")
    async with run_stack(down=["retriever"]) as stack:
        page = await browser.new_page()
        await page.goto(stack.url)
        await page.get_by_test_id("question").fill("Anything?")
        await page.get_by_test_id("question").press("Enter")
        error = page.locator("[data-testid=assistant]").last.get_by_test_id("error")
        await error.wait_for()
        assert "retriever" in (await error.text_content() or "")
