"""The embedded PostgreSQL component: who runs the server, that it stops cleanly, that its data stays."""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import psycopg
import pytest

from megaservice.components._shared.runner import build
from megaservice.components.postgres import (
    PostgresSettings,
    accepting_connections,
    create_service,
    join_or_start,
)
from megaservice.components.postgres.cluster import Cluster, as_user, server_user
from megaservice.exceptions import ConfigurationError
from megaservice.pipeline.model import Pipeline, ServiceSpec
from megaservice.testing import serve
from megaservice.testing.postgres import EmbeddedPostgres

pytestmark = pytest.mark.anyio


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory of this test's own (outside pytest's temporary folder: see the `postgres` fixture)."""
    path = Path(tempfile.mkdtemp(prefix="megaservice-test-pgc-"))
    yield path
    for pid in servers(path):  # a failed test must not leave a server running
        os.kill(pid, signal.SIGQUIT)
    shutil.rmtree(path, ignore_errors=True)


def servers(data_dir: Path) -> list[int]:
    """The pids of postmasters running on `data_dir`'s cluster."""
    pgdata = str(Cluster.of(data_dir).pgdata).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"/postgres") and pgdata in argv:
                found.append(int(entry.name))
    # a backend the postmaster just forked has its parent's command line until it sets its own title
    return [pid for pid in found if _parent(pid) not in found]


