"""`MicroService`: one HTTP service (a component, or the megaservice gateway), and one node of a pipeline.

As a node (`use_remote_service=True`) it is only an address: the orchestrator calls
`endpoint_path()`. As a local service it owns a FastAPI app with the standard routes; nothing is
bound or started until `start()` (blocking, as OPEA) or `await serve()` (inside a running loop).

    BaseService        name, runtime args (host, port, protocol, title, description)
    └── HTTPService    the FastAPI app, its lifespan, start()/serve()/stop(), add_route()
        └── MicroService   OPEA's constructor, service type/role, endpoint_path(), dynamic batching
"""

import asyncio
import contextlib
import dataclasses
import gc
import inspect
import logging
import socket
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from enum import Enum
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from megaservice._server import HealthCheckFilter, bind_socket
from megaservice._serving.app import ServiceApp
from megaservice._version import __version__
from megaservice.client import close_client
from megaservice.constants import MCPFuncType, MegaServiceEndpoint, ServiceRoleType, ServiceType
from megaservice.exceptions import ConfigurationError
from megaservice.limits import Limits
from megaservice.protocol.docs import TextDoc
from megaservice.protocol.limits import set_input_limits
from megaservice.resilience import CircuitBreaker, Retry, Timeout
from megaservice.settings import Settings
from megaservice.statistics import collect_all_statistics

__all__ = ["BaseService", "HTTPService", "MicroService", "opea_microservices", "register_microservice"]

if TYPE_CHECKING:
    from megaservice._mcp import MCPBridge

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
ReadinessCheck = Callable[[], Awaitable[bool] | bool]

DEFAULT_DESCRIPTION = "OPEA Microservice Infrastructure"

# OPEA compat: set by `megaservice.compat.install()`; local services then bind their port when
# constructed, as OPEA does (its tests construct services, fork, and expect the port to be taken).
_bind_on_construction = False


class BaseService:
    """Name and runtime arguments of a service (OPEA's `BaseService`)."""

    def __init__(self, name: str | None = "Base service", runtime_args: Any = None, **kwargs: Any) -> None:
        self.name = name or "Base service"
        args = runtime_args if runtime_args is not None else {}
        self.runtime_args = SimpleNamespace(**args) if isinstance(args, dict) else args
        self.protocol = getattr(self.runtime_args, "protocol", "http")
        self.title = getattr(self.runtime_args, "title", self.name)
        self.description = getattr(self.runtime_args, "description", None) or DEFAULT_DESCRIPTION
        self.server: uvicorn.Server | None = None

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


