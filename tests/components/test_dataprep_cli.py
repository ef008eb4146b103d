"""`megaservice ingest` against a real dataprep service over a socket (PostgreSQL, MiniLM)."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from typer.testing import CliRunner

from megaservice.cli.app import app
from megaservice.cli.ingest import Outcome, collect, run
from megaservice.components._store import Store, StoreSettings
from megaservice.components.dataprep import DataprepSettings, create_service
from megaservice.components.dataprep.embedder import load_embedder
from megaservice.components.embedding.minilm import MiniLM
from megaservice.testing import serve, unused_url
from megaservice.testing.documents import make_docx, make_pdf
from megaservice.testing.postgres import EmbeddedPostgres
from tests.components.test_dataprep_service import pages_app, stored_chunks, wait_ready

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
def store_settings(postgres: EmbeddedPostgres) -> StoreSettings:
    """The session's PostgreSQL, a collection of this test's own."""
    return postgres.store_settings(collection=f"cli_{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def dataprep_url(store_settings: StoreSettings, minilm: MiniLM, upstream_client: None) -> AsyncIterator[str]:
    settings = DataprepSettings(store=store_settings, allow_private_urls=True)
    service = create_service(settings, embedder=load_embedder(settings, minilm=minilm))
    async with serve(service.app) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await wait_ready(client)).status_code == 200
        yield url


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """docs/ with nested files, two README.md in two folders, an unsupported file, a hidden folder, an empty file."""
    docs = tmp_path / "docs"
    for folder in ("guides", "other", ".git"):
        (docs / folder).mkdir(parents=True)
    (docs / "guides" / "README.md").write_text("# Guide\n\nPress the green button to start the engine.")
    (docs / "other" / "README.md").write_text("# Other\n\nThe red lever stops the conveyor belt.")
    (docs / "manual.pdf").write_bytes(make_pdf(["Page one: safety.", "Page two: wear gloves near the press."]))
    (docs / "policy.docx").write_bytes(make_docx(["Visitors sign in at the front desk."]))
    (docs / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (docs / ".git" / "notes.txt").write_text("hidden")
    (docs / ".hidden.md").write_text("hidden too")
    (docs / "empty.txt").write_bytes(b"")
    return docs


def test_collect_walks_folders_and_reports_what_it_skips(tree: Path, tmp_path: Path):
    single = tmp_path / "single.csv"
    single.write_text("a,b\n1,2\n")
    outcome = Outcome()
    uploads = collect([tree, single, tmp_path / "nowhere.txt", tmp_path / "docs" / "photo.png"], outcome)
    assert [u.name for u in uploads] == [
        "docs/empty.txt",
        "docs/manual.pdf",
        "docs/policy.docx",
        "docs/guides/README.md",
        "docs/other/README.md",
        "single.csv",
    ]
    skipped = {Path(path).name: why for path, why in outcome.skipped}
    assert skipped == {".git": "hidden folder", ".hidden.md": "hidden file", "photo.png": "not a type dataprep reads"}
    assert len(outcome.skipped) == 4  # photo.png twice: in the folder, and named on its own
    assert outcome.failed == [(str(tmp_path / "nowhere.txt"), "no such file or folder")]


async def test_run_ingests_and_reports_failures_with_reasons(tree, dataprep_url, store_settings):
    outcome = Outcome()
    uploads = collect([tree], outcome)
    await run(uploads, [], outcome, dataprep=dataprep_url, chunk_size=200, chunk_overlap=20)
    assert sorted(name for name, _ in outcome.ingested) == [
        "docs/guides/README.md",
        "docs/manual.pdf",
        "docs/other/README.md",
        "docs/policy.docx",
    ]
    assert all(chunks >= 1 for _, chunks in outcome.ingested)
    assert outcome.failed == [("docs/empty.txt", "HTTP 400: docs/empty.txt: the file is empty")]
    store = await Store.open(store_settings)
    try:
        files = {info.source: info.chunks for info in await store.files()}
        chunks = await stored_chunks(store)
    finally:
        await store.aclose()
    assert files == dict(outcome.ingested)
    assert sum(files.values()) == outcome.chunks == len(chunks)
    manual = [row.metadata for row in chunks if row.source == "docs/manual.pdf"]
    assert {meta["page"] for meta in manual} | {meta.get("page_end", 1) for meta in manual} == {1, 2}


async def test_the_command_prints_a_summary_and_fails_when_a_file_failed(tree, dataprep_url):
    runner = CliRunner()
    args = ["ingest", str(tree), "--dataprep", dataprep_url, "--chunk-size", "300"]
    result = await anyio.to_thread.run_sync(runner.invoke, app, args)
    assert result.exit_code == 1, result.output
    assert "4 ingested" in result.output and "3 skipped" in result.output and "1 failed" in result.output
    assert "the file is empty" in result.output
    good = await anyio.to_thread.run_sync(
        runner.invoke, app, ["ingest", str(tree / "guides"), "--dataprep", dataprep_url]
    )
    assert good.exit_code == 0, good.output
    assert "1 ingested" in good.output and "0 failed" in good.output


async def test_urls_are_ingested_and_a_bad_one_is_reported(dataprep_url):
    async with serve(pages_app()) as site:
        outcome = await run([], [f"{site}/tides", f"{site}/missing"], Outcome(), dataprep=dataprep_url)
    assert [name for name, _ in outcome.ingested] == [f"{site}/tides"]
    assert outcome.failed == [(f"{site}/missing", f"HTTP 400: {site}/missing: answered HTTP 404")]


async def test_a_dataprep_that_is_not_there_fails_every_file_with_the_reason(tree):
    outcome = Outcome()
    uploads = collect([tree / "guides"], outcome)
    await run(uploads, ["https://example.org/"], outcome, dataprep=unused_url(), wait=0.2)
    assert [name for name, _ in outcome.failed] == ["guides/README.md", "https://example.org/"]
    assert all("is not ready" in why for _, why in outcome.failed)


def test_the_command_needs_something_to_ingest():
    result = CliRunner().invoke(app, ["ingest"])
    assert result.exit_code == 2
    assert "give files or folders" in result.output
