"""The `megaservice` command.

megaservice serve NAME [--backend B] [--host H] [--port P]    one component, in this process
megaservice gateway PIPELINE [--host H] [--port P]            the megaservice of a pipeline, in this process
"""

from megaservice.cli.app import app, main

__all__ = ["app", "main"]
