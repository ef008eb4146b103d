"""OPEA's `BaseService` (a name and runtime arguments) and `HTTPService` (a FastAPI app served by uvicorn).

Constructing either only stores configuration and builds the app; nothing is bound until
`start()` (blocking, as OPEA) or `await serve()` (inside a running loop).
"""

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from types import SimpleNamespace
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from megaservice._serving.app import ServiceApp
from megaservice._serving.lifespan import Lifecycle, ReadinessCheck
from megaservice._serving.probes import add_probes
from megaservice._serving.server import bind_socket, uvicorn_config
from megaservice.limits import Limits
from megaservice.settings import Settings

__all__ = ["DEFAULT_DESCRIPTION", "BaseService", "HTTPService"]

DEFAULT_DESCRIPTION = "OPEA Microservice Infrastructure"


class BaseService:
    """Name and runtime arguments of a service (OPEA's `BaseService`).

    `runtime_args` (a dict or a namespace) has the service's `protocol`, `host`, `port` (one, or a
    list), `title` (default: the name) and `description`.
    """

    def __init__(self, name: str | None = "Base service", runtime_args: Any = None, **kwargs: Any) -> None:
        self.name = name or "Base service"
        args = runtime_args if runtime_args is not None else {}
        self.runtime_args = SimpleNamespace(**args) if isinstance(args, dict) else args
        self.protocol = getattr(self.runtime_args, "protocol", "http")
        self.title = getattr(self.runtime_args, "title", self.name)
        self.description = getattr(self.runtime_args, "description", None) or DEFAULT_DESCRIPTION
        self.server: uvicorn.Server | None = None
        """The uvicorn server, once `start()` or `serve()` made it."""

    @property
    def primary_port(self) -> int:
        """The first port the service listens on."""
        port = self.runtime_args.port
        return int(port[0] if isinstance(port, list) else port)

    @property
    def all_ports(self) -> list[int]:
        """Every port the service listens on."""
        port = self.runtime_args.port
        return [int(p) for p in port] if isinstance(port, list) else [int(port)]

    @property
    def protocols(self) -> list[str]:
        """The service's protocols."""
        protocol = self.runtime_args.protocol
        return list(protocol) if isinstance(protocol, list) else [protocol]

    @property
    def host_address(self) -> str:
        """The address the service binds."""
        return str(getattr(self.runtime_args, "host", None) or "127.0.0.1")

    # OPEA compat: readiness helpers of BaseService/HTTPService (broken in OPEA).
    @staticmethod
    def check_server_readiness(ctrl_address: str, timeout: float = 1.0, **kwargs: Any) -> bool:
        """Return whether something accepts TCP connections at `host:port`."""
        host, _, port = ctrl_address.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
                return True
        except OSError:
            return False

    @staticmethod
    async def async_check_server_readiness(ctrl_address: str, timeout: float = 1.0, **kwargs: Any) -> bool:
        """Async form of `check_server_readiness`."""
        host, _, port = ctrl_address.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host or "127.0.0.1", int(port)), timeout)
        except (OSError, TimeoutError):
            return False
        writer.close()
        await writer.wait_closed()
        return True


