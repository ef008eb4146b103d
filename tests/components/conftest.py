import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from megaservice.components.embedding.minilm import MiniLM
from megaservice.testing.postgres import EmbeddedPostgres


@pytest.fixture(scope="session")
def minilm() -> MiniLM:
    """The packaged MiniLM, loaded once for the whole session (every in-process embedding test shares it)."""
    model = MiniLM()
    model.load()
    return model


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    """One embedded PostgreSQL with pgvector for the whole session, in a temporary data directory.

    Run by its own owner process, as `megaservice serve postgres` runs it. Each test uses a collection
    of its own (`collection` fixture); a test that stops it starts it again before it ends. The data
    directory is not under pytest's temporary folder: another pytest session of the same user deletes
    old ones and makes the folder private again (0700), which a server running as another user (as
    root runs it) cannot then reach.
    """
    pytest.importorskip("psycopg", reason="needs the pgvector extra")
    data_dir = Path(tempfile.mkdtemp(prefix="megaservice-test-pg-"))
    try:
        with EmbeddedPostgres(data_dir) as server:
            yield server
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def collection(request: pytest.FixtureRequest) -> str:
    """A collection name of this test's own."""
    return "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:60]
