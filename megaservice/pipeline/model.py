"""The pipeline file's schema: the services a pipeline runs, and the flow its megaservice orchestrates.

```yaml
name: chatqna
services:
  embedding: {component: embedding, backend: local, port: 6000}
  retriever: {component: retriever, port: 7000, needs: [postgres]}
  llm:       {component: llm, port: 9000, env: {LLM_ENDPOINT: "http://127.0.0.1:8008"}}
  ollama:    {url: "http://gpu-box:11434"}            # already running somewhere: not started
megaservice:
  port: 8888
  flow: [embedding, retriever, llm]                    # a chain; or edges: ["a -> b", "a -> c"]
observe: true                                          # `up` starts a trace receiver + viewer, traces everything
```

One schema for every use: `load_pipeline()` builds the `ServiceOrchestrator` from it,
`megaservice up` starts its services, `megaservice export` writes Compose / Kubernetes from it.
"""

import itertools
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationInfo, field_validator, model_validator

from megaservice.components import COMPONENTS, backend_name, backends
from megaservice.constants import ServiceType
from megaservice.exceptions import ConfigurationError

__all__ = ["COMPONENT_NODES", "LocatedError", "Megaservice", "NodeRole", "Observe", "Pipeline", "ServiceSpec"]

_NAME = r"^[a-z][a-z0-9-]{0,39}$"

Port = Annotated[int, Field(ge=1, le=65535)]
Route = Literal["chatqna", "openai", "ui"]
ROUTES: tuple[Route, ...] = ("chatqna", "openai", "ui")


class LocatedError(ValueError):
    """A rule of the whole file broken at one place in it: `location` is the path there (`megaservice.flow.3`).

    The loader reports the line of that place; the message says what is wrong in words.
    """

    def __init__(self, location: Sequence[str | int], message: str) -> None:
        super().__init__(message)
        self.location = tuple(str(part) for part in location)


class NodeRole(BaseModel):
    """How a component is called as a node of the flow."""

    service_type: ServiceType
    endpoint: str


COMPONENT_NODES: dict[str, NodeRole] = {
    "embedding": NodeRole(service_type=ServiceType.EMBEDDING, endpoint="/v1/embeddings"),
    "clip": NodeRole(service_type=ServiceType.EMBEDDING, endpoint="/v1/embeddings"),
    "retriever": NodeRole(service_type=ServiceType.RETRIEVER, endpoint="/v1/retrieval"),
    "reranker": NodeRole(service_type=ServiceType.RERANK, endpoint="/v1/reranking"),
    "llm": NodeRole(service_type=ServiceType.LLM, endpoint="/v1/chat/completions"),
    "bias": NodeRole(service_type=ServiceType.GUARDRAIL, endpoint="/v1/bias"),
    "guardrails": NodeRole(service_type=ServiceType.GUARDRAIL, endpoint="/v1/guardrails"),
}
"""The components that can be nodes of a flow (dataprep, the model server and PostgreSQL serve the others)."""

DEFAULT_PORTS: dict[str, int] = {
    "postgres": 5430,  # the embedded PostgreSQL's status service (PostgreSQL itself listens on a Unix socket)
    "dataprep": 5000,
    "embedding": 6000,
    "clip": 6990,
    "retriever": 7000,
    "reranker": 8000,
    "llm-server": 8008,
    "llm": 9000,
    "guardrails": 9090,
    "bias": 9092,
}
"""Each component's default port (OPEA's, and the seeds' host ports)."""

INFRASTRUCTURE = ("postgres",)
"""What a pipeline may run besides components: the embedded PostgreSQL with pgvector."""


