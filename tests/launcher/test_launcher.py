import asyncio
import contextlib
import os
import socket
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from megaservice.cli import app
from megaservice.exceptions import ConfigurationError
from megaservice.launcher import Launcher, LaunchError, service_commands
from megaservice.launcher.observe import receiver_for
from megaservice.launcher.process import ServiceProcess
from megaservice.launcher.scheduling import SchedulingSettings, slice_of
from megaservice.launcher.supervisor import load_for_launch
from megaservice.pipeline import demo_paths, load_pipeline
from megaservice.pipeline.loader import find_pipeline, parse_pipeline

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_commands_start_what_is_needed_first_and_the_megaservice_last(tmp_path: Path) -> None:
    path = find_pipeline("chatqna")
    pipeline = load_pipeline(path)
    commands = service_commands(pipeline, path, data_dir=tmp_path)
    names = [c.name for c in commands]
    assert names[-1] == "megaservice"
    assert names[:-1] == pipeline.start_order()
    assert names.index("postgres") < names.index("retriever") < names.index("megaservice")
    assert names.index("embedding") < names.index("dataprep")
    assert names.index("llm-server") < names.index("llm")
    by_name = {c.name: c for c in commands}
    embedding = by_name["embedding"].argv
    assert embedding[1:3] == ["-m", "megaservice.components.embedding"]
    assert embedding[embedding.index("--port") + 1] == "6000"
    assert embedding[embedding.index("--backend") + 1] == "local"
    assert by_name["dataprep"].env["EMBEDDING_ENDPOINT"] == "http://127.0.0.1:6000"
    assert all(c.env["MEGASERVICE_DATA_DIR"] == str(tmp_path) for c in commands)
    gateway = by_name["megaservice"].argv
    assert gateway[1:5] == ["-m", "megaservice.cli", "gateway", str(path)]
    assert gateway[gateway.index("--port") + 1] == "8888"


def test_every_service_but_the_model_server_and_the_receiver_asks_for_the_slice(tmp_path: Path) -> None:
    path = find_pipeline("chatqna")
    pipeline = load_pipeline(path)
    commands = service_commands(pipeline, path, data_dir=tmp_path, receiver=receiver_for(pipeline), slice_us=250)
    sliced = {c.name: c.slice_us for c in commands}
    assert sliced.pop("llm-server") is None
    assert sliced.pop("traces") is None
    assert set(sliced) >= {"postgres", "embedding", "retriever", "reranker", "llm", "megaservice"}
    assert set(sliced.values()) == {250}
    unsliced = service_commands(pipeline, path, data_dir=tmp_path)
    assert {c.slice_us for c in unsliced} == {None}


def test_the_slice_setting() -> None:
    assert SchedulingSettings.from_env({}).slice_us == 100
    assert SchedulingSettings.from_env({"MEGASERVICE_SCHED_SLICE_US": "0"}).slice_us is None
    assert SchedulingSettings.from_env({"MEGASERVICE_SCHED_SLICE_US": "2000"}).slice_us == 2000
    for wrong in ("50", "100001", "1e3", "-1"):
        with pytest.raises(ConfigurationError, match=r"MEGASERVICE_SCHED_SLICE_US must be 0 \(off\) or a whole number"):
            SchedulingSettings.from_env({"MEGASERVICE_SCHED_SLICE_US": wrong})


_SLICES = textwrap.dedent(
    """
    import subprocess, sys, threading
    from megaservice.launcher.scheduling import slice_of

    seen = []
    thread = threading.Thread(target=lambda: seen.append(slice_of()))
    thread.start()
    thread.join()
    command = [sys.executable, "-c", "from megaservice.launcher.scheduling import slice_of; print(slice_of())"]
    child = subprocess.run(command, capture_output=True, text=True, check=True)
    print("slices", slice_of(), seen[0], child.stdout.strip(), flush=True)
    """
)


@pytest.mark.skipif(slice_of() is None, reason="the kernel does not report scheduler slices (Linux 6.12+)")
@pytest.mark.parametrize("slice_us", [250, None])
async def test_a_started_service_its_threads_and_its_children_run_with_its_slice(slice_us: int | None) -> None:
    lines: list[str] = []
    process = ServiceProcess(
        "sliced", [sys.executable, "-c", _SLICES], dict(os.environ), lambda n, s: lines.append(s), slice_us=slice_us
    )
    await process.start()
    assert await asyncio.wait_for(process.wait(), 60) == 0, lines
    [line] = [x for x in lines if x.startswith("slices ")]
    expected = slice_us * 1000 if slice_us is not None else slice_of()  # None: this process's own
    assert line.split()[1:] == [str(expected)] * 3


