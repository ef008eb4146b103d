"""A dataprep process killed with SIGKILL while it ingests a big file leaves no part of the new version visible.

The service runs as its own process (`python -m megaservice.components.dataprep`) on the session's
PostgreSQL; the test waits for its log to say how far the ingestion is, kills it, and reads the
collection: the file is its previous version whole (or, killed while committing, the new one whole).
"""

import contextlib
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest

from megaservice.components._store import Store, StoreSettings
from megaservice.settings import environment
from megaservice.testing import unused_url
from megaservice.testing.postgres import EmbeddedPostgres
from tests.components.test_dataprep_service import stored_chunks, wait_ready

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
_STARTED = re.compile(r"dataprep ready")


class Logged:
    """The lines a process writes to stderr, read as they come; `wait_for(pattern)` until one matches."""

    def __init__(self, process: anyio.abc.Process) -> None:
        assert process.stderr is not None
        self.stream = process.stderr
        self.lines: list[str] = []
        self._buffer = b""

    async def wait_for(self, pattern: re.Pattern[str], timeout: float = 120.0) -> re.Match[str]:
        with anyio.fail_after(timeout):
            while True:
                for line in self.lines:
                    if found := pattern.search(line):
                        self.lines.clear()
                        return found
                self.lines.clear()
                chunk = await self.stream.receive()
                self._buffer += chunk
                *complete, self._buffer = self._buffer.split(b"\n")
                self.lines.extend(part.decode(errors="replace") for part in complete)


@pytest.fixture
def store_settings(postgres: EmbeddedPostgres) -> StoreSettings:
    """The session's PostgreSQL, a collection of this test's own."""
    return postgres.store_settings(collection=f"killed_{uuid.uuid4().hex[:12]}")


async def dataprep_process(settings: StoreSettings) -> AsyncIterator[tuple[anyio.abc.Process, Logged, str]]:
    env = {
        **environment(),
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "DATAPREP_HOST": "127.0.0.1",
        "COLLECTION_NAME": settings.collection,
        "DATAPREP_MAX_CHUNKS": "1000000",
        "DATAPREP_LOCAL_BATCH": "4",  # short chunks: cheaper in batches
    }
    if settings.connection:
        env["PG_CONNECTION_STRING"] = settings.connection
    if settings.data_dir is not None:
        env["MEGASERVICE_DATA_DIR"] = str(settings.data_dir)
    url = unused_url()  # nothing listens there now; the service binds it
    command = [sys.executable, "-m", "megaservice.components.dataprep", "--port", url.rsplit(":", 1)[1]]
    process = await anyio.open_process(command, env=env, stdout=None, stderr=-1)
    try:
        logged = Logged(process)
        await logged.wait_for(_STARTED, timeout=60)
        yield process, logged, url
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def version(label: str, paragraphs: int) -> bytes:
    return "\n\n".join(f"{label} paragraph {i}: " + "words about the subject " * 6 for i in range(paragraphs)).encode()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("moment", ["embedded", "storing"])
async def test_sigkill_mid_file_leaves_no_partial_file(store_settings, moment):
    old, new = version("Old", 20), version("New", 2000)
    async for process, logged, url in dataprep_process(store_settings):
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            assert (await wait_ready(client, timeout=60)).status_code == 200
            form = {"chunk_size": "200", "chunk_overlap": "0"}
            first = await client.post("/v1/dataprep/ingest", files=[("files", ("big.txt", old))], data=form)
            assert first.status_code == 200 and first.json()["chunks"] == 20

            async def send(form: dict[str, str]) -> None:
                with contextlib.suppress(httpx.TransportError):  # the server dies before it answers
                    await client.post("/v1/dataprep/ingest", files=[("files", ("big.txt", new))], data=form)

            async with anyio.create_task_group() as group:
                group.start_soon(send, form)
                await logged.wait_for(re.compile(rf"ingest big\.txt: {moment}"))
                process.send_signal(signal.SIGKILL)
                await process.wait()
    store = await Store.open(store_settings)
    try:
        chunks = await stored_chunks(store, "big.txt")
        files = await store.files()
    finally:
        await store.aclose()
    labels = {hit.text.split(" ", 1)[0] for hit in chunks}
    assert len(labels) == 1, labels  # one version, never a mix
    label = labels.pop()
    expected = 20 if label == "Old" else 2000
    assert len(chunks) == expected
    assert [hit.index for hit in chunks] == list(range(expected))
    assert [(f.source, f.chunks) for f in files] == [("big.txt", expected)]
    if moment == "embedded":  # killed before the transaction began: the old version, surely
        assert label == "Old"
