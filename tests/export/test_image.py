"""The one image every container runs: the Dockerfile passes hadolint and runs what the exports ask of it."""

import re
from pathlib import Path

import typer

from megaservice.cli.app import app
from megaservice.export import plan_deployment
from tests.export.conftest import pipelines, run, tool

ROOT = Path(__file__).parents[2]


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined), comments left out."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_dockerfile_passes_hadolint():
    run(tool("hadolint"), "--failure-threshold", "style", ROOT / "Dockerfile")


def test_the_image_runs_megaservice_as_a_user_offline_with_its_data_in_slash_data():
    final = instructions()[max(i for i, (op, _) in enumerate(instructions()) if op == "FROM") :]
    assert final[0] == ("FROM", "python:3.11-slim")
    assert ("ENTRYPOINT", '["megaservice"]') in final
    users = [arg for op, arg in final if op == "USER"]
    assert users == ["1000:1000"]  # what the manifests' runAsUser and fsGroup say
    env = " ".join(arg for op, arg in final if op == "ENV")
    assert "HF_HUB_OFFLINE=1" in env
    assert "MEGASERVICE_DATA_DIR=/data" in env
    build = " ".join(arg for op, arg in instructions() if op == "RUN")
    assert "--index-url https://download.pytorch.org/whl/cpu" in build
    assert '"./[all]"' in build


def test_only_the_package_goes_into_the_build_context():
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1:4] == ["**", "!pyproject.toml", "!README.md"]
    copied = [arg.split()[0] for op, arg in instructions() if op == "COPY" and not arg.startswith("--from")]
    assert copied == ["pyproject.toml", "megaservice"]
    assert f"!{copied[1]}/" in ignored


def _commands() -> dict[str, set[str]]:
    """The options of each `megaservice` command that the containers of the three exports run on our image."""
    found: dict[str, set[str]] = {}
    for pipeline in pipelines().values():
        for container in plan_deployment(pipeline).containers:
            if container.ours:
                found.setdefault(container.args[0], set()).update(a for a in container.args if a.startswith("--"))
    return found


def _options(name: str) -> set[str]:
    command = typer.main.get_command(app).commands.get(name)  # type: ignore[attr-defined]  # a group
    assert command is not None, f"megaservice {name} is not a command"
    return {option for param in command.params for option in param.opts}


def test_components_run_with_options_that_megaservice_serve_has():
    assert _commands()["serve"] == {"--host", "--port", "--backend"}
    assert _commands()["serve"] <= _options("serve")


def test_the_megaservice_container_runs_megaservice_gateway():
    assert _commands()["gateway"] <= _options("gateway")
