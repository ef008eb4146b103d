"""`megaservice gateway PIPELINE`: serve just the megaservice of a pipeline (its services run elsewhere).

What the Compose / Kubernetes export runs in the megaservice's container, and what `megaservice up`
can start as the pipeline's last process.
"""

import logging
from typing import Annotated

import typer

__all__ = ["gateway"]


def gateway(
    pipeline: Annotated[str, typer.Argument(help="A pipeline file, or the name of a shipped one (chatqna, seeds).")],
    host: Annotated[str | None, typer.Option(help="The address to listen on (default: the pipeline's).")] = None,
    port: Annotated[int | None, typer.Option(help="The port to listen on (default: the pipeline's, 8888).")] = None,
) -> None:
    """Serve the megaservice of PIPELINE: its chat routes, the chat page, its dataprep routes."""
    from megaservice.exceptions import ConfigurationError
    from megaservice.gateway import create_gateway
    from megaservice.pipeline import load_pipeline
    from megaservice.settings import work_offline

    work_offline()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    try:
        # the gateway starts no component: their backends are checked by `up` and `export`, not imported here
        service = create_gateway(load_pipeline(pipeline, check_backends=False), host=host, port=port)
    except ConfigurationError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    service.start()