class HTTPService(BaseService):
    """A FastAPI app served by uvicorn, with the probes and `/v1/statistics` (`megaservice._serving.probes`).

    `settings` default to the environment's (`Settings.from_env()`); `limits` to `settings.limits`.
    """

    def __init__(
        self,
        uvicorn_kwargs: dict[str, Any] | None = None,
        cors: bool = True,
        limits: Limits | None = None,
        settings: Settings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings if settings is not None else Settings.from_env()
        self.uvicorn_kwargs = dict(uvicorn_kwargs or {})
        """Options passed on to `uvicorn.Config` (OPEA passes `ssl_keyfile` and `ssl_certfile`)."""
        self.cors = cors
        self.limits = limits if limits is not None else self.settings.limits
        self._lifecycle = Lifecycle(
            gc_tuning=self.settings.gc_tuning, tracing=self.settings.tracing, service_name=self.title or self.name
        )
        self._sockets: list[socket.socket] = []
        self._app = self._create_app()

    @property
    def app(self) -> FastAPI:
        """The service's FastAPI application."""
        return self._app

    def _create_app(self) -> ServiceApp:
        app = ServiceApp(
            self.limits,
            http_metrics=self.settings.http_metrics,
            access_log=self.settings.access_log and bool(self.uvicorn_kwargs.get("access_log", True)),
            title=self.title,
            description=self.description,
            lifespan=self._lifecycle.lifespan,
        )
        if self.cors:
            from starlette.middleware.cors import CORSMiddleware

            # Unlike OPEA, no credentials with a wildcard origin: browsers would send cookies to anyone.
            app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
        app.seal_middleware()
        add_probes(app, self, self._lifecycle)
        return app

    def add_route(
        self,
        endpoint: str,
        handler: Callable[..., Any],
        methods: Sequence[str] | None = None,
        *,
        body_model: type[BaseModel] | str | None = None,
    ) -> None:
        """Add a FastAPI route (the handler may take a `Request` or pydantic bodies and return a response).

        `body_model` documents in the OpenAPI schema the JSON body of a handler that reads the
        `Request` itself: a model, or `"module:Name"` (imported when the schema is built). Without
        it, a `MicroService` megaservice documents its chat endpoints' bodies (`ChatCompletionRequest`).
        """
        if body_model is None:
            body_model = self._implied_body_model(endpoint, handler)
        self._app.add_route_fast(endpoint, handler, methods=list(methods or ["POST"]), body_model=body_model)

    def _implied_body_model(self, endpoint: str, handler: Callable[..., Any]) -> type[BaseModel] | str | None:
        """The body model documented for a route added without one: none."""
        return None

    def add_startup_event(self, func: Callable[[], Awaitable[Any]] | Awaitable[Any]) -> None:
        """Run `func` (a coroutine, or an async function) as a background task while the service runs."""
        self._lifecycle.startup.append(func)

    def on_shutdown(self, func: Callable[[], Awaitable[Any] | Any]) -> None:
        """Call `func` (sync or async) when the service stops."""
        self._lifecycle.shutdown.append(func)

    def add_readiness_check(self, check: ReadinessCheck) -> None:
        """Make `GET /v1/ready` answer 503 while `check()` (sync or async) is false or raises."""
        self._lifecycle.readiness.append(check)

    # -- serving --------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the port and serve until stopped (SIGINT/SIGTERM or `stop()`); blocks, as in OPEA."""
        sockets = self._listen()
        try:
            self.server = self._server()
            self.server.run(sockets=sockets)
        finally:
            self._close_sockets()

    async def serve(self) -> None:
        """Serve inside the running event loop until `stop()` (or cancellation)."""
        sockets = self._listen()
        try:
            self.server = self._server()
            await self.server.serve(sockets=sockets)
        finally:
            self._close_sockets()

    @property
    def started(self) -> bool:
        """Whether the server finished starting up and accepts connections."""
        return self.server is not None and self.server.started

    @property
    def bound_port(self) -> int | None:
        """The port actually bound (useful with port 0), or `None` before binding."""
        return self._sockets[0].getsockname()[1] if self._sockets else None

    def stop(self) -> None:
        """Ask the server to shut down and free the port."""
        if self.server is not None:
            self.server.should_exit = True
        else:
            self._close_sockets()

    def _server(self) -> uvicorn.Server:
        return uvicorn.Server(uvicorn_config(self._app, self.host_address, self.primary_port, self.uvicorn_kwargs))

    def _listen(self) -> list[socket.socket]:
        if not self._sockets:
            self._sockets = [bind_socket(self.host_address, self.primary_port)]
        return self._sockets

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []
