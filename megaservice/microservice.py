"""`MicroService`: an OPEA microservice, in one of its two roles, and OPEA's registry of services.

    a local service   (the default) a FastAPI app with the probes and the routes added to it; nothing
                      is bound until `start()` (blocking, as OPEA) or `await serve()` (in a running loop)
    a remote node     (`use_remote_service=True`) a service running elsewhere, as a pipeline node: an
                      orchestrator calls `endpoint_path()`

One constructor builds either role whole, each attribute set once. Both roles have the node's
attributes, with the same values for the same arguments: `name`, `service_role`, `service_type`,
`protocol`, `host`, `port`, `endpoint`, `endpoint_path()`, `api_key`, `api_key_value`,
`input_datatype`, `output_datatype`, `description`, `title`, `runtime_args` (where it runs),
`timeout`, `retry`, `breaker`, `fallback`, `provider`, `provider_endpoint`, `endpoints`,
`use_remote_service`, the `dynamic_batching*` and `enable_mcp` arguments, `mcp`, `server` (`None`
until served). A remote node is served elsewhere: what `HTTPService` adds to serve here (`app`,
`settings`, `limits`, `uvicorn_kwargs`, `cors`, routes, lifecycle hooks, `bound_port`, the batching
buffer) belongs to a local service only, and on a remote node raises an `AttributeError` saying it
is a remote node; the serving arguments (`cors`, `max_inflight`, `auth_keys`, `settings`, ...) are
ignored there.

    BaseService            name, runtime args (protocol, host, port, title, description)
    └── HTTPService        the app, its lifespan, start()/serve()/stop(), add_route()
        └── MicroService   OPEA's constructor, the node, dynamic batching, MCP
"""

import asyncio
import dataclasses
import functools
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from megaservice._serving.batching import RequestBuffer, process_batches
from megaservice._serving.openapi import chat_body_model
from megaservice._serving.service import DEFAULT_DESCRIPTION, BaseService, HTTPService
from megaservice.constants import MCPFuncType, ServiceRoleType, ServiceType
from megaservice.exceptions import ConfigurationError
from megaservice.limits import Limits
from megaservice.protocol.docs import TextDoc
from megaservice.protocol.limits import set_input_limits
from megaservice.resilience import CircuitBreaker, Retry, Timeout
from megaservice.settings import Settings

__all__ = ["BaseService", "HTTPService", "MicroService", "opea_microservices", "register_microservice"]

if TYPE_CHECKING:
    from megaservice._serving.mcp import MCPBridge

F = TypeVar("F", bound=Callable[..., Any])

# OPEA compat: set by `megaservice.compat.install()`; local services then bind their port when
# constructed, as OPEA does (its tests construct services, fork, and expect the port to be taken).
_bind_on_construction = False

_LOCAL_ONLY = frozenset(
    ("app", "settings", "limits", "uvicorn_kwargs", "cors", "bound_port", "buffer_lock", "request_buffer")
)
"""What a local service has and a remote node has not: what `HTTPService` and batching add to serve."""
_LOCAL_STATE = frozenset(("_app", "_lifecycle", "_sockets"))
"""The state `HTTPService`'s methods read: calling one on a remote node says why it cannot."""


