"""`megaservice up --observe`: the trace receiver first, every service exporting to it, one trace per request."""

import asyncio
import socket
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from megaservice.exceptions import ConfigurationError
from megaservice.launcher import Launcher, LaunchError, service_commands
from megaservice.launcher.observe import Receiver, receiver_for
from megaservice.pipeline import load_pipeline
from megaservice.pipeline.loader import PipelineFileError, find_pipeline, parse_pipeline
from megaservice.testing import FakeLLM, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def tiny(port: int, *, observe: str = "", env: str = "", name: str = "llm") -> str:
    return textwrap.dedent(
        f"""
        name: tiny
        services:
          {name}:
            component: llm
            port: {port}
            env: {{LLM_ENDPOINT: "http://127.0.0.1:9", {env}}}
        megaservice:
          port: {port + 1}
          flow: [{name}]
        """
    ) + (f"observe: {observe}\n" if observe else "")


def test_the_receiver_starts_first_and_every_service_exports_to_it(tmp_path: Path) -> None:
    path = find_pipeline("chatqna")
    pipeline = load_pipeline(path)
    receiver = receiver_for(pipeline)
    assert (receiver.name, receiver.port, receiver.ui_port) == ("traces", 4318, 16686)
    commands = service_commands(pipeline, path, data_dir=tmp_path, receiver=receiver)
    first, services = commands[0], commands[1:]
    assert first.name == "traces" and first.argv[1:3] == ["-m", "megaservice.observe"]
    assert (first.port, first.ports) == (4318, (16686,))
    assert "TELEMETRY_ENDPOINT" not in first.env or first.env["TELEMETRY_ENDPOINT"] != receiver.traces_url
    assert [c.name for c in services] == [c.name for c in service_commands(pipeline, path, data_dir=tmp_path)]
    for command in services:
        assert command.env["TELEMETRY_ENDPOINT"] == "http://127.0.0.1:4318/v1/traces", command.name
        if command.name != "megaservice":  # which names its spans by the pipeline's name itself
            assert command.env["OTEL_SERVICE_NAME"] == command.name  # `guardrail`, not the component's `bias`
        assert command.env["OTEL_BSP_SCHEDULE_DELAY"] == "1000"
    # without it, nothing is traced unless the environment says so
    plain = service_commands(pipeline, path, data_dir=tmp_path)
    assert all(c.env.get("TELEMETRY_ENDPOINT") != receiver.traces_url for c in plain)


def test_observe_wins_over_a_services_own_endpoint_and_the_sdks_off_switch(tmp_path: Path) -> None:
    text = tiny(
        7100,
        env='TELEMETRY_ENDPOINT: "http://jaeger:4318/v1/traces", OTEL_SDK_DISABLED: "true", '
        'OTEL_BSP_SCHEDULE_DELAY: "50"',
    )
    pipeline = parse_pipeline(text, "tiny.yaml")
    receiver = receiver_for(pipeline)
    llm = service_commands(pipeline, tmp_path / "tiny.yaml", receiver=receiver)[1]
    assert llm.env["TELEMETRY_ENDPOINT"] == receiver.traces_url
    assert "OTEL_SDK_DISABLED" not in llm.env
    assert llm.env["OTEL_BSP_SCHEDULE_DELAY"] == "50"  # what the file says stays
    assert llm.env["OTEL_SERVICE_NAME"] == "llm"  # the pipeline's name of the service
    named = parse_pipeline(tiny(7100, env='OTEL_SERVICE_NAME: "answers"'), "tiny.yaml")
    assert service_commands(named, tmp_path / "tiny.yaml", receiver=receiver)[1].env["OTEL_SERVICE_NAME"] == "answers"


def test_jaegers_ports_move_up_where_the_pipeline_uses_them_and_asked_ports_may_not_clash() -> None:
    pipeline = parse_pipeline(tiny(4318), "tiny.yaml")  # llm on 4318, the megaservice on 4319
    receiver = receiver_for(pipeline)
    assert (receiver.port, receiver.ui_port) == (4320, 16686)
    assert receiver_for(pipeline, port=5001, ui_port=5002).port == 5001
    with pytest.raises(ConfigurationError, match="port 4319 is also the port of megaservice"):
        receiver_for(pipeline, port=4319)
    with pytest.raises(ConfigurationError, match="ui-port 5001 is also the port of the receiver's other port"):
        receiver_for(pipeline, port=5001, ui_port=5001)
    pipeline = parse_pipeline(tiny(16686), "tiny.yaml")
    assert receiver_for(pipeline).ui_port == 16688