def _parent(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), None)


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def query(data_dir: Path, sql: str):
    with psycopg.connect(Cluster.of(data_dir).conninfo(), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


async def wait_ready(client: httpx.AsyncClient, timeout: float = 60.0) -> httpx.Response:
    with anyio.move_on_after(timeout):
        while (answer := await client.get("/v1/ready")).status_code != 200:
            await anyio.sleep(0.05)
    return answer


def test_accepting_connections(postgres, data_dir):
    assert accepting_connections(postgres.data_dir)
    assert not accepting_connections(data_dir)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_serve_postgres_runs_the_server_stops_it_cleanly_and_keeps_its_data(data_dir):
    for round_ in range(2):
        service = create_service(PostgresSettings(data_dir=data_dir, port=0))
        async with serve(service.app) as url, httpx.AsyncClient(base_url=url) as client:
            assert (await wait_ready(client)).status_code == 200
            status = (await client.get("/v1/postgres")).json()
            assert status["state"] == "running" and status["owner_pid"] == os.getpid()
            assert servers(data_dir) == [status["pid"]]
            assert await anyio.Path(status["socket"]).is_socket()
            if round_ == 0:
                await asyncio.to_thread(query, data_dir, "CREATE TABLE kept AS SELECT 42 x")
            else:
                assert await asyncio.to_thread(query, data_dir, "SELECT x FROM kept") == [(42,)]
        assert servers(data_dir) == []  # stopped with the service, not orphaned
        log = Cluster.of(data_dir).log.read_text()
        assert "fast shutdown request" in log and "database system is shut down" in log


@pytest.mark.timeout(240)
def test_a_signal_to_the_components_process_group_reaches_the_owner_which_stops_the_server(data_dir):
    """As `up` stops it (SIGTERM to the group) or Ctrl-C in a terminal: the server is the owner's to stop."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "megaservice.components.postgres", "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "MEGASERVICE_DATA_DIR": str(data_dir)}
    owner = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        ready = lambda: httpx.get(f"http://127.0.0.1:{port}/v1/ready", timeout=5).status_code == 200  # noqa: E731
        assert wait_for(lambda: owner.poll() is None and _answers(ready), 120), "never ready"
        os.killpg(owner.pid, signal.SIGTERM)
        output = owner.communicate(timeout=60)[0].decode()
    finally:
        if owner.poll() is None:
            owner.kill()
    assert owner.returncode in (0, -signal.SIGTERM), output  # uvicorn ends by the signal it stopped for
    assert "PostgreSQL exited" not in output  # the server did not stop under the owner's feet
    assert "stopped" in output
    log = Cluster.of(data_dir).log.read_text()
    assert "fast shutdown request" in log and "smart shutdown request" not in log
    assert servers(data_dir) == []


def _answers(check) -> bool:
    try:
        return bool(check())
    except httpx.HTTPError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_service_alone_starts_the_server_one_for_two_and_it_stops_once_unused(data_dir):
    leases = []

    def join() -> None:
        leases.append(join_or_start(data_dir, timeout=60, idle_stop=1.0))

    threads = [threading.Thread(target=join) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(leases) == 2
    assert len(servers(data_dir)) == 1  # two services starting at once: one server
    query(data_dir, "CREATE TABLE kept AS SELECT 7 AS x")
    owner = Cluster.of(data_dir).owner_pid()
    assert owner is not None and owner != os.getpid()  # a detached owner process
    leases[0].release()
    time.sleep(2.5)
    assert servers(data_dir), "stopped while a service still used it"
    leases[1].release()
    assert wait_for(lambda: not servers(data_dir), 30), "still running once unused"
    lease = join_or_start(data_dir, timeout=60, idle_stop=1.0)  # started again, with the data
    try:
        assert query(data_dir, "SELECT x FROM kept") == [(7,)]
    finally:
        lease.release()
    assert wait_for(lambda: not servers(data_dir), 30)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_server_does_not_outlive_its_owner_even_killed(data_dir):
    server = EmbeddedPostgres(data_dir)
    server.start()
    (postmaster,) = servers(data_dir)
    assert server._owner is not None
    server._owner.kill()  # SIGKILL: no chance to stop the server itself
    server._owner.wait()
    assert wait_for(lambda: not servers(data_dir), 30), "PostgreSQL outlived its owner"
    assert "fast shutdown request" in Cluster.of(data_dir).log.read_text()
    server.start()  # the next owner starts it on the same data
    assert servers(data_dir) and servers(data_dir) != [postmaster]
    server.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_second_owner_follows_the_first_and_takes_over(data_dir):
    first = EmbeddedPostgres(data_dir)
    first.start()
    try:
        service = create_service(PostgresSettings(data_dir=data_dir, port=0))
        async with serve(service.app) as url, httpx.AsyncClient(base_url=url) as client:
            assert (await wait_ready(client)).status_code == 200
            status = (await client.get("/v1/postgres")).json()
            assert status["state"] == "following" and status["owner_pid"] != os.getpid()
            await asyncio.to_thread(first.stop)  # the first owner goes: the service takes over
            assert (await wait_ready(client)).status_code == 200
            status = (await client.get("/v1/postgres")).json()
            assert status["state"] == "running" and status["owner_pid"] == os.getpid()
        assert servers(data_dir) == []
    finally:
        first.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_server_left_without_owner_is_replaced(data_dir):
    cluster = Cluster.of(data_dir)
    user = server_user()
    cluster.prepare(user)
    orphan = subprocess.Popen(
        cluster.command(), preexec_fn=as_user(user), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/"
    )
    try:
        assert wait_for(cluster.answering, 30)
        with EmbeddedPostgres(data_dir):
            assert orphan.wait(30) is not None  # stopped by the new owner
            assert servers(data_dir) and orphan.pid not in servers(data_dir)
    finally:
        if orphan.poll() is None:
            orphan.kill()


def test_the_component_is_served_by_the_runner_and_a_pipeline_may_run_it(tmp_path):
    service = build("postgres", environ={"MEGASERVICE_DATA_DIR": str(tmp_path)})
    assert service.port == 5430 and service.host == "127.0.0.1"
    spec = ServiceSpec(component="postgres")
    assert spec.started and spec.port == 5430  # its status service, the default port of the pipeline file
    pipeline = Pipeline.model_validate(
        {
            "name": "p",
            "services": {
                "postgres": {"component": "postgres"},
                "retriever": {"component": "retriever", "needs": ["postgres"]},
            },
            "megaservice": {"flow": ["retriever"]},
        }
    )
    assert pipeline.start_order().index("postgres") < pipeline.start_order().index("retriever")
    with pytest.raises(ConfigurationError, match="the only backend is `embedded`"):
        create_service(PostgresSettings(backend="docker"))


def test_settings_read_the_data_directory():
    settings = PostgresSettings.from_env({"MEGASERVICE_DATA_DIR": "/srv/ms", "POSTGRES_STATUS_PORT": "5999"})
    assert settings.storage_dir() == Path("/srv/ms") and settings.port == 5999
    assert Cluster.of(Path("/srv/ms")).pgdata == Path("/srv/ms/postgres/pgdata")


def test_a_long_data_directory_puts_the_socket_in_tmp():
    long = Path("/tmp") / ("d" * 120)
    cluster = Cluster.of(long)
    assert cluster.socket_dir.parent == Path(tempfile.gettempdir())
    assert len(str(cluster.socket)) < 100
    assert Cluster.of(Path("/srv/ms")).socket_dir == Path("/srv/ms/postgres/pgdata")