def _pipeline(tmp_path: Path, port: int, env: str = "", gateway_port: int | None = None) -> tuple[object, Path]:
    text = textwrap.dedent(
        f"""
        name: tiny
        services:
          llm:
            component: llm
            port: {port}
            env: {{LLM_ENDPOINT: "http://127.0.0.1:9", {env}}}
        megaservice:
          port: {gateway_port or (port + 1 if port < 65535 else 1)}
          flow: [llm]
        """
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return parse_pipeline(text, str(path)), path


def test_a_taken_port_is_named_with_its_service_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        pipeline, path = _pipeline(tmp_path, port)
        lines: list[tuple[str, str]] = []
        launcher = Launcher(pipeline, path, data_dir=tmp_path, emit=lambda n, s: lines.append((n, s)))  # type: ignore[arg-type]
        with pytest.raises(LaunchError, match=rf"is taken:\n  llm  port {port}\n"):
            launcher.check_ports()
        with pytest.raises(LaunchError):
            asyncio.run(launcher.run())
    assert lines == []  # nothing was started


def test_taken_ports_are_listed_one_a_line_with_their_services(tmp_path: Path) -> None:
    with socket.socket() as llm_holder, socket.socket() as gateway_holder:
        for holder in (llm_holder, gateway_holder):
            holder.bind(("127.0.0.1", 0))
            holder.listen()
        llm_port, gateway_port = llm_holder.getsockname()[1], gateway_holder.getsockname()[1]
        pipeline, path = _pipeline(tmp_path, llm_port, gateway_port=gateway_port)
        launcher = Launcher(pipeline, path, data_dir=tmp_path, emit=lambda n, s: None)  # type: ignore[arg-type]
        with pytest.raises(LaunchError) as refused:
            launcher.check_ports()
    assert str(refused.value).splitlines() == [
        "2 ports the pipeline needs are taken:",
        f"  llm          port {llm_port}",
        f"  megaservice  port {gateway_port}",
        "Stop what uses them, or give the services other ports in the pipeline file.",
    ]


def _up(*args: str) -> tuple[int, str]:
    """`megaservice up ARGS` in process: its exit code and what it printed, on one line per line."""
    result = CliRunner().invoke(app, ["up", *args], env={"COLUMNS": "400", "NO_COLOR": "1"})
    return result.exit_code, result.output


def test_a_copy_of_the_shipped_chatqna_keeps_its_demo_corpus(tmp_path: Path) -> None:
    copy = tmp_path / "my.yaml"
    copy.write_text(find_pipeline("chatqna").read_text())
    code, output = _up("--dry-run", str(copy))
    assert code == 0, output
    pipeline, path = load_for_launch(str(copy))
    assert demo_paths(pipeline, path) == [(find_pipeline("chatqna").parent / "corpus").resolve()]


def test_a_demo_corpus_that_is_not_there_is_refused_with_its_line_before_anything_starts(tmp_path: Path) -> None:
    copy = tmp_path / "my.yaml"
    copy.write_text(find_pipeline("chatqna").read_text().replace("demo: [corpus]", "demo: [my-docs]"))
    code, output = _up("--dry-run", str(copy))  # a dry run: nothing could start, even if the check were missing
    assert code == 2, output
    assert output.startswith(f"error: {copy}:49: demo: 'my-docs' is not next to this file ({tmp_path / 'my-docs'})")
    assert "`megaservice up --no-demo`" in output
    assert output.count("\n") == 1  # the error alone: no command printed
    code, output = _up("--dry-run", "--no-demo", str(copy))
    assert code == 0, output


def _free_ports(n: int) -> list[int]:
    """`n` distinct ports free at once (the next port up may be any socket's: another test's client's)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


async def test_a_service_that_dies_before_it_is_ready_is_reported_and_up_fails(tmp_path: Path) -> None:
    llm_port, gateway_port = _free_ports(2)
    pipeline, path = _pipeline(tmp_path, llm_port, env='LLM_CONNECT_TIMEOUT: "soon"', gateway_port=gateway_port)
    lines: list[tuple[str, str]] = []
    launcher = Launcher(pipeline, path, data_dir=tmp_path, emit=lambda n, s: lines.append((n, s)), ready_timeout=60)  # type: ignore[arg-type]
    assert await launcher.run() == 1
    assert any(n == "llm" and "LLM_CONNECT_TIMEOUT" in s for n, s in lines), lines  # its own error, prefixed
    assert ("up", "llm exited with code 1 before it was ready") in lines
    assert not any(s.startswith("starting megaservice") for n, s in lines if n == "up")


async def test_stop_ends_the_service_and_what_it_started(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print("grandchild", child.pid, flush=True)
        time.sleep(600)
        """
    )
    lines: list[tuple[str, str]] = []
    got_line = asyncio.Event()

    def emit(name: str, line: str) -> None:
        lines.append((name, line))
        got_line.set()

    process = ServiceProcess("sleepy", [sys.executable, "-c", script], dict(os.environ), emit)
    await process.start()
    await asyncio.wait_for(got_line.wait(), 30)
    name, line = lines[0]
    assert name == "sleepy" and line.startswith("grandchild ")
    grandchild = int(line.split()[1])
    pid = process.pid
    assert pid is not None
    code = await process.stop(grace=5)
    assert code is not None and code < 0  # ended by a signal
    for gone in (pid, grandchild):
        for _ in range(100):
            if not _alive(gone):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"process {gone} is still alive")


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that is not ours to reap it counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("terminal", [False, True])
def test_log_lines_are_written_as_they_came_after_their_service_s_prefix(terminal: bool) -> None:
    import io
    import re

    from rich.console import Console

    from megaservice.cli.up import _Prefixer

    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, color_system="standard" if terminal else None)
    prefixer = _Prefixer(console, ["embedding", "llm"])
    prefixer("llm", 'INFO: "POST /v1/chat/completions" [bold]200[/bold]\r\x07')
    prefixer("embedding", "ready")
    prefixer("up", "stopping")
    lines = out.getvalue().split("\n")
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]
    assert plain == [
        'llm       | INFO: "POST /v1/chat/completions" [bold]200[/bold]',  # markup is text; CR and bell dropped
        "embedding | ready",
        "up        | stopping",
        "",
    ]
    if terminal:  # the prefix in its service's color, the line as it came
        assert lines[0].startswith("\x1b[32mllm       | \x1b[0mINFO")
        assert lines[1].startswith("\x1b[36membedding | \x1b[0m")
    else:
        assert "\x1b" not in out.getvalue()
