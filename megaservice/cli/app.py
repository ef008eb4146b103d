"""The `megaservice` command's commands (typer): each is a thin layer over a function of the package."""

from typing import Annotated

import typer

from megaservice.cli import up
from megaservice.cli.export import export_app
from megaservice.cli.gateway import gateway
from megaservice.cli.ingest import ingest
from megaservice.components import COMPONENTS

__all__ = ["app", "main"]

app = typer.Typer(
    name="megaservice",
    help="Run GenAI pipelines as HTTP microservices (OPEA-compatible).",
    no_args_is_help=True,
    add_completion=False,
)


app.add_typer(export_app)


def _print_version(value: bool) -> None:
    if value:
        from megaservice._version import __version__

        typer.echo(f"megaservice {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print megaservice's version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Run GenAI pipelines as HTTP microservices (OPEA-compatible)."""


@app.command()
def serve(
    name: Annotated[str, typer.Argument(help=f"The component: {', '.join(COMPONENTS)}.")],
    backend: Annotated[str | None, typer.Option(help="Its backend (default: from the environment).")] = None,
    host: Annotated[str | None, typer.Option(help="The address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="The port to listen on (default: the component's).")] = None,
) -> None:
    """Serve one component (the same as `python -m megaservice.components.NAME`)."""
    if name not in COMPONENTS:
        raise typer.BadParameter(
            f"no component {name!r}; the components are: {', '.join(COMPONENTS)}", param_hint="NAME"
        )
    from megaservice.components._shared.runner import serve as serve_component

    serve_component(name, backend=backend, host=host, port=port)


app.command()(up.up)
app.command()(up.ask)
app.command()(up.pipelines)
app.command()(gateway)
app.command()(ingest)


def main() -> None:
    """The console script's entry point."""
    app()
