"""`megaservice up` on the embedded defaults, end to end: real processes, sockets, PostgreSQL, models.

One stack for the module (it takes a while to start on two cores): ingest a document holding a fact
no model knows, ask about it three ways, see a request as one trace, kill a service, stop with Ctrl-C,
start again on the same data. The stack runs observed (the file's `observe:`): every service traced,
the trace receiver started first.
"""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from megaservice.launcher.scheduling import slice_of
from megaservice.pipeline.loader import find_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FACT_FILE = "zephyr-project.md"
FACT = (
    "# The Zephyr project\n\n"
    "The Zephyr project is run by the Bellwether Institute in the town of Karsk.\n"
    "The secret codeword of the Zephyr project is PLUM-4471.\n"
    "The codeword is changed every winter by the project's archivist, Halvard Munk.\n"
)
QUESTION = "What is the secret codeword of the Zephyr project?"
_DEFAULT_PORTS = (5430, 5000, 6000, 7000, 8000, 8008, 8888, 9000, 9092)
_OBSERVE_PORTS = (4318, 16686)


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _pipeline_file(folder: Path) -> tuple[Path, dict[int, int]]:
    """A copy of the shipped chatqna with free ports (the defaults may be taken on a test machine), observed.

    Its `demo: [corpus]` is left as it is: a copy keeps the shipped demo corpus (the README says to copy it).
    """
    shipped = find_pipeline("chatqna")
    text = shipped.read_text()
    free = _free_ports(len(_DEFAULT_PORTS) + len(_OBSERVE_PORTS))
    ports = dict(zip(_DEFAULT_PORTS + _OBSERVE_PORTS, free, strict=True))
    for old in _DEFAULT_PORTS:
        text = re.sub(rf"\b{old}\b", str(ports[old]), text)
    text += f"\nobserve: {{port: {ports[4318]}, ui_port: {ports[16686]}}}\n"
    path = folder / "chatqna.yaml"
    path.write_text(text)
    return path, ports


