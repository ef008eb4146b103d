"""MCP on a microservice: its handlers as Model Context Protocol tools, resources or prompts.

OPEA's `enable_mcp=True` replaces the HTTP service by an MCP-only server. Here the MCP server's
SSE transport (`GET /sse`, `POST /messages/`, what OPEA's clients connect to) is added to the
service's own app: one port serves the HTTP routes, the probes and MCP. Needs the `mcp` package,
1.x (`pip install 'megaservice[mcp]'`), the version OPEA pins.
"""

from collections.abc import Callable
from enum import Enum
from typing import Any

from megaservice._serving.app import ServiceApp
from megaservice.constants import MCPFuncType
from megaservice.exceptions import ConfigurationError, MissingDependencyError

__all__ = ["MCPBridge"]


class MCPBridge:
    """One service's MCP server (`server` is the `mcp` package's `FastMCP`)."""

    def __init__(self, name: str, host: str, port: int) -> None:
        try:
            from mcp.server.fastmcp import FastMCP
        except ImportError as exc:  # mcp missing, or mcp 2.x (FastMCP became MCPServer)
            raise MissingDependencyError("mcp<2", "mcp") from exc
        self.server = FastMCP(name, host=host, port=port)

    def register(self, func: Callable[..., Any], kind: Enum = MCPFuncType.TOOL, description: str | None = None) -> None:
        """Expose `func` under its own name as a tool, a resource (`resource://<name>`) or a prompt."""
        name = func.__name__
        if kind is MCPFuncType.TOOL:
            self.server.add_tool(func, name=name, description=description)
        elif kind is MCPFuncType.RESOURCE:
            self.server.resource(f"resource://{name}", name=name, description=description)(func)
        elif kind is MCPFuncType.PROMPT:
            self.server.prompt(name=name, description=description)(func)
        else:
            raise ConfigurationError(f"unknown MCP function type {kind!r}: use MCPFuncType.TOOL, RESOURCE or PROMPT")

    def attach(self, app: ServiceApp) -> None:
        """Serve the SSE transport's routes on `app`, without its disconnect watcher (MCP handles disconnects)."""
        app.router.routes.extend(self.server.sse_app().routes)
        settings = self.server.settings
        app.unwatched += (settings.sse_path, settings.message_path)