def test_the_pipeline_file_can_ask_for_it() -> None:
    assert parse_pipeline(tiny(7100), "t.yaml").observe is None
    assert parse_pipeline(tiny(7100, observe="false"), "t.yaml").observe is None
    on = parse_pipeline(tiny(7100, observe="true"), "t.yaml")
    assert on.observe is not None and (on.observe.port, on.observe.max_traces) == (None, 500)
    pipeline = parse_pipeline(tiny(7100, observe="{port: 4400, ui_port: 4401, max_traces: 20}"), "t.yaml")
    receiver = receiver_for(pipeline)
    assert (receiver.port, receiver.ui_port, receiver.max_traces, receiver.max_spans) == (4400, 4401, 20, 20_000)
    assert receiver.argv()[-4:] == ["--max-traces", "20", "--max-spans", "20000"]
    assert receiver_for(pipeline, port=4500).port == 4500  # the command line's port wins
    with pytest.raises(PipelineFileError, match=r"observe\.port 7100 is also the port of llm"):
        parse_pipeline(tiny(7100, observe="{port: 7100}"), "t.yaml")
    with pytest.raises(PipelineFileError, match="max_traces"):
        parse_pipeline(tiny(7100, observe="{max_traces: 0}"), "t.yaml")


def test_a_pipeline_service_named_traces_leaves_the_receiver_another_name() -> None:
    pipeline = parse_pipeline(tiny(7100).replace("  llm:\n", "  traces:\n").replace("[llm]", "[traces]"), "t.yaml")
    assert receiver_for(pipeline).name == "trace-viewer"


def test_a_taken_viewer_port_is_refused_naming_the_receiver_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        pipeline = parse_pipeline(tiny(_free_port()), "tiny.yaml")
        receiver = receiver_for(pipeline, port=_free_port(), ui_port=taken)
        lines: list[tuple[str, str]] = []
        launcher = Launcher(
            pipeline,
            tmp_path / "tiny.yaml",
            data_dir=tmp_path,
            emit=lambda n, s: lines.append((n, s)),
            receiver=receiver,
        )
        with pytest.raises(LaunchError, match=rf"(?s)\n  traces  port {taken}\n.*Jaeger.*--observe-ui-port"):
            asyncio.run(launcher.run())
    assert lines == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_up_observe_shows_one_trace_spanning_the_megaservice_and_the_llm_service(tmp_path: Path) -> None:
    llm_port = _free_port()
    gateway_port = _free_port()
    lines: list[tuple[str, str]] = []
    announced = asyncio.Event()

    def emit(name: str, line: str) -> None:
        lines.append((name, line))
        if name == "up" and " is up in " in line:
            announced.set()

    model = FakeLLM(tokens=["Traces", " work", "."])
    async with serve(model) as model_url:
        # named `writer` in the pipeline (the component's own service name is `llm`): its spans say `writer`
        text = tiny(llm_port, env='LLM_MODEL_ID: "fake-llm"', name="writer").replace("http://127.0.0.1:9", model_url)
        text = text.replace(f"port: {llm_port + 1}", f"port: {gateway_port}")
        path = tmp_path / "tiny.yaml"
        path.write_text(text)
        pipeline = load_pipeline(path)
        receiver = receiver_for(pipeline, port=_free_port(), ui_port=_free_port())
        launcher = Launcher(pipeline, path, data_dir=tmp_path, emit=emit, ready_timeout=90, receiver=receiver)
        running = asyncio.ensure_future(launcher.run())
        try:
            async with asyncio.timeout(120):
                done, _ = await asyncio.wait(
                    {running, asyncio.ensure_future(announced.wait())}, return_when="FIRST_COMPLETED"
                )
                assert running not in done, lines
            names = [line.split(":")[0].removeprefix("starting ") for n, line in lines if line.startswith("starting ")]
            assert names == ["traces", "writer", "megaservice"]
            assert ("up", f"  traces      {receiver.viewer_url}   (spans in at {receiver.traces_url})") in lines
            async with httpx.AsyncClient(timeout=30) as client:
                body = {"messages": [{"role": "user", "content": "Do traces work?"}], "stream": False}
                answer = await client.post(f"http://127.0.0.1:{gateway_port}/v1/chat/completions", json=body)
                assert answer.status_code == 200, answer.text
                trace = await _the_trace(client, receiver, services={"tiny", "writer"})
                page = await client.get(receiver.viewer_url)
                assert page.status_code == 200 and "megaservice traces" in page.text
        finally:
            launcher.request_stop()
            code = await running
    assert code == 0
    rows = {(row["service"], row["name"]): row for row in trace["spans"]}
    server = rows["tiny", "POST /v1/chat/completions"]
    node = next(row for (service, name), row in rows.items() if service == "tiny" and name.startswith("node writer"))
    served = rows["writer", "POST /v1/chat/completions"]
    assert server["depth"] == 0 and trace["root_service"] == "tiny"
    assert node["parent_id"] == server["span_id"] and served["depth"] > node["depth"]
    assert node["key_attributes"]["gen_ai.usage.output_tokens"] == 0  # what the fake model server reports
    assert trace["errors"] == 0
    assert any(n == "traces" for n, _ in lines)  # the receiver's own log lines, prefixed with its name


