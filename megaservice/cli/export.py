"""`megaservice export compose|k8s PIPELINE -o DIR`: the deployment of a pipeline, generated from its file."""

from pathlib import Path
from typing import Annotated

import typer

from megaservice.exceptions import ConfigurationError

__all__ = ["export_app"]

export_app = typer.Typer(
    name="export",
    help="Write the deployment of a pipeline: a Docker Compose project or Kubernetes manifests.",
    no_args_is_help=True,
)

Pipeline = Annotated[str, typer.Argument(help="A pipeline file, or the name of a shipped one (chatqna, seeds).")]
Output = Annotated[Path, typer.Option("--output", "-o", help="The folder to write into (made if need be).")]
Image = Annotated[str | None, typer.Option(help="The image our containers run (default: megaservice:VERSION).")]
External = Annotated[
    list[str] | None,
    typer.Option(help="A `url:` service on this machine to keep calling there instead of running it (repeat)."),
]
Tracing = Annotated[bool, typer.Option(help="Run Jaeger and send every service's traces to it.")]


@export_app.command()
def compose(
    pipeline: Pipeline, output: Output, image: Image = None, external: External = None, tracing: Tracing = True
) -> None:
    """Write docker-compose.yaml, the megaservice's pipeline.yaml and .env (then: docker compose up -d)."""
    _export("compose", pipeline, output, image, external, tracing)


@export_app.command("k8s")
def kubernetes(
    pipeline: Pipeline, output: Output, image: Image = None, external: External = None, tracing: Tracing = True
) -> None:
    """Write Kubernetes manifests and a kustomization (then: kubectl apply -k DIR)."""
    _export("k8s", pipeline, output, image, external, tracing)


def _export(kind: str, name: str, output: Path, image: str | None, external: list[str] | None, tracing: bool) -> None:
    from dataclasses import replace

    from megaservice.export import ExportOptions, write_compose, write_kubernetes
    from megaservice.pipeline import find_pipeline, load_pipeline

    options = ExportOptions(external=frozenset(external or ()), tracing=tracing)
    if image is not None:
        options = replace(options, image=image)
    write = write_compose if kind == "compose" else write_kubernetes
    try:
        pipeline = load_pipeline(name)
        source = name if not Path(name).is_file() else str(find_pipeline(name))
        exported = write(pipeline, output, options, source=source)
    except ConfigurationError as exc:
        typer.echo(f"megaservice export {kind}: {exc}", err=True)
        raise typer.Exit(2) from None
    for path in exported.files:
        typer.echo(str(path))
    for note in exported.notes:
        typer.echo(f"note: {note}", err=True)