class ServiceSpec(BaseModel):
    """One service of a pipeline: a component started as its own process, or a server already running (`url`)."""

    model_config = ConfigDict(extra="forbid")

    component: str | None = None
    """What runs: a component (`megaservice serve NAME`) or `postgres`; none with `url`."""
    backend: str | None = None
    """The component's backend (default: the component's own)."""
    host: str = "127.0.0.1"
    port: Port | None = None
    """Default: the component's port."""
    url: HttpUrl | None = None
    """A server that is already running (an Ollama, a TEI, a vLLM): called, never started."""
    role: Literal["embedding", "retriever", "reranker", "llm", "guardrail"] | None = None
    """What a `url` server is as a node of the flow (its type and route); components know their own."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables of the service's process (values are strings; `${VAR}` is not expanded)."""
    needs: list[Annotated[str, Field(pattern=_NAME)]] = Field(default_factory=list)
    """Services that must be ready before this one starts."""

    @field_validator("component")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and value not in COMPONENTS and value not in INFRASTRUCTURE:
            known = ", ".join(sorted({*COMPONENTS, *INFRASTRUCTURE}))
            raise ValueError(f"unknown component {value!r}; the components are: {known}")
        return value

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str | None, info: ValidationInfo) -> str | None:
        """With the `check_backends` context (the loader's default): a backend the component has."""
        component = info.data.get("component")
        if value is None or component not in COMPONENTS or not (info.context or {}).get("check_backends"):
            return value
        try:
            backend_name(component, value)
        except ConfigurationError:
            known = ", ".join(backends(component))
            raise ValueError(f"unknown {component} backend {value!r}; the backends are: {known}") from None
        except ImportError:  # the component does not import here (`export` on another machine): it says why itself
            pass
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                str(k): v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in value.items()
            }
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> "ServiceSpec":
        if (self.component is None) == (self.url is None):
            raise ValueError("give either `component` (a service to start) or `url` (a server already running)")
        if self.url is not None and self.env:
            raise ValueError("`env` is for services megaservice starts; a `url` server is configured where it runs")
        if self.url is None and self.port is None and self.component in DEFAULT_PORTS:
            self.port = DEFAULT_PORTS[self.component]
        return self

    @property
    def started(self) -> bool:
        """Whether `megaservice up` starts it (else it is a server already running)."""
        return self.url is None

    def node_role(self) -> NodeRole | None:
        """How the flow calls this service, if it can be a node."""
        if self.component is not None:
            return COMPONENT_NODES.get(self.component)
        if self.role is not None:
            return COMPONENT_NODES["bias" if self.role == "guardrail" else self.role]
        return None

    def base_url(self) -> str:
        """Where the service answers."""
        if self.url is not None:
            return str(self.url).rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host  # what binding all means
        return f"http://{host}:{self.port}"


class Megaservice(BaseModel):
    """The megaservice: its port, the flow of nodes it orchestrates, the services its routes use."""

    model_config = ConfigDict(extra="forbid")

    port: Port = 8888
    host: str = "0.0.0.0"  # the gateway is what users reach
    flow: list[str] = Field(min_length=1)
    """A chain of service names (`[a, b, c]`), or edges (`["a -> b", "a -> c"]`)."""
    dataprep: str | None = None
    """The dataprep service the chat page uploads to and `megaservice ingest` feeds."""
    model: str | None = None
    """The model name the megaservice asks its LLM node for (default: the LLM service's own)."""
    routes: list[Route] = Field(default_factory=lambda: list(ROUTES))
    """OPEA's `/v1/chatqna`, the OpenAI-compatible `/v1/chat/completions` + `/v1/models`, the chat page at `/`."""

    def is_chain(self) -> bool:
        """Whether the flow is a list of names (else it is edges, `"a -> b"`)."""
        return not any("->" in step for step in self.flow)

    def edges(self) -> list[tuple[str, str]]:
        """The flow as `(from, to)` pairs, in the file's order."""
        if self.is_chain():
            return list(itertools.pairwise(self.flow))
        return [pair for index in range(len(self.flow)) for pair in self.step_edges(index)]

    def step_edges(self, index: int) -> list[tuple[str, str]]:
        """The `(from, to)` pairs of the flow's step `index` written as edges (`"a -> b -> c"`)."""
        step = self.flow[index]
        parts = [part.strip() for part in step.split("->")]
        if len(parts) < 2 or not all(parts):
            raise LocatedError(
                ("megaservice", "flow", index),
                f"megaservice.flow step {step!r} must be 'a -> b' (or the whole flow a list of names)",
            )
        return list(itertools.pairwise(parts))

    def nodes(self) -> list[str]:
        """Every service of the flow, in order of first mention."""
        if self.is_chain():
            return list(dict.fromkeys(self.flow))
        return list(dict.fromkeys(name for pair in self.edges() for name in pair))


class Observe(BaseModel):
    """`observe:` the local trace receiver and viewer `megaservice up` starts first (docs/observability.md).

    `observe: true` takes the defaults; ports left out are Jaeger's (4318, 16686), or the next ones
    up where the pipeline already uses them.
    """

    model_config = ConfigDict(extra="forbid")

    port: Port | None = None
    """Where spans are received (OTLP/HTTP); default 4318."""
    ui_port: Port | None = None
    """Where the viewer is served; default 16686."""
    max_traces: int = Field(default=500, ge=1)
    """Traces kept in memory, the latest."""
    max_spans: int = Field(default=20_000, ge=1)
    """Spans kept in memory in all."""


