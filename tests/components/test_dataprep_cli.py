"""`megaservice ingest`: what it collects and how it names it, readiness, and a real dataprep (PostgreSQL, MiniLM)."""

import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from megaservice.cli.app import app
from megaservice.cli.ingest import DataprepNotReady, Outcome, collect, run
from megaservice.components._store import Store, StoreSettings
from megaservice.components.dataprep import DataprepSettings, create_service
from megaservice.components.dataprep.embedder import load_embedder
from megaservice.components.embedding.minilm import MiniLM
from megaservice.testing import serve, unused_url
from megaservice.testing.documents import make_docx, make_pdf
from megaservice.testing.postgres import EmbeddedPostgres
from tests.components.test_dataprep_service import pages_app, stored_chunks, wait_ready

pytestmark = pytest.mark.anyio


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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
async def test_urls_are_ingested_and_a_bad_one_is_reported(dataprep_url):
    async with serve(pages_app()) as site:
        outcome = await run([], [f"{site}/tides", f"{site}/missing"], Outcome(), dataprep=dataprep_url)
    assert [name for name, _ in outcome.ingested] == [f"{site}/tides"]
    assert outcome.failed == [(f"{site}/missing", f"HTTP 400: {site}/missing: answered HTTP 404")]


async def test_a_dataprep_that_is_not_there_is_one_error_at_once_naming_its_url(tree):
    # ux review D7: this waited `wait` seconds, then failed every file with the same reason
    outcome = Outcome()
    uploads = collect([tree / "guides"], outcome)
    url = unused_url()
    started = time.monotonic()
    with pytest.raises(
        DataprepNotReady, match=re.escape(f"cannot reach dataprep at {url}/v1/ready: ") + ".*megaservice serve dataprep"
    ):
        await run(uploads, ["https://example.org/"], outcome, dataprep=url, wait=60)
    assert time.monotonic() - started < 5
    assert outcome.ingested == [] and outcome.failed == []


def test_the_command_says_once_that_dataprep_is_not_there_and_fails(tree):
    url = unused_url()
    started = time.monotonic()
    result = CliRunner().invoke(app, ["ingest", str(tree), "--dataprep", url])
    assert time.monotonic() - started < 5
    assert result.exit_code == 1, result.output
    assert result.output.count(f"cannot reach dataprep at {url}") == 1
    assert "megaservice up" in result.output and "megaservice serve dataprep" in result.output


class StartingDataprep:
    """A dataprep that answers `/v1/ready` 503 `starting` times, then 200; it stores the names it is sent."""

    def __init__(self, starting: int) -> None:
        self.starting = starting
        self.names: list[str] = []
        self.app = Starlette(
            routes=[
                Route("/v1/ready", self._ready, methods=["GET"]),
                Route("/v1/dataprep/ingest", self._ingest, methods=["POST"]),
            ]
        )

    async def _ready(self, request: Request) -> JSONResponse:
        if self.starting > 0:
            self.starting -= 1
            return JSONResponse({"detail": "loading the embedding model"}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def _ingest(self, request: Request) -> JSONResponse:
        async with request.form() as form:
            for item in form.getlist("files"):
                assert not isinstance(item, str)
                self.names.append(item.filename or "")
        return JSONResponse({"files": 1, "chunks": 1})


async def test_a_starting_dataprep_is_waited_for_and_a_never_ready_one_is_one_error():
    starting = StartingDataprep(starting=2)
    async with serve(starting.app) as url:
        outcome = await run([], [], Outcome(), dataprep=url, wait=30)
    assert starting.starting == 0 and outcome.failed == []
    never = StartingDataprep(starting=10**6)
    async with serve(never.app) as url:
        with pytest.raises(
            DataprepNotReady, match=re.escape("still not ready after 0.3 s: HTTP 503: loading the embedding model")
        ):
            await run([], [], Outcome(), dataprep=url, wait=0.3)


# -- source names (ux review D4) and links (D11) --------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory: project/, with docs/zorblax.md in it."""
    (tmp_path / "project" / "docs").mkdir(parents=True)
    (tmp_path / "project" / "docs" / "zorblax.md").write_text("The launch code is 4417.")
    monkeypatch.chdir(tmp_path / "project")
    return tmp_path / "project"


def names(*paths: Path | str) -> list[str]:
    outcome = Outcome()
    uploads = collect([Path(path) for path in paths], outcome)
    assert outcome.failed == outcome.skipped == []
    return [upload.name for upload in uploads]


def test_a_file_under_the_current_directory_has_one_name_however_it_is_given(project):
    # ux review D4: `ingest docs` stored `docs/zorblax.md`, `ingest /abs/.../docs/zorblax.md` stored `zorblax.md`
    assert names("docs") == ["docs/zorblax.md"]
    assert names("docs/zorblax.md") == ["docs/zorblax.md"]
    assert names(project / "docs" / "zorblax.md") == ["docs/zorblax.md"]
    assert names(project / "docs") == ["docs/zorblax.md"]
    assert names("./docs/../docs/zorblax.md") == ["docs/zorblax.md"]
    assert names(".") == ["docs/zorblax.md"]


def test_a_file_elsewhere_is_named_from_the_parent_of_the_argument(project, monkeypatch):
    (project.parent / "elsewhere").mkdir()
    monkeypatch.chdir(project.parent / "elsewhere")
    assert names(project / "docs") == ["docs/zorblax.md"]
    assert names(project / "docs" / "zorblax.md") == ["zorblax.md"]
    assert names(project) == ["project/docs/zorblax.md"]
    assert names("../project/docs") == ["docs/zorblax.md"]


def test_links_out_of_a_folder_are_skipped_saying_so(project):
    # ux review D11: `bad/link.txt -> /etc/passwd` was ingested as `bad/link.txt`
    secret = project.parent / "secret.txt"
    secret.write_text("root:x:0:0")
    (project.parent / "outside").mkdir()
    (project.parent / "outside" / "more.md").write_text("more secrets")
    docs = project / "docs"
    (docs / "link.txt").symlink_to(secret)
    (docs / "outside").symlink_to(project.parent / "outside", target_is_directory=True)
    (docs / "again.md").symlink_to(docs / "zorblax.md")  # inside the folder: followed
    (docs / "broken.md").symlink_to(project / "nowhere.md")
    outcome = Outcome()
    uploads = collect([Path("docs")], outcome)
    assert [upload.name for upload in uploads] == ["docs/again.md", "docs/zorblax.md"]
    skipped = dict(outcome.skipped)
    assert skipped == {
        "docs/outside": f"a link out of docs (to {project.parent / 'outside'}): not followed",
        "docs/broken.md": f"a link out of docs (to {project / 'nowhere.md'}): not followed",
        "docs/link.txt": f"a link out of docs (to {secret}): not followed",
    }
    assert names("docs/link.txt") == ["docs/link.txt"]  # named on its own: the user chose it


async def test_the_summary_lists_the_names_files_were_stored_under(project):
    dataprep = StartingDataprep(starting=0)
    async with serve(dataprep.app) as url:
        args = ["ingest", "docs", str(project / "docs" / "zorblax.md"), "--dataprep", url]
        result = await anyio.to_thread.run_sync(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output
    assert dataprep.names == ["docs/zorblax.md", "docs/zorblax.md"]
    assert "2 ingested (2 chunks)" in result.output
    assert "stored as" in result.output and result.output.count("docs/zorblax.md") == 2


def test_the_command_needs_something_to_ingest():
    result = CliRunner().invoke(app, ["ingest"])
    assert result.exit_code == 2
    assert "give files or folders" in result.output
