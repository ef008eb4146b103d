"""The `megaservice` command itself and its small commands (`up`'s tests: tests/launcher; `ask`'s: tests/gateway)."""

from typer.testing import CliRunner

from megaservice._version import __version__
from megaservice.cli import app


def test_version_prints_the_package_version_and_exits_0():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"megaservice {__version__}\n"