async def _the_trace(client: httpx.AsyncClient, receiver: Receiver, services: set[str]) -> dict[str, Any]:
    """The first trace the viewer lists over `services`, once it has arrived (exporters send every second)."""
    api = receiver.viewer_url + "api/traces"
    deadline = time.monotonic() + 30
    listed: dict[str, Any] = {}
    while time.monotonic() < deadline:
        listed = (await client.get(api)).json()
        for summary in listed["traces"]:
            if services <= set(summary["services"]):
                trace = (await client.get(f"{api}/{summary['trace_id']}")).json()
                if any(
                    row["service"] in services - {"tiny"} and row["name"].startswith("POST") for row in trace["spans"]
                ) and any(row["depth"] == 0 and row["service"] == "tiny" for row in trace["spans"]):
                    return trace
        await asyncio.sleep(0.3)
    raise AssertionError(f"no trace over {services}: {listed}")


def test_the_command_line_turns_it_on_or_off_and_names_a_clash(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from megaservice.cli import app

    path = tmp_path / "tiny.yaml"
    path.write_text(tiny(7100, observe="true"))
    observed = CliRunner().invoke(app, ["up", str(path), "--dry-run"], env={"COLUMNS": "300"})
    assert observed.exit_code == 0, observed.output
    lines = observed.output.splitlines()
    assert lines[0].startswith("traces") and "-m megaservice.observe" in lines[0] and "--port 4318" in lines[0]
    plain = CliRunner().invoke(app, ["up", str(path), "--dry-run", "--no-observe"], env={"COLUMNS": "300"})
    assert plain.exit_code == 0 and "megaservice.observe" not in plain.output
    path.write_text(tiny(7100))
    ported = CliRunner().invoke(
        app, ["up", str(path), "--dry-run", "--observe-ui-port", "7200"], env={"COLUMNS": "300"}
    )
    assert "--port 4318 --ui-port 7200" in ported.output.splitlines()[0]
    clash = CliRunner().invoke(app, ["up", str(path), "--observe", "--observe-port", "7101"], env={"COLUMNS": "300"})
    assert clash.exit_code == 2 and "port 7101 is also the port of megaservice" in clash.output


def test_observe_without_the_tracing_extra_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "opentelemetry.sdk" else real(name, *a)
    )
    pipeline = parse_pipeline(tiny(_free_port()), "tiny.yaml")
    lines: list[tuple[str, str]] = []
    launcher = Launcher(
        pipeline,
        tmp_path / "tiny.yaml",
        data_dir=tmp_path,
        emit=lambda n, s: lines.append((n, s)),
        receiver=receiver_for(pipeline, port=_free_port(), ui_port=_free_port()),
    )
    with pytest.raises(
        LaunchError, match=r"--observe .* opentelemetry\.sdk is not installed: pip install 'megaservice\[tracing\]'"
    ):
        asyncio.run(launcher.run())
    assert lines == []
