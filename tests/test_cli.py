"""The `megaservice` command itself and its small commands (`up`'s tests: tests/launcher; `ask`'s: tests/gateway)."""

import pytest
from typer.testing import CliRunner

from megaservice._version import __version__
from megaservice.cli import app


def test_version_prints_the_package_version_and_exits_0():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"megaservice {__version__}\n"


@pytest.mark.parametrize("columns", ["80", "40"])
def test_pipelines_prints_each_file_path_whole_on_a_narrow_terminal(columns):
    from megaservice.pipeline.loader import shipped_pipelines

    result = CliRunner().invoke(app, ["pipelines"], env={"COLUMNS": columns, "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    for name, path in shipped_pipelines().items():
        assert any(line.startswith(f"{name} ") for line in lines), result.stdout
        assert f"file: {path}" in lines, result.stdout
