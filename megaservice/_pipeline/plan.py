"""The call plan of an orchestrator: its topology frozen once, each node's URL, headers and policies resolved.

Rebuilt only when the graph or the services change (`ServiceOrchestrator` drops it then). A
node's policies come, first set wins, from the node's arguments in code, its
`MEGASERVICE_NODE_<NAME>_*` variables, the orchestrator's arguments, `MEGASERVICE_*`, the defaults
(`megaservice.settings.Settings.node`).
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from megaservice.constants import ServiceType
from megaservice.exceptions import ConfigurationError
from megaservice.resilience import Circuit, Retry, Timeout
from megaservice.settings import node_prefix

if TYPE_CHECKING:
    from megaservice.metrics import _Series
    from megaservice.microservice import MicroService
    from megaservice.orchestrator import ServiceOrchestrator

__all__ = ["Node", "Plan", "build_plan", "node_label", "remote_node"]

_STREAMING_TYPES = (ServiceType.LLM, ServiceType.LVM)


@dataclass(slots=True)
class Node:
    """Everything a call to one node needs, computed once per topology."""

    name: str
    """The node's id (`retriever/MicroService`): results, metrics and `downstream_black_list` use it."""
    service: "MicroService"
    is_llm: bool
    url: str | None
    """The node's URL, when it does not depend on the request (no `api_key` base URL, no custom `endpoint_path`)."""
    headers: dict[str, str]
    latency: "_Series"
    timeout: Timeout
    retry: Retry | None = None
    """How to retry a failed call (`None`: never; always `None` for an LLM and the nodes after it)."""
    circuit: Circuit | None = None
    fallback: "Node | None" = None
    fail_open: bool = False
    """When the call fails (the node is unwell, not the request), its input passes on as its answer (a guardrail's)."""
    stream_in_flight: int = 8
    """After a streaming LLM: the sentences of one stream sent to this node and not yet passed on, at most."""
    label: str = ""
    """The node as the user named it (`retriever`): what errors, logs and traces say (default: `name`)."""

    def url_for(self, model: str | None = None) -> str:
        """The URL to call (`model` picks the endpoint of an `api_key` node whose URL depends on it)."""
        return self.url if self.url is not None else self.service.endpoint_path(model)


@dataclass(slots=True)
class Plan:
    """The topology of an orchestrator, frozen: roots, children and parents in insertion order, and its nodes."""

    roots: tuple[str, ...]
    children: dict[str, tuple[str, ...]]
    parents: dict[str, tuple[str, ...]]
    nodes: dict[str, Node]


def build_plan(orchestrator: "ServiceOrchestrator") -> Plan:
    """Validate the orchestrator's graph and resolve every node (`ConfigurationError` if it cannot run)."""
    graph = orchestrator.graph
    valid, reason = orchestrator.validate()
    if not valid:
        raise ConfigurationError(f"the pipeline graph is invalid: {reason}")
    services = orchestrator.services
    missing = [n for n in graph if n not in services]
    if missing:
        raise ConfigurationError(f"nodes without a service: {missing}; use add() to add services")
    after_llm: set[str] = set()
    for name in graph:
        if services[name].service_type in _STREAMING_TYPES:
            after_llm.add(name)
            after_llm.update(orchestrator.all_downstreams(name))
    nodes = {name: _node(orchestrator, service, pre_llm=name not in after_llm) for name, service in services.items()}
    return Plan(
        roots=tuple(orchestrator.ind_nodes()),
        children={n: tuple(orchestrator.downstream(n)) for n in graph},
        parents={n: tuple(orchestrator.predecessors(n)) for n in graph},
        nodes=nodes,
    )


def _node(
    orchestrator: "ServiceOrchestrator", service: "MicroService", *, pre_llm: bool, fallback_of: Node | None = None
) -> Node:
    """The call plan of one node: its URL, headers and resolved policies."""
    name = service.name
    configured = orchestrator.settings.node(
        name, timeout=orchestrator.timeout, retry=orchestrator.retry, breaker=orchestrator.breaker
    )
    if fallback_of is None:
        timeout = service.timeout or configured.timeout
        retry = service.retry or configured.retry
        breaker = service.breaker if service.breaker is not None else configured.breaker
    else:  # a fallback: its own settings in code, else those of the node it stands in for
        timeout = service.timeout or fallback_of.timeout
        retry = None
        breaker = service.breaker
    headers = {"Content-Type": "application/json"}
    if service.api_key:
        headers["Authorization"] = f"Bearer {service.api_key}"
    node = Node(
        name=name,
        service=service,
        is_llm=service.service_type in _STREAMING_TYPES,
        url=_fixed_url(service),
        headers=headers,
        latency=orchestrator.metrics.node_latency.labels(name),
        timeout=timeout,
        label=node_label(service),
    )
    if fallback_of is None:
        node.fail_open = configured.fail_open
        node.stream_in_flight = configured.stream_in_flight
    if retry is not None and retry.attempts > 1 and pre_llm:
        node.retry = retry
    if breaker is not None:
        node.circuit = orchestrator.circuit(name, breaker, label=node.label)
    if fallback_of is None:
        fallback = service.fallback
        if fallback is None and configured.fallback_url:
            what = f"{node_prefix(name)}FALLBACK_URL"
            fallback = remote_node(
                name.rsplit("/", 1)[0] + "-fallback", configured.fallback_url, service.service_type, what=what
            )
        if fallback is not None:
            node.fallback = _node(orchestrator, fallback, pre_llm=False, fallback_of=node)
    return node


def node_label(service: "MicroService") -> str:
    """The name `service` was given (`retriever` for `retriever/MicroService`), else its id as it is."""
    name = service.name
    suffix = f"/{type(service).__name__}"
    if name.endswith(suffix) and len(name) > len(suffix):
        return name[: -len(suffix)]
    return name


def remote_node(name: str, url: str, service_type: ServiceType, *, what: str) -> "MicroService":
    """A remote `MicroService` for a node at `url` (`ConfigurationError` naming `what` if it is not http(s))."""
    from megaservice.microservice import MicroService  # microservice imports the orchestrator's modules

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{what} must be an http(s) URL, got {url!r}")
    return MicroService(
        name=name,
        protocol=parts.scheme,
        host=parts.hostname,
        port=parts.port or (443 if parts.scheme == "https" else 80),
        endpoint=parts.path or "/",
        use_remote_service=True,
        service_type=service_type,
    )


def _fixed_url(service: "MicroService") -> str | None:
    from megaservice.microservice import MicroService  # microservice imports the orchestrator's modules

    if service.api_key or type(service).endpoint_path is not MicroService.endpoint_path:
        return None
    return service.endpoint_path(None)