@dataclass
class Up:
    """A running `megaservice up` and what it printed."""

    process: subprocess.Popen[str]
    ports: dict[int, int]
    data_dir: Path
    lines: list[str] = field(default_factory=list)

    def url(self, default_port: int) -> str:
        return f"http://127.0.0.1:{self.ports[default_port]}"

    def wait_for(self, pattern: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if re.search(pattern, line):
                    return line
            seen = len(self.lines)
            if self.process.poll() is not None and seen == len(self.lines):
                break
            time.sleep(0.1)
        tail = "\n".join(self.lines[-60:])
        raise AssertionError(f"no line matching {pattern!r} (up exited: {self.process.poll()}):\n{tail}")

    def pid_of(self, service: str) -> int:
        line = [x for x in self.lines if re.search(rf"\| {re.escape(service)} started( again)? \(pid \d+\)", x)][-1]
        return int(re.search(r"pid (\d+)", line).group(1))


def _start(path: Path, data_dir: Path, ports: dict[int, int]) -> Up:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    process = subprocess.Popen(
        [sys.executable, "-m", "megaservice.cli", "up", str(path), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    up = Up(process, ports, data_dir)

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            up.lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return up


def _stop(up: Up) -> int:
    if up.process.poll() is None:
        up.process.send_signal(signal.SIGINT)
    code = up.process.wait(timeout=120)
    time.sleep(0.2)  # the reader thread takes the last lines
    if up.process.stdout is not None:
        up.process.stdout.close()
    return code


def _processes_using(data_dir: Path) -> list[int]:
    """Every process whose environment names `data_dir` (what up started, and what they started)."""
    found = []
    needle = f"MEGASERVICE_DATA_DIR={data_dir}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    folder = tmp_path_factory.mktemp("up")
    path, ports = _pipeline_file(folder)
    up = _start(path, folder / "data", ports)
    try:
        up.wait_for(r"chatqna is up in")
        yield up
    finally:
        _stop(up)


def test_up_ingests_the_demo_corpus_on_the_first_start(stack: Up) -> None:
    stack.wait_for(r"ingested the demo corpus: 4 files")
    listed = httpx.post(f"{stack.url(5000)}/v1/dataprep/get", json={}, timeout=30).json()
    names = {item["name"] if isinstance(item, dict) else item for item in listed}
    assert {"qorvane-tea.md", "harbor-lights-festival.md"} <= {Path(str(n)).name for n in names}


def test_an_ingested_fact_is_answered_with_its_source(stack: Up, tmp_path: Path) -> None:
    document = tmp_path / FACT_FILE
    document.write_text(FACT)
    ingest = subprocess.run(
        [sys.executable, "-m", "megaservice.cli", "ingest", str(document), "--dataprep", stack.url(5000)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr

    # 1. OPEA's route, streamed in OPEA's framing
    pieces: list[str] = []
    with httpx.stream(
        "POST",
        f"{stack.url(8888)}/v1/chatqna",
        json={"messages": QUESTION, "max_tokens": 48, "stream": True},
        timeout=120,
    ) as answer:
        assert answer.status_code == 200, answer.read()
        pieces.extend(line[6:] for line in answer.iter_lines() if line.startswith("data: "))
    assert pieces[-1] == "[DONE]"
    assert sum(1 for p in pieces if p.startswith("b'")) > 3, pieces  # token by token
    # OPEA's UIs show every event of this stream as answer text: its sources come with the whole answer
    whole = httpx.post(
        f"{stack.url(8888)}/v1/chatqna", json={"messages": QUESTION, "max_tokens": 48, "stream": False}, timeout=120
    )
    assert whole.status_code == 200, whole.text
    assert FACT_FILE in {s["source"] for s in whole.json()["sources"]}, whole.json()

    # 2. the official openai client, streaming
    from openai import OpenAI

    client = OpenAI(base_url=f"{stack.url(8888)}/v1", api_key="none")
    chunks = list(
        client.chat.completions.create(
            model="chatqna", messages=[{"role": "user", "content": QUESTION}], max_tokens=48, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    sources = [s for c in chunks for s in (c.model_extra or {}).get("sources") or ()]
    assert FACT_FILE in {s["source"] for s in sources}, sources

    # 3. megaservice ask
    asked = subprocess.run(
        [sys.executable, "-m", "megaservice.cli", "ask", QUESTION, "--url", stack.url(8888), "--max-tokens", "48"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert asked.returncode == 0, asked.stdout + asked.stderr
    head, _, tail = asked.stdout.partition("sources:")
    assert head.strip() and FACT_FILE in tail, asked.stdout


def test_a_request_is_one_trace_across_the_megaservice_and_every_component_in_the_viewer(stack: Up) -> None:
    stack.wait_for(rf"traces +\| trace viewer: http://127.0.0.1:{stack.ports[16686]}/")
    answer = httpx.post(
        f"{stack.url(8888)}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Which festival lights the harbor?"}], "max_tokens": 8},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    api = f"{stack.url(16686)}/api/traces"
    deadline = time.monotonic() + 30
    trace: dict[str, object] = {}
    while time.monotonic() < deadline and not trace:
        for summary in httpx.get(f"{api}?limit=20", timeout=10).json()["traces"]:
            if summary["root"] == "POST /v1/chat/completions" and len(summary["services"]) >= 6:
                trace = httpx.get(f"{api}/{summary['trace_id']}", timeout=10).json()
                break
        else:
            time.sleep(0.5)
    assert trace, httpx.get(api, timeout=10).json()
    rows = trace["spans"]
    assert isinstance(rows, list) and rows[0]["service"] == "chatqna" and rows[0]["depth"] == 0
    by_id = {row["span_id"]: row for row in rows}
    nodes = [row for row in rows if row["name"].startswith("node ")]
    assert len(nodes) >= 5, [row["name"] for row in rows]  # guardrail, embedding, retriever, reranker, llm
    for node in nodes:  # each node's call reached its component, whose server span sits under it
        served = [
            row
            for row in rows
            if row["service"] != "chatqna"
            and row["parent_id"] in by_id
            and by_id[row["parent_id"]]["parent_id"] == node["span_id"]
        ]
        assert served, (node["name"], [(row["service"], row["name"]) for row in rows])
        # under the pipeline's name of the service (`guardrail`, `reranker`), not its component's own
        assert {row["service"] for row in served} == {node["name"].split()[1]}, (node["name"], served)
    assert trace["errors"] == 0


def test_a_killed_service_is_named_reported_and_restarted(stack: Up) -> None:
    os.kill(stack.pid_of("reranker"), signal.SIGKILL)
    answer = httpx.post(
        f"{stack.url(8888)}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8},
        timeout=60,
    )
    assert answer.status_code in (502, 503), answer.text
    assert "reranker" in answer.text
    stack.wait_for(r"reranker exited with code -9; restarting it")
    stack.wait_for(r"reranker is ready again")
    again = httpx.post(
        f"{stack.url(8888)}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8},
        timeout=120,
    )
    assert again.status_code == 200, again.text


def _descendants(roots: dict[int, str]) -> dict[int, str]:
    """Every live process under one of `roots` (pid -> name), with the name of its root."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):  # gone meanwhile
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found = {}
    for pid in parents:
        owner, steps = pid, 0
        while owner not in roots and owner in parents and steps < 64:
            owner, steps = parents[owner], steps + 1
        if owner in roots:
            found[pid] = roots[owner]
    return found


def _slices(pid: int) -> set[int]:
    """The scheduler slice (ns) of each live thread of `pid`."""
    found = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            value = slice_of(int(task.name))
            if value is not None:  # None: the thread ended meanwhile
                found.add(value)
    return found


@pytest.mark.skipif(slice_of() is None, reason="the kernel does not report scheduler slices (Linux 6.12+)")
def test_the_request_path_runs_with_short_slices_and_the_model_server_with_ups(stack: Up) -> None:
    started = {}
    for line in stack.lines:
        match = re.search(r"\| (\S+) started( again)? \(pid (\d+)\)", line)
        if match:
            started[int(match[3])] = match[1]
    assert {"megaservice", "postgres", "retriever", "reranker", "llm-server"} <= set(started.values())
    checked: dict[str, set[int]] = {}
    counted: dict[str, int] = {}
    for pid, name in _descendants(started).items():
        checked.setdefault(name, set()).update(_slices(pid))
        counted[name] = counted.get(name, 0) + 1
    assert counted["postgres"] >= 3, counted  # the owner process, PostgreSQL's server and its workers
    assert checked.pop("traces") == checked.pop("llm-server") == _slices(stack.process.pid)  # up's own
    assert set(checked) >= {"megaservice", "postgres", "retriever", "reranker", "embedding", "llm"}, checked
    assert all(found == {100_000} for found in checked.values()), checked


def test_ctrl_c_stops_everything_and_a_restart_keeps_the_data(stack: Up) -> None:
    assert _processes_using(stack.data_dir)
    assert _stop(stack) == 0
    assert _processes_using(stack.data_dir) == []
    path = stack.data_dir.parent / "chatqna.yaml"
    again = _start(path, stack.data_dir, stack.ports)
    try:
        again.wait_for(r"chatqna is up in")
        again.wait_for(r"the store already holds documents")
        listed = httpx.post(f"{again.url(5000)}/v1/dataprep/get", json={}, timeout=30).text
        assert FACT_FILE in listed
    finally:
        assert _stop(again) == 0
    assert _processes_using(stack.data_dir) == []