class HTTPService(BaseService):
    """A FastAPI app served by uvicorn, with health, readiness, statistics and metrics routes.

    Routes every service has: `GET /v1/health_check` (and `/v1/health`, same answer), `GET /health`
    (empty 200), `GET /v1/ready` (503 until started and every readiness check passes),
    `GET /v1/statistics`, `GET /metrics` (Prometheus).
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
        self.cors = cors
        self.limits = limits if limits is not None else self.settings.limits
        self._sockets: list[socket.socket] = []
        self._startup: list[Callable[[], Awaitable[Any]] | Awaitable[Any]] = []
        self._shutdown: list[Callable[[], Awaitable[Any] | Any]] = []
        self._readiness: list[ReadinessCheck] = []
        self._background: list[asyncio.Task[Any]] = []
        self._started = False
        self._app: ServiceApp = self._create_app()

    @property
    def app(self) -> FastAPI:
        """The service's FastAPI application."""
        return self._app

    def _create_app(self) -> ServiceApp:
        app = ServiceApp(
            self.limits,
            http_metrics=self.settings.http_metrics,
            title=self.title,
            description=self.description,
            lifespan=self._lifespan,
        )
        if self.cors:
            from starlette.middleware.cors import CORSMiddleware

            # Unlike OPEA, no credentials with a wildcard origin: browsers would send cookies to anyone.
            app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
        app.seal_middleware()
        # The probes' answers are documented as JSON schemas, not response models: a response model
        # makes FastAPI import `pydantic.v1` (0.9 MiB in every service) to check it is not one.
        for path in ("/v1/health_check", "/v1/health"):
            app.add_route_fast(path, self._health_check, methods=["GET"], tags=["health"], **_json_answer(_STRINGS))
        app.add_route_fast("/health", _empty_ok, methods=["GET"], tags=["health"])
        app.add_route_fast("/v1/ready", self._readiness_route, methods=["GET"], tags=["health"])
        app.add_route_fast("/v1/statistics", _statistics, methods=["GET"], tags=["health"], **_json_answer(_OBJECT))
        app.add_route_fast("/metrics", _metrics, methods=["GET"], tags=["health"], include_in_schema=False)
        return app

    async def _health_check(self) -> dict[str, str]:
        return {"Service Title": self.title, "Version": __version__, "Service Description": self.description}

    async def _readiness_route(self) -> Response:
        if not self._started:
            return JSONResponse({"status": "starting"}, status_code=503)
        for check in self._readiness:
            try:
                result = check()
                ready = await result if inspect.isawaitable(result) else result
            except Exception as exc:  # noqa: BLE001  # a failing check means "not ready", with the reason
                return JSONResponse({"status": "not ready", "reason": f"{type(exc).__name__}: {exc}"}, status_code=503)
            if not ready:
                name = getattr(check, "__qualname__", repr(check))
                return JSONResponse({"status": "not ready", "reason": f"{name} failed"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        if self.settings.gc_tuning:
            _tune_garbage_collector()
        for item in self._startup:
            awaitable = item() if callable(item) else item
            self._background.append(asyncio.ensure_future(awaitable))
        self._started = True
        try:
            yield
        finally:
            self._started = False
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            self._background.clear()
            for callback in self._shutdown:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            await close_client()

    def add_startup_event(self, func: Callable[[], Awaitable[Any]] | Awaitable[Any]) -> None:
        """Run `func` (a coroutine, or an async function) as a background task while the service runs."""
        self._startup.append(func)

    def on_shutdown(self, func: Callable[[], Awaitable[Any] | Any]) -> None:
        """Call `func` (sync or async) when the service stops."""
        self._shutdown.append(func)

    def add_readiness_check(self, check: ReadinessCheck) -> None:
        """Make `GET /v1/ready` answer 503 while `check()` (sync or async) is false or raises."""
        self._readiness.append(check)

    def add_route(self, endpoint: str, handler: Callable[..., Any], methods: Sequence[str] | None = None) -> None:
        """Add a FastAPI route (the handler may take a `Request` or pydantic bodies and return a response).

        On a megaservice, a chat-style endpoint (`/v1/chatqna`, `/v1/codegen`, …) whose handler reads
        the `Request` itself is documented in the OpenAPI schema as taking a `ChatCompletionRequest`,
        which is what OPEA's gateways parse there.
        """
        methods = list(methods or ["POST"])
        body_model = None
        role = getattr(self, "service_role", None)
        if role == ServiceRoleType.MEGASERVICE and endpoint in _CHAT_ENDPOINTS and _takes_only_request(handler):
            body_model = "megaservice.protocol.openai:ChatCompletionRequest"  # imported when /openapi.json is built
        self._app.add_route_fast(endpoint, handler, methods=methods, body_model=body_model)

    # -- serving --------------------------------------------------------------------------------

    def _uvicorn_config(self) -> uvicorn.Config:
        # No websockets route in a service: `ws="none"` spares importing a websockets implementation.
        options: dict[str, Any] = {"log_level": "info", "timeout_graceful_shutdown": 5, "ws": "none"}
        options.update(self.uvicorn_kwargs)
        return uvicorn.Config(self._app, host=self.host_address, port=self.primary_port, **options)

    def _listen(self) -> list[socket.socket]:
        if not self._sockets:
            self._sockets = [bind_socket(self.host_address, self.primary_port)]
        return self._sockets

    @property
    def bound_port(self) -> int | None:
        """The port actually bound (useful with port 0), or `None` before binding."""
        return self._sockets[0].getsockname()[1] if self._sockets else None

    def start(self) -> None:
        """Bind the port and serve until stopped (SIGINT/SIGTERM or `stop()`); blocks, as in OPEA."""
        logging.getLogger("uvicorn.access").addFilter(HealthCheckFilter())
        self.server = uvicorn.Server(self._uvicorn_config())
        try:
            self.server.run(sockets=self._listen())
        finally:
            self._close_sockets()

    async def serve(self) -> None:
        """Serve inside the running event loop until `stop()` (or cancellation)."""
        self.server = uvicorn.Server(self._uvicorn_config())
        try:
            await self.server.serve(sockets=self._listen())
        finally:
            self._close_sockets()

    @property
    def started(self) -> bool:
        """Whether the server finished starting up and accepts connections."""
        return self.server is not None and self.server.started

    def stop(self) -> None:
        """Ask the server to shut down and free the port."""
        if self.server is not None:
            self.server.should_exit = True
        else:
            self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []

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


_CHAT_ENDPOINTS = frozenset(
    str(e)
    for e in (
        MegaServiceEndpoint.CHAT_QNA,
        MegaServiceEndpoint.CODE_GEN,
        MegaServiceEndpoint.CODE_TRANS,
        MegaServiceEndpoint.DOC_SUMMARY,
        MegaServiceEndpoint.SEARCH_QNA,
        MegaServiceEndpoint.FAQ_GEN,
        MegaServiceEndpoint.GRAPH_RAG,
        MegaServiceEndpoint.HYBRID_RAG,
        MegaServiceEndpoint.CHAT,
    )
)


_GC_YOUNG_THRESHOLD = 10_000


def _tune_garbage_collector() -> None:
    """Tune the garbage collector for serving, once a service starts (unless `Settings.gc_tuning` is off).

    * What exists now (modules, models, the app) lives as long as the process, yet every full
      collection walks all of it: with FastAPI and pydantic loaded that is 70 000 objects and a
      50 ms pause of the event loop, during which every request in flight waits. Frozen
      (`gc.freeze()`), they are no longer walked.
    * Requests in flight hold a few hundred containers each, so with Python's default (a young
      collection every 700 net allocations) 32 concurrent requests trigger one every 50 ms or so.
      Nothing a request allocates is cyclic garbage (`tests/test_memory.py`), so reference
      counting frees it; young collections every 10 000 net allocations are enough.
    """
    gc.collect()  # what is already garbage is freed, not frozen
    gc.freeze()
    young, *older = gc.get_threshold()
    if young and young < _GC_YOUNG_THRESHOLD:
        gc.set_threshold(_GC_YOUNG_THRESHOLD, *older)


def _takes_only_request(handler: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return False
    if len(params) != 1:
        return False
    annotation = params[0].annotation
    return (
        annotation is inspect.Parameter.empty
        or annotation is Request
        or (inspect.isclass(annotation) and issubclass(annotation, Request))
    )


class MicroService(HTTPService):
    """An OPEA microservice: a local HTTP service, or (with `use_remote_service=True`) a pipeline node's address.

    The constructor takes OPEA's arguments with OPEA's defaults, plus, keyword-only: how an
    orchestrator calls this node (`timeout`: a `Timeout` or total seconds; `retry`: a `Retry`;
    `breaker`: a `CircuitBreaker`; `fallback`: the node to call when this one fails; unset ones
    come from the environment or the orchestrator, see `megaservice.resilience`), and for a local
    service its `Limits`: `max_inflight`, `max_body_bytes`, `auth_keys` (keys clients must send;
    unlike `api_key`, which is the key sent *to* this node). Unset limits come from the
    environment (`megaservice.settings`). `name` becomes `f"{name}/MicroService"`: the node id used in
    results and `downstream_black_list` patterns.
    """

    def __init__(
        self,
        name: str = "",
        service_role: ServiceRoleType = ServiceRoleType.MICROSERVICE,
        service_type: ServiceType = ServiceType.LLM,
        protocol: str = "http",
        host: str = "localhost",
        port: int = 8080,
        api_key: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        endpoint: str | None = "/",
        input_datatype: type[Any] = TextDoc,
        output_datatype: type[Any] = TextDoc,
        provider: str | None = None,
        provider_endpoint: str | None = None,
        use_remote_service: bool | None = False,
        description: str | None = None,
        dynamic_batching: bool = False,
        dynamic_batching_timeout: int = 1,
        dynamic_batching_max_batch_size: int = 32,
        enable_mcp: bool = False,
        mcp_func_type: Enum = MCPFuncType.TOOL,
        func: Callable[..., Any] | None = None,
        *,
        timeout: Timeout | float | None = None,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        fallback: "MicroService | None" = None,
        cors: bool = True,
        max_inflight: int | None = None,
        max_body_bytes: int | None = None,
        auth_keys: Sequence[str] | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.server = None
        self._sockets = []
        self.service_role = service_role
        self.service_type = service_type
        self.protocol = protocol
        self.host = host
        self.port = port
        self.api_key = api_key
        self.endpoint = endpoint or "/"
        self.input_datatype = input_datatype
        self.output_datatype = output_datatype
        self.use_remote_service = bool(use_remote_service)
        self.description = description
        self.enable_mcp = enable_mcp
        self.mcp: MCPBridge | None = None
        self.dynamic_batching = dynamic_batching
        self.dynamic_batching_timeout = dynamic_batching_timeout
        self.dynamic_batching_max_batch_size = dynamic_batching_max_batch_size
        self.timeout = Timeout(total=timeout) if isinstance(timeout, int | float) else timeout
        self.retry = retry
        self.breaker = breaker
        self.fallback = fallback
        self.uvicorn_kwargs = {}
        if ssl_keyfile:
            self.uvicorn_kwargs["ssl_keyfile"] = ssl_keyfile
        if ssl_certfile:
            self.uvicorn_kwargs["ssl_certfile"] = ssl_certfile
        if not self.use_remote_service:
            self.provider = provider
            self.provider_endpoint = provider_endpoint
            self.endpoints: list[str] = []
            runtime_args = {
                "protocol": protocol,
                "host": host,
                "port": port,
                "title": name,
                "description": description or DEFAULT_DESCRIPTION,
            }
            if settings is None:
                settings = Settings.from_env()
            else:
                set_input_limits(settings.input_limits)
            limits = settings.limits
            if max_inflight is not None:
                limits = dataclasses.replace(limits, max_inflight=max_inflight)
            if max_body_bytes is not None:
                limits = dataclasses.replace(limits, max_body_bytes=max_body_bytes)
            if auth_keys is not None:
                limits = dataclasses.replace(limits, api_keys=tuple(auth_keys))
            HTTPService.__init__(
                self,
                uvicorn_kwargs=self.uvicorn_kwargs,
                runtime_args=runtime_args,
                cors=cors,
                limits=limits,
                settings=settings,
            )
            if dynamic_batching:
                self.buffer_lock = asyncio.Lock()
                self.request_buffer: defaultdict[Any, deque[dict[str, Any]]] = defaultdict(deque)
                self.add_startup_event(self._dynamic_batch_processor)
            if enable_mcp:
                from megaservice import _mcp

                self.mcp = _mcp.MCPBridge(name, host, port)
                if func is not None:
                    self.mcp.register(func, mcp_func_type, description)
                self._app.router.routes.extend(self.mcp.routes())
                self._app.unwatched += self.mcp.paths()
            if _bind_on_construction and protocol == "http":
                self._listen()
        self.name = f"{name}/{self.__class__.__name__}"

    @property
    def app(self) -> FastAPI:
        """The service's FastAPI application (local services only)."""
        if self.use_remote_service:
            raise AttributeError(f"{self.name} is a remote service: it has no app")
        return self._app

    @property
    def api_key_value(self) -> str | None:
        """The API key sent to this node (OPEA's property)."""
        return self.api_key

    def endpoint_path(self, model: str | None = None) -> str:
        """The URL an orchestrator calls: `host + endpoint` when `api_key` is set (host is then a base URL)."""
        if self.api_key:
            return f"{self.host}{self.endpoint}"
        return f"{self.protocol}://{self.host}:{self.port}{self.endpoint}"

    async def dynamic_batching_infer(self, service_type: Any, batch: list[dict[str, Any]]) -> list[Any]:
        """Process one batch of buffered requests; assign your own function to this attribute."""
        raise NotImplementedError(f"{self.name}: set dynamic_batching_infer to process batches")

    async def _dynamic_batch_processor(self) -> None:
        """Every `dynamic_batching_timeout` seconds, hand buffered requests to `dynamic_batching_infer`."""
        while True:
            await asyncio.sleep(self.dynamic_batching_timeout)
            async with self.buffer_lock:
                batches = {}
                for service_type, buffer in self.request_buffer.items():
                    size = min(len(buffer), self.dynamic_batching_max_batch_size)
                    if size:
                        batches[service_type] = [buffer.popleft() for _ in range(size)]
            for service_type, batch in batches.items():
                await self._run_batch(service_type, batch)

    async def _run_batch(self, service_type: Any, batch: list[dict[str, Any]]) -> None:
        try:
            results = await self.dynamic_batching_infer(service_type, batch)
        except Exception as exc:  # noqa: BLE001  # the waiting handlers get the error, the processor lives on
            for item in batch:
                if not item["response"].done():
                    item["response"].set_exception(exc)
            return
        for item, result in zip(batch, results, strict=False):
            if not item["response"].done():
                item["response"].set_result(result)


opea_microservices: dict[str, MicroService] = {}
"""OPEA compat: services created by `register_microservice`, by the name they were registered under."""


def register_microservice(
    name: str,
    service_role: ServiceRoleType = ServiceRoleType.MICROSERVICE,
    service_type: ServiceType = ServiceType.UNDEFINED,
    protocol: str = "http",
    host: str = "localhost",
    port: int = 8080,
    ssl_keyfile: str | None = None,
    ssl_certfile: str | None = None,
    endpoint: str | None = "/",
    input_datatype: type[Any] = TextDoc,
    output_datatype: type[Any] = TextDoc,
    provider: str | None = None,
    provider_endpoint: str | None = None,
    methods: Sequence[str] | None = None,
    dynamic_batching: bool = False,
    dynamic_batching_timeout: int = 1,
    dynamic_batching_max_batch_size: int = 32,
    enable_mcp: bool = False,
    description: str | None = None,
    mcp_func_type: Enum = MCPFuncType.TOOL,
) -> Callable[[F], F]:
    """Register the decorated handler as a route of the service `name` (created on first use; later uses add routes).

    Returns the handler unchanged.
    """

    def decorator(func: F) -> F:
        if name not in opea_microservices:
            opea_microservices[name] = MicroService(
                name=name,
                service_role=service_role,
                service_type=service_type,
                protocol=protocol,
                host=host,
                port=port,
                ssl_keyfile=ssl_keyfile,
                ssl_certfile=ssl_certfile,
                endpoint=endpoint,
                input_datatype=input_datatype,
                output_datatype=output_datatype,
                provider=provider,
                provider_endpoint=provider_endpoint,
                dynamic_batching=dynamic_batching,
                dynamic_batching_timeout=dynamic_batching_timeout,
                dynamic_batching_max_batch_size=dynamic_batching_max_batch_size,
                enable_mcp=enable_mcp,
                func=func,
                description=description,
                mcp_func_type=mcp_func_type,
            )
        elif enable_mcp:
            service = opea_microservices[name]
            if service.mcp is None:
                raise ConfigurationError(f"{name}: enable_mcp=True on a service first registered without it")
            service.mcp.register(func, mcp_func_type, description)
        opea_microservices[name].add_route(endpoint or "/", func, methods=list(methods or ["POST"]))
        return func

    return decorator


async def _empty_ok() -> Response:
    return Response(status_code=200)


_STRINGS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT: dict[str, Any] = {"type": "object"}


def _json_answer(schema: dict[str, Any]) -> dict[str, Any]:
    """`add_route_fast` arguments documenting a 200 JSON answer of `schema` without a response model."""
    content = {"application/json": {"schema": schema}}
    return {"response_model": None, "responses": {200: {"description": "Successful Response", "content": content}}}


async def _statistics() -> dict[str, Any]:
    return collect_all_statistics()


async def _metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
