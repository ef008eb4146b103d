"""Start a component as its own process: `megaservice serve NAME` and `python -m megaservice.components.NAME`."""

import argparse
import dataclasses
import logging
from collections.abc import Mapping, Sequence

from megaservice.components import COMPONENTS, component_module
from megaservice.microservice import MicroService
from megaservice.settings import work_offline

__all__ = ["build", "main", "serve"]


def build(
    name: str,
    *,
    backend: str | None = None,
    host: str | None = None,
    port: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> MicroService:
    """Component `name`'s service, from the environment with the given values replacing its own."""
    module = component_module(name)
    settings = module.SETTINGS.from_env(environ)
    changes = {key: value for key, value in (("backend", backend), ("host", host), ("port", port)) if value is not None}
    if changes:
        settings = dataclasses.replace(settings, **changes)
    service = module.create_service(settings)
    assert isinstance(service, MicroService), f"{module.__name__}.create_service() must return a MicroService"
    return service


def serve(name: str, *, backend: str | None = None, host: str | None = None, port: int | None = None) -> None:
    """Build component `name` and serve it until SIGINT/SIGTERM (blocks)."""
    work_offline()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    service = build(name, backend=backend, host=host, port=port)
    service.start()


def main(name: str, argv: Sequence[str] | None = None) -> None:
    """The `__main__` of component `name`: `--backend`, `--host`, `--port`, then `serve()`."""
    parser = argparse.ArgumentParser(prog=f"python -m {COMPONENTS[name]}", description=f"Serve the {name} component.")
    parser.add_argument("--backend", help="which backend (default: the environment's, else the component's default)")
    parser.add_argument("--host", help="the address to listen on")
    parser.add_argument("--port", type=int, help="the port to listen on")
    args = parser.parse_args(argv)
    serve(name, backend=args.backend, host=args.host, port=args.port)