class MicroService(HTTPService):
    """An OPEA microservice: a local service, or (`use_remote_service=True`) a remote pipeline node (module docstring).

    The constructor takes OPEA's arguments with OPEA's defaults, plus, keyword-only: how an
    orchestrator calls this node (`timeout`: a `Timeout` or total seconds; `retry`: a `Retry`;
    `breaker`: a `CircuitBreaker`; `fallback`: the node to call when this one fails; unset ones
    come from the environment or the orchestrator, see `megaservice.resilience`), and for a local
    service its `Limits`: `max_inflight`, `max_body_bytes`, `auth_keys` (keys clients must send;
    unlike `api_key`, which is the key sent *to* this node), and its `settings` (default: the
    environment's, `megaservice.settings`). `name` becomes `f"{name}/{type(self).__name__}"`: the
    node id used in results and `downstream_black_list` patterns.
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
        remote = bool(use_remote_service)
        self.use_remote_service = remote
        self.service_role = service_role
        self.service_type = service_type
        self.host = host
        self.port = port
        self.endpoint = endpoint or "/"
        self.api_key = api_key
        self.input_datatype = input_datatype
        self.output_datatype = output_datatype
        self.provider = provider
        self.provider_endpoint = provider_endpoint
        self.endpoints: list[str] = []
        self.timeout = Timeout(total=timeout) if isinstance(timeout, int | float) else timeout
        self.retry = retry
        self.breaker = breaker
        self.fallback = fallback
        self.dynamic_batching = dynamic_batching
        self.dynamic_batching_timeout = dynamic_batching_timeout
        self.dynamic_batching_max_batch_size = dynamic_batching_max_batch_size
        self.enable_mcp = enable_mcp
        self.mcp: MCPBridge | None = _mcp_bridge(name, host, port) if enable_mcp and not remote else None
        runtime_args = {
            "protocol": protocol,
            "host": host,
            "port": port,
            "title": name,
            "description": description or DEFAULT_DESCRIPTION,
        }
        node_name = f"{name}/{type(self).__name__}"
        if remote:  # served elsewhere: a BaseService (its name, where it runs), nothing of HTTPService
            BaseService.__init__(self, name=node_name, runtime_args=runtime_args)
            return
        if settings is None:
            settings = Settings.from_env()
        else:
            set_input_limits(settings.input_limits)
        super().__init__(
            name=node_name,
            runtime_args=runtime_args,
            uvicorn_kwargs=_tls_options(ssl_keyfile, ssl_certfile),
            cors=cors,
            limits=_limits(settings.limits, max_inflight, max_body_bytes, auth_keys),
            settings=settings,
        )
        self.buffer_lock = asyncio.Lock()
        """Held while handlers queue into, or batching takes from, `request_buffer` (`dynamic_batching`)."""
        self.request_buffer: RequestBuffer = defaultdict(deque)
        """Requests queued for `dynamic_batching_infer`, by key (`megaservice._serving.batching`)."""
        if dynamic_batching:
            self.add_startup_event(functools.partial(process_batches, self))
        if self.mcp is not None:
            if func is not None:
                self.mcp.register(func, mcp_func_type, description)
            self.mcp.attach(self._app)
        if _bind_on_construction and protocol == "http":
            self._listen()

    if not TYPE_CHECKING:  # for mypy, a missing attribute stays an error

        def __getattr__(self, name: str) -> Any:
            """Called for a missing attribute only: on a remote node, say why a local service's is missing."""
            if (name in _LOCAL_ONLY or name in _LOCAL_STATE) and self.__dict__.get("use_remote_service"):
                node = self.__dict__.get("name", type(self).__name__)
                raise AttributeError(
                    f"{node} is a remote node (use_remote_service=True): it is served elsewhere, so it has no "
                    f"app, settings, limits, routes or lifecycle hooks here (looked up {name!r})",
                    name=name,
                    obj=self,
                )
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}", name=name, obj=self)

    @property
    def api_key_value(self) -> str | None:
        """The API key sent to this node (OPEA's property)."""
        return self.api_key

    def endpoint_path(self, model: str | None = None) -> str:
        """The URL an orchestrator calls: `host + endpoint` when `api_key` is set (host is then a base URL)."""
        if self.api_key:
            return f"{self.host}{self.endpoint}"
        return f"{self.protocol}://{self.host}:{self.port}{self.endpoint}"

    def _validate_env(self, *args: Any) -> None:
        # OPEA compat: OPEA's tests/cores/mega/test_hybrid_service_orchestrator.py calls this on a remote
        # node and expects an error; nothing else does (a node has no environment of its own to check).
        raise ConfigurationError(f"{self.name}: there is no environment to validate on a node")

    def _implied_body_model(self, endpoint: str, handler: Callable[..., Any]) -> str | None:
        """On a megaservice, OPEA's `ChatCompletionRequest` for a chat endpoint whose handler reads the `Request`.

        Chat endpoints: `/v1/chatqna`, `/v1/codegen`, ...; `ChatCompletionRequest` is what OPEA's gateways parse there.
        """
        if self.service_role == ServiceRoleType.MEGASERVICE:
            return chat_body_model(endpoint, handler)
        return None

    async def dynamic_batching_infer(self, service_type: Any, batch: list[dict[str, Any]]) -> list[Any]:
        """Process one batch of buffered requests; assign your own function to this attribute."""
        raise NotImplementedError(f"{self.name}: set dynamic_batching_infer to process batches")


def _mcp_bridge(name: str, host: str, port: int) -> "MCPBridge":
    from megaservice._serving.mcp import MCPBridge  # the `mcp` package is an optional extra

    return MCPBridge(name, host, port)


def _tls_options(keyfile: str | None, certfile: str | None) -> dict[str, Any]:
    options = {"ssl_keyfile": keyfile, "ssl_certfile": certfile}
    return {key: value for key, value in options.items() if value}


def _limits(
    limits: Limits, max_inflight: int | None, max_body_bytes: int | None, auth_keys: Sequence[str] | None
) -> Limits:
    """`limits`, with the constructor's arguments that are set."""
    if max_inflight is not None:
        limits = dataclasses.replace(limits, max_inflight=max_inflight)
    if max_body_bytes is not None:
        limits = dataclasses.replace(limits, max_body_bytes=max_body_bytes)
    if auth_keys is not None:
        limits = dataclasses.replace(limits, api_keys=tuple(auth_keys))
    return limits


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