class Pipeline(BaseModel):
    """A whole pipeline file (the module docstring shows one)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    description: str = ""
    services: dict[Annotated[str, Field(pattern=_NAME)], ServiceSpec] = Field(min_length=1)
    megaservice: Megaservice
    demo: list[str] = Field(default_factory=list)
    """Files or folders ingested on the first start, when the store is empty: absolute, or relative to the
    pipeline file, else to the shipped files (`corpus`, the demo corpus, so a copied file keeps it)."""
    observe: Observe | None = None
    """`true` (or its settings): `megaservice up` starts a trace receiver and viewer and traces every service."""

    @field_validator("observe", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Pipeline":
        names = set(self.services)
        for name, spec in self.services.items():
            unknown = [n for n in spec.needs if n not in names]
            if unknown:
                raise ValueError(f"services.{name}.needs names unknown services: {', '.join(unknown)}")
        self._check_cycles()
        for node in self.megaservice.nodes():
            if node not in names:
                raise ValueError(f"megaservice.flow names {node!r}, which is not a service of this pipeline")
            spec = self.services[node]
            if spec.node_role() is None:
                what = f"a {spec.component} service" if spec.component else "a `url` server without a `role`"
                raise ValueError(f"megaservice.flow: {node!r} is {what}, which cannot be a node of the flow")
        self._check_flow_cycles()
        if self.megaservice.dataprep is not None and self.megaservice.dataprep not in names:
            raise ValueError(f"megaservice.dataprep names {self.megaservice.dataprep!r}, which is not a service")
        ports: dict[int, str] = {self.megaservice.port: "megaservice"}
        for name, spec in self.services.items():
            if spec.started and spec.port is not None:
                if spec.port in ports:
                    raise ValueError(f"services.{name}.port {spec.port} is also the port of {ports[spec.port]}")
                ports[spec.port] = name
            if spec.started and spec.port is None and spec.component not in INFRASTRUCTURE:
                raise ValueError(f"services.{name} needs a port")
        return self

    @model_validator(mode="after")
    def _observe_ports(self) -> "Pipeline":
        if self.observe is None:
            return self
        ports = self.ports()
        for key in ("port", "ui_port"):
            port = getattr(self.observe, key)
            if port is not None and port in ports:
                raise ValueError(f"observe.{key} {port} is also the port of {ports[port]}")
        if self.observe.port is not None and self.observe.port == self.observe.ui_port:
            raise ValueError("observe.port and observe.ui_port must differ")
        return self

    def ports(self) -> dict[int, str]:
        """The ports the pipeline's started services and its megaservice listen on, and whose they are."""
        found = {self.megaservice.port: "megaservice"}
        found.update({spec.port: name for name, spec in self.services.items() if spec.started and spec.port})
        return found

    def _check_cycles(self) -> None:
        """No service needs itself through others; a cycle is reported at the `needs` that closes it."""
        graph: dict[str, list[str]] = {}
        for name, spec in self.services.items():
            for needed in spec.needs:
                cycle = _path(graph, needed, name)
                if cycle is not None:
                    raise LocatedError(
                        ("services", name, "needs"),
                        f"services.{name}.needs makes a cycle: {' -> '.join([name, *cycle])}",
                    )
                graph.setdefault(name, []).append(needed)

    def _check_flow_cycles(self) -> None:
        """The flow is a DAG; a service named twice in a chain, or the edge that closes a cycle, is reported."""
        flow = self.megaservice.flow
        if self.megaservice.is_chain():
            first: dict[str, int] = {}
            for index, name in enumerate(flow):
                if name in first:
                    raise LocatedError(
                        ("megaservice", "flow", index),
                        f"megaservice.flow names {name!r} twice (items {first[name] + 1} and {index + 1}); a chain "
                        'names each service once (a flow with branches is written as edges: ["a -> b", "a -> c"])',
                    )
                first[name] = index
            return
        graph: dict[str, list[str]] = {}
        for index in range(len(flow)):
            for start, end in self.megaservice.step_edges(index):
                if start == end:
                    raise LocatedError(("megaservice", "flow", index), f"megaservice.flow: {start!r} flows to itself")
                cycle = _path(graph, end, start)
                if cycle is not None:
                    raise LocatedError(
                        ("megaservice", "flow", index),
                        f"megaservice.flow has a cycle: {' -> '.join([start, *cycle])} "
                        f"(closed by {flow[index].strip()!r})",
                    )
                graph.setdefault(start, []).append(end)

    def start_order(self) -> list[str]:
        """The services to start, each after what it needs (file order otherwise)."""
        order: list[str] = []

        def add(name: str) -> None:
            if name in order:
                return
            for needed in self.services[name].needs:
                add(needed)
            order.append(name)

        for name, spec in self.services.items():
            if spec.started:
                add(name)
        return [name for name in order if self.services[name].started]


def _path(graph: Mapping[str, Sequence[str]], start: str, end: str) -> list[str] | None:
    """The nodes of a path from `start` to `end` along `graph`'s edges (both ends included), if there is one."""
    seen: set[str] = set()

    def walk(node: str) -> list[str] | None:
        if node == end:
            return [node]
        if node in seen:
            return None
        seen.add(node)
        for following in graph.get(node, ()):
            found = walk(following)
            if found is not None:
                return [node, *found]
        return None

    return walk(start)
