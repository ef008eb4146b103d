import asyncio
import contextlib
import importlib.util
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

from megaservice.components.embedding.minilm import MiniLM
from megaservice.testing import serve
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


class LLMServer(NamedTuple):
    url: str
    """The model server's base URL (`http://127.0.0.1:PORT`)."""
    backend: Any
    """Its `LlamaCppBackend` (to look at what the model did)."""
    loop: asyncio.AbstractEventLoop
    """The loop it runs on, in its own thread."""


@pytest.fixture(scope="session")
def llm_server() -> Iterator[LLMServer]:
    """The model server with the packaged SmolLM2 on a real socket, loaded once for the whole session.

    It runs on an event loop of its own, in a thread, so every test (each on its own loop) can use it.
    Two generations run at once (`parallel=2`) and at most one request waits (`max_waiting=1`): the
    queue's limit is testable.
    """
    if importlib.util.find_spec("llama_cpp") is None:  # not imported here: the backend sets OpenMP's policy first
        pytest.skip("llama-cpp-python is not installed")
    from megaservice.components.llm_server import LLMServerSettings, create_service
    from megaservice.components.llm_server.llamacpp import LlamaCppBackend

    settings = LLMServerSettings(host="127.0.0.1", port=0, context=1024, threads=2, parallel=2, max_waiting=1)
    backend = LlamaCppBackend(settings)
    service = create_service(settings, backend)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stack = contextlib.AsyncExitStack()
    url = asyncio.run_coroutine_threadsafe(stack.enter_async_context(serve(service.app)), loop).result(30)
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/v1/ready").status_code != 200:
        assert time.monotonic() < deadline, httpx.get(f"{url}/v1/ready").text
        time.sleep(0.02)
    yield LLMServer(url, backend, loop)
    asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()
