"""`ServiceOrchestrator`: run a DAG of remote microservices for each request.

The life of one `schedule()` call:

1. The topology was frozen into a `_Plan` the first time it ran (validated once, children and
   parents as tuples in insertion order; rebuilt only if the DAG or its services change).
2. A `_Run` holds the request's state: results so far, and a copy-on-write `RuntimeGraph` that
   hooks may rewire and that `downstream_black_list` answers prune. No graph is copied unless a
   request actually changes it.
3. Each root gets its own shallow copy of the inputs. A node runs when all its parents answered;
   a chain runs inline in one task, fan-out runs in an `asyncio.TaskGroup` (concurrent, cancelled
   together on failure), fan-in merges parent outputs in insertion order (`process_outputs`).
4. A node call is `align_inputs` → one POST on the process's pooled client → `align_outputs`.
   A streaming LLM/LVM node instead returns a `StreamingResponse` whose body is read from the
   upstream as it arrives, event by event, through `align_generator`, and (if the LLM has a
   downstream node, e.g. an output guardrail) sentence by sentence through that node.
5. Failures raise one `UpstreamError` naming the node; after a stream has started they end it
   with an SSE error event. The pending-request gauge is decremented on every exit path.
"""

import asyncio
import inspect
import logging
import re
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel
from starlette.types import Send

from megaservice import _compat
from megaservice.client import StreamedAnswer, UpstreamClient, dumps, get_client
from megaservice.constants import ServiceType
from megaservice.dag import DAG, Graph
from megaservice.exceptions import ConfigurationError, UpstreamError, UpstreamProtocolError
from megaservice.metrics import OrchestratorMetrics, get_metrics
from megaservice.protocol.docs import LLMParams
from megaservice.resilience import Circuit, CircuitBreaker, Retry, Timeout, is_node_failure
from megaservice.responses import BatchStreamingResponse, StreamingResponse, aclose, flatten, join
from megaservice.settings import Settings, node_prefix
from megaservice.sse import EventSplitter

if TYPE_CHECKING:
    from megaservice.metrics import _Series
    from megaservice.microservice import MicroService

__all__ = ["RuntimeGraph", "ServiceOrchestrator"]

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
_T = TypeVar("_T")
# A sentence ends at OPEA's sentence marks (CJK ones included); a Latin one only before a space or the
# end of what has arrived, so "3.14" in one piece stays whole.
_SENTENCE_END = re.compile(r"[.?!](?=\s|$)|[。，！]")  # noqa: RUF001
_BINARY_TYPES = ("audio/", "image/", "video/", "application/octet-stream")
MAX_EVENT_BYTES = 1024 * 1024
"""Largest SSE event accepted from a streaming node; a longer one ends the stream with an error event."""


class RuntimeGraph(DAG):
    """The graph of one request: shares the orchestrator's graph until something changes it.

    Reading `graph` (or calling a method that mutates it) gives the request its own copy first,
    so hooks that rewire the pipeline (ChatQnA removes the rerank node when nothing was retrieved)
    never touch the orchestrator's graph or another request's.
    """

    def __init__(self, base: Graph | None = None) -> None:
        self._base: Graph = base if base is not None else OrderedDict()
        self._own: Graph | None = None

    @property
    def graph(self) -> Graph:
        """This request's graph (copied from the orchestrator's on first access)."""
        if self._own is None:
            self._own = OrderedDict((node, set(edges)) for node, edges in self._base.items())
        return self._own

    @graph.setter
    def graph(self, value: Graph) -> None:
        self._own = value

    @property
    def changed(self) -> bool:
        """Whether this request has its own copy (it may have changed the topology)."""
        return self._own is not None

    def _view(self) -> Graph:
        return self._base if self._own is None else self._own

    def downstream(self, node: str, graph: Graph | None = None) -> list[str]:
        """Return the direct downstream nodes of `node`, in insertion order."""
        return super().downstream(node, self._view() if graph is None else graph)

    def predecessors(self, node: str, graph: Graph | None = None) -> list[str]:
        """Return the direct upstream nodes of `node`, in insertion order."""
        return super().predecessors(node, self._view() if graph is None else graph)

    def all_leaves(self, graph: Graph | None = None) -> list[str]:
        """Return the nodes with no downstream, in insertion order."""
        return super().all_leaves(self._view() if graph is None else graph)

    def ind_nodes(self, graph: Graph | None = None) -> list[str]:
        """Return the roots, in insertion order."""
        return super().ind_nodes(self._view() if graph is None else graph)

    def size(self) -> int:
        """Return the number of nodes."""
        return len(self._view())


@dataclass(slots=True)
class _Node:
    """Everything a call to one node needs, computed once per topology."""

    name: str
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
    fallback: "_Node | None" = None


@dataclass(slots=True)
class _Plan:
    roots: tuple[str, ...]
    children: dict[str, tuple[str, ...]]
    parents: dict[str, tuple[str, ...]]
    nodes: dict[str, _Node]


class _StreamGuard:
    """Releases a stream's upstream response and its pending-gauge count exactly once, however it ends."""

    __slots__ = ("_metrics", "_responses", "done", "owns_pending")

    def __init__(self, metrics: OrchestratorMetrics) -> None:
        self._metrics = metrics
        self._responses: list[StreamedAnswer] = []
        self.done = False
        self.owns_pending = False

    def track(self, response: StreamedAnswer) -> None:
        self._responses.append(response)

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        for response in self._responses:
            response.close()
        if self.owns_pending:
            self._metrics.pending_update(False)


class _TokenClock:
    """Times a stream's tokens for the first-token and inter-token latency histograms."""

    __slots__ = ("_first", "_first_token", "_inter_token", "_last")

    def __init__(self, metrics: OrchestratorMetrics, req_start: float) -> None:
        self._first_token = metrics.first_token_latency.labels()
        self._inter_token = metrics.inter_token_latency.labels()
        self._last = req_start
        self._first = True

    def tick(self, tokens: int) -> None:
        """`tokens` went out together now: the first waited since the last write, the others not at all."""
        now = time.monotonic()
        gap = now - self._last
        self._last = now
        if self._first:
            self._first = False
            self._first_token.observe(gap)
            tokens -= 1
            gap = 0.0
        if tokens:
            self._inter_token.observe(gap)
            for _ in range(tokens - 1):
                self._inter_token.observe(0.0)


@dataclass(slots=True)
class _Run:
    """One call of `schedule()`."""

    plan: _Plan
    graph: RuntimeGraph
    params: LLMParams
    params_dict: JSON
    kwargs: dict[str, Any]
    req_start: float
    client: UpstreamClient
    results: dict[str, Any] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    streams: list[_StreamGuard] = field(default_factory=list)

    def children(self, node: str) -> list[str]:
        if self.graph.changed:
            return self.graph.downstream(node)
        return list(self.plan.children.get(node, ()))

    def parents(self, node: str) -> tuple[str, ...] | list[str]:
        if self.graph.changed:
            return self.graph.predecessors(node)
        return self.plan.parents.get(node, ())


class _Attempt:
    """One call to a node, as a `with` block: its circuit checked on entry; its latency, errors and outcome on exit."""

    __slots__ = ("_node", "_orchestrator", "_started")

    def __init__(self, orchestrator: "ServiceOrchestrator", node: _Node, url: str) -> None:
        circuit = node.circuit
        if circuit is not None:
            try:
                circuit.check(url)
            except UpstreamError as exc:
                orchestrator.metrics.node_errors.labels(node.name, exc.kind).inc()
                raise
        self._orchestrator = orchestrator
        self._node = node
        self._started = time.monotonic()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        node = self._node
        node.latency.observe(time.monotonic() - self._started)
        outcome: bool | None = None  # stays None if cancelled: that says nothing about the node
        if exc is None:
            outcome = True
        elif isinstance(exc, UpstreamError):
            outcome = not is_node_failure(exc)  # a 4xx: the node is well, the request was wrong
            self._orchestrator.metrics.node_errors.labels(node.name, exc.kind).inc()
        if node.circuit is not None:
            node.circuit.record(outcome)


def _default_align_generator(self: Any, gen: Any, *args: Any, **kwargs: Any) -> Any:
    return gen


class ServiceOrchestrator(DAG):
    """Run a DAG of (remote) microservices per request, with OPEA's API and hooks.

    **Parameters:**

    * **timeout** - default `Timeout` (or total seconds) of every node call.
    * **retry** - default `Retry` of the nodes before the LLM (default: no retry).
    * **breaker** - default `CircuitBreaker` of every node (default: none).
    * **client** - the `UpstreamClient` to call nodes with; default: the process's pooled client.

    A node's own `MicroService(timeout=, retry=, breaker=, fallback=)` wins over these, and the
    environment can set all of them (`megaservice.resilience` explains the order).

    Customise it like OPEA: override `align_inputs`, `align_outputs`, `align_generator` (and
    `process_outputs`) in a subclass, or assign functions to the class attributes.
    """

    def __init__(
        self,
        *,
        timeout: Timeout | float | None = None,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        client: UpstreamClient | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._plan: _Plan | None = None
        super().__init__()
        self.services: dict[str, MicroService] = {}
        self.metrics = get_metrics()
        self.settings = settings if settings is not None else Settings.from_env()
        if isinstance(timeout, int | float):
            timeout = Timeout(total=timeout)
        self.timeout = timeout or self.settings.timeout
        self.retry = retry or self.settings.retry
        self.breaker = breaker if breaker is not None else self.settings.breaker
        self._client = client
        self._circuits: dict[str, Circuit] = {}

    # -- building -------------------------------------------------------------------------------

    @property
    def graph(self) -> Graph:
        """The orchestrator's graph: node name → set of downstream node names."""
        return self._graph

    @graph.setter
    def graph(self, value: Graph) -> None:
        self._graph = value
        self._plan = None

    def add(self, service: "MicroService") -> "ServiceOrchestrator":
        """Add a service as a node (named `service.name`); chainable. `ConfigurationError` if the name is taken."""
        if service.name in self.services:
            raise ConfigurationError(f"Service {service.name} already exists!")
        self.services[service.name] = service
        self.add_node_if_not_exists(service.name)
        return self

    def flow_to(self, from_service: "MicroService", to_service: "MicroService") -> bool:
        """Connect two added services; return `True`.

        Raises:
            ConfigurationError: a service was not `add()`ed, or the edge would create a cycle.
        """
        for service in (from_service, to_service):
            if service.name not in self.services:
                raise ConfigurationError(f"{service.name} is not part of this orchestrator: add() it first")
        self.add_edge(from_service.name, to_service.name)
        return True

    def add_node(self, node_name: str, graph: Graph | None = None) -> None:  # noqa: D102
        super().add_node(node_name, graph)
        self._plan = None

    def add_node_if_not_exists(self, node_name: str, graph: Graph | None = None) -> None:  # noqa: D102
        super().add_node_if_not_exists(node_name, graph)
        self._plan = None

    def delete_node(self, node_name: str, graph: Graph | None = None) -> None:  # noqa: D102
        super().delete_node(node_name, graph)
        self._plan = None

    def add_edge(self, ind_node: str, dep_node: str, graph: Graph | None = None) -> None:  # noqa: D102
        super().add_edge(ind_node, dep_node, graph)
        self._plan = None

    def delete_edge(self, ind_node: str, dep_node: str, graph: Graph | None = None) -> None:  # noqa: D102
        super().delete_edge(ind_node, dep_node, graph)
        self._plan = None

    def _get_plan(self) -> _Plan:
        plan = self._plan
        if plan is None:
            plan = self._plan = self._build_plan()
        return plan

    def _build_plan(self) -> _Plan:
        graph = self.graph
        valid, reason = self.validate()
        if not valid:
            raise ConfigurationError(f"the pipeline graph is invalid: {reason}")
        missing = [n for n in graph if n not in self.services]
        if missing:
            raise ConfigurationError(f"nodes without a service: {missing}; use add() to add services")
        after_llm: set[str] = set()
        for name in graph:
            if self.services[name].service_type in (ServiceType.LLM, ServiceType.LVM):
                after_llm.add(name)
                after_llm.update(self.all_downstreams(name))
        nodes = {
            name: self._make_node(service, pre_llm=name not in after_llm) for name, service in self.services.items()
        }
        return _Plan(
            roots=tuple(self.ind_nodes()),
            children={n: tuple(self.downstream(n)) for n in graph},
            parents={n: tuple(self.predecessors(n)) for n in graph},
            nodes=nodes,
        )

    def _make_node(self, service: "MicroService", *, pre_llm: bool, fallback_of: "_Node | None" = None) -> _Node:
        """The call plan of one node: its URL, headers and resolved policies (`megaservice.resilience`)."""
        name = service.name
        configured = self.settings.node(name, timeout=self.timeout, retry=self.retry, breaker=self.breaker)
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
        node = _Node(
            name=name,
            service=service,
            is_llm=service.service_type in (ServiceType.LLM, ServiceType.LVM),
            url=_fixed_url(service),
            headers=headers,
            latency=self.metrics.node_latency.labels(name),
            timeout=timeout,
        )
        if retry is not None and retry.attempts > 1 and pre_llm:
            node.retry = retry
        if breaker is not None:
            circuit = self._circuits.get(name)
            if circuit is None or circuit.breaker != breaker:
                gauge = self.metrics.circuit_open.labels(name)
                circuit = self._circuits[name] = Circuit(breaker, name, on_change=lambda is_open: gauge.set(is_open))
            node.circuit = circuit
        if fallback_of is None:
            fallback = service.fallback
            if fallback is None and configured.fallback_url:
                fallback = _fallback_node(service, configured.fallback_url)
            if fallback is not None:
                node.fallback = self._make_node(fallback, pre_llm=False, fallback_of=node)
        return node

    # -- running --------------------------------------------------------------------------------

    async def schedule(
        self, initial_inputs: JSON | BaseModel, llm_parameters: LLMParams | None = None, **kwargs: Any
    ) -> tuple[dict[str, Any], DAG]:
        """Run the pipeline once; return each node's result (by node name) and the graph that ran.

        `kwargs` reach every hook (ChatQnA passes `retriever_parameters=`, `reranker_parameters=`).
        A streaming LLM node's result is a `StreamingResponse`.

        Raises:
            UpstreamError: a node failed (the subclass says how; `.node` says which).
        """
        params = llm_parameters if llm_parameters is not None else LLMParams()
        run = self._new_run(RuntimeGraph(self.graph), params, kwargs, time.monotonic())
        metrics = self.metrics
        metrics.pending_update(True)
        ok = False
        try:
            await self._run_roots(run, initial_inputs)
            ok = True
        finally:
            if ok and run.streams:
                run.streams[0].owns_pending = True  # the stream counts the request out when it ends
            else:
                for stream in run.streams:
                    stream.finish()
                metrics.pending_update(False)
                metrics.request_update(run.req_start)
        if run.graph.changed:
            self._prune(run)
        return run.results, run.graph

    async def execute(
        self,
        session: Any,
        req_start: float,
        cur_node: str,
        inputs: JSON | BaseModel,
        runtime_graph: DAG,
        llm_parameters: LLMParams | None = None,
        **kwargs: Any,
    ) -> tuple[Any, str]:
        """Run one node as `schedule()` would (OPEA's signature); return its result and the node it is stored under.

        The hooks run as in `schedule()`, and a streaming LLM node returns a `StreamingResponse`
        (stored under the node after it, if that node is fed the stream). `session` is accepted for
        OPEA code and not used: calls go through the orchestrator's pooled client. `runtime_graph`
        is the graph the hooks see, and where the LLM node looks for the node after it.

        Raises:
            UpstreamError: the node failed.
        """
        params = llm_parameters if llm_parameters is not None else LLMParams()
        if isinstance(runtime_graph, RuntimeGraph):
            graph = runtime_graph
        else:  # a plain DAG: its graph is used (and changed by the hooks) in place, as in OPEA
            graph = RuntimeGraph()
            graph.graph = runtime_graph.graph
        run = self._new_run(graph, params, kwargs, req_start)
        if cur_node not in run.plan.nodes:
            raise ConfigurationError(f"{cur_node!r} is not a node of this orchestrator")
        try:
            return await self._call_node(run, cur_node, _copy_inputs(inputs))
        except BaseException:
            for stream in run.streams:
                stream.finish()
            raise

    def _new_run(self, graph: RuntimeGraph, params: LLMParams, kwargs: dict[str, Any], req_start: float) -> _Run:
        return _Run(
            plan=self._get_plan(),
            graph=graph,
            params=params,
            params_dict=params.model_dump(),
            kwargs=kwargs,
            req_start=req_start,
            client=self._client or get_client(),
        )

    def wrap_iterable(self, iterable: Iterable[_T], is_first: bool = True) -> Iterator[_T]:
        """Yield what `iterable` yields (OPEA wraps it in tracing spans; megaservice traces elsewhere)."""
        yield from iterable

    async def _run_roots(self, run: _Run, initial_inputs: JSON | BaseModel) -> None:
        roots = run.plan.roots
        run.started.update(roots)
        if len(roots) == 1:
            await self._walk(run, roots[0], _copy_inputs(initial_inputs))
        else:
            await self._fan_out(run, [(root, _copy_inputs(initial_inputs)) for root in roots])

    async def _fan_out(self, run: _Run, work: list[tuple[str, Any]]) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for node, inputs in work:
                    group.create_task(self._walk(run, node, inputs))
        except BaseExceptionGroup as errors:
            raise _first_error(errors) from None

    async def _walk(self, run: _Run, node: str, inputs: Any) -> None:
        """Run `node`, then whatever became ready because of it (inline for a chain)."""
        while True:
            result, stored_as = await self._call_node(run, node, inputs)
            run.results[stored_as] = result
            run.started.add(stored_as)
            children = self._children_after(run, stored_as, result)
            ready = [c for c in children if c not in run.started and all(p in run.results for p in run.parents(c))]
            if not ready:
                return
            run.started.update(ready)
            if len(ready) > 1:
                await self._fan_out(run, [(c, self.process_outputs(list(run.parents(c)), run.results)) for c in ready])
                return
            node = ready[0]
            inputs = self.process_outputs(list(run.parents(node)), run.results)

    def _children_after(self, run: _Run, node: str, result: Any) -> list[str]:
        """Children of `node`, minus those its answer's `downstream_black_list` skips."""
        children = run.children(node)
        if not isinstance(result, dict):
            return children
        patterns = result.get("downstream_black_list")
        if not patterns:
            return children
        for pattern in patterns:
            for child in list(children):
                try:
                    skip = re.search(pattern, child) is not None
                except re.error:
                    logger.warning("node %s sent an invalid downstream_black_list pattern %r", node, pattern)
                    continue
                if skip:
                    run.graph.delete_edge(node, child)
                    children.remove(child)
            if not children and run.params.stream:
                # OPEA compat: a short-circuited streaming request is still answered as SSE (UIs expect it)
                run.results[node] = StreamingResponse(_compat.fake_stream(str(result.get("text", ""))))
        return children

    def _prune(self, run: _Run) -> None:
        keep = set(run.plan.roots)
        for root in run.plan.roots:
            keep.update(run.graph.all_downstreams(root))
        for node in list(run.graph.graph):
            if node not in keep:
                run.graph.delete_node_if_exists(node)

    async def _call_node(self, run: _Run, name: str, inputs: Any) -> tuple[Any, str]:
        node = run.plan.nodes[name]
        if node.is_llm:
            inputs = _as_dict(inputs)
            for key, value in run.params_dict.items():
                if key != "id" and inputs.get(key) != value:
                    inputs[key] = value
        inputs = self.align_inputs(inputs, name, run.graph, run.params_dict, **run.kwargs)
        url = node.url
        if url is None:
            model = inputs.get("model") if node.service.api_key and isinstance(inputs, dict) else None
            url = node.service.endpoint_path(model)
        if node.is_llm and run.params.stream:
            return await self._open_llm_stream(run, node, url, inputs)
        data = await self._post(run, node, url, _payload(inputs))
        return self.align_outputs(data, name, inputs, run.graph, run.params_dict, **run.kwargs), name

    async def _post(self, run: _Run, node: _Node, url: str, payload: Any, *, retry: bool = True) -> Any:
        """Call a node (its retries and circuit breaker included) and decode its answer; then its fallback.

        Written as one coroutine on purpose: every await of the call resumes through each coroutine
        above it, so a layer per policy would cost on every request, configured or not.
        """
        body = dumps(payload)
        policy = node.retry if retry else None
        attempt = 0
        fell_back = False
        while True:
            try:
                with _Attempt(self, node, url):
                    content_type, data = await run.client.post(
                        node.name, url, body, headers=node.headers, timeout=node.timeout
                    )
                    return _decode(node.name, url, content_type, data)  # bad JSON counts as the node's failure
            except UpstreamError as exc:
                if policy is None or attempt + 1 >= policy.attempts or not policy.should_retry(exc):
                    if fell_back:
                        raise
                    node = self._fallback(node, exc)  # re-raises `exc` when there is none
                    url = node.url or node.service.endpoint_path(None)
                    policy, fell_back = None, True
                    continue
            self.metrics.node_retries.labels(node.name).inc()
            await asyncio.sleep(policy.delay(attempt))
            attempt += 1

    def _fallback(self, node: _Node, exc: UpstreamError) -> _Node:
        """The node to try after `node` failed with `exc`; re-raise `exc` if there is none or the request was wrong."""
        fallback = node.fallback
        if fallback is None or not is_node_failure(exc):
            raise exc
        self.metrics.node_fallbacks.labels(node.name).inc()
        logger.warning("%s failed (%s); calling its fallback %s", node.name, exc, fallback.name)
        return fallback

    async def _open_stream(self, run: _Run, node: _Node, url: str, body: bytes) -> StreamedAnswer:
        with _Attempt(self, node, url):
            return await run.client.open_stream(node.name, url, body, headers=node.headers, timeout=node.timeout)

    async def _open_llm_stream(self, run: _Run, node: _Node, url: str, inputs: Any) -> tuple[Any, str]:
        downstream = run.children(node.name)
        if len(downstream) > 1:
            raise ConfigurationError(f"a streaming node can feed one downstream node; {node.name} has {downstream}")
        body = dumps(_payload(inputs))
        answering = node
        try:
            response = await self._open_stream(run, node, url, body)
        except UpstreamError as exc:
            answering = self._fallback(node, exc)
            url = answering.url or answering.service.endpoint_path(None)
            response = await self._open_stream(run, answering, url, body)
        guard = _StreamGuard(self.metrics)
        guard.track(response)
        run.streams.append(guard)
        source: AsyncIterator[list[Any]] = _read_batches(response, answering.name, url)
        stored_as = node.name
        hook = getattr(self.align_generator, "__func__", self.align_generator)
        stream: BatchStreamingResponse
        if downstream:
            stored_as = downstream[0]
            source = self._through_node(run, run.plan.nodes[stored_as], source)
        if inspect.isasyncgenfunction(hook):
            source = _singletons(self.align_generator(flatten(source), **run.kwargs))
            stream = BatchStreamingResponse(_relayed(_Relay(self, run, guard, bridge=None), source))
        else:
            bridge = None
            if hook is not _default_align_generator:
                bridge = _compat.GeneratorBridge(self.align_generator, run.kwargs)
            relay = _Relay(self, run, guard, bridge)
            if downstream:
                stream = BatchStreamingResponse(_relayed(relay, source))
            else:
                stream = _RelayedStream(relay, source, response, answering.name, url)
        weakref.finalize(stream, guard.finish)
        return stream, stored_as

    async def _through_node(
        self, run: _Run, node: _Node, source: AsyncIterator[list[bytes]]
    ) -> AsyncIterator[list[str]]:
        """Feed an LLM stream to the node after it (an output guardrail) sentence by sentence; re-stream its answers."""
        url = node.service.endpoint_path(None)
        buffered = ""
        try:
            async for batch in source:
                for raw in batch:
                    text, done = _compat.event_text(raw)
                    sentences, buffered = _sentences(buffered + text)
                    if done and buffered:
                        sentences.append(buffered)
                        buffered = ""
                    for sentence in sentences:
                        answer = await self._post(run, node, url, {"text": sentence}, retry=False)
                        yield _opea_frames(_answer_text(answer, node.name, url))
                    if done:
                        yield [_compat.DONE_FRAME]
                        return
            if buffered:
                answer = await self._post(run, node, url, {"text": buffered}, retry=False)
                yield _opea_frames(_answer_text(answer, node.name, url))
        finally:
            await aclose(source)

    # -- OPEA hooks and helpers (override or assign to customise) --------------------------------

    def process_outputs(self, prev_nodes: list[str], result_dict: dict[str, Any]) -> JSON:
        """Merge the outputs of a node's parents into its inputs (later parents win on equal keys)."""
        if len(prev_nodes) == 1:
            only = result_dict[prev_nodes[0]]
            if isinstance(only, dict):
                return dict(only)
        merged: JSON = {}
        for node in prev_nodes:
            output = result_dict[node]
            if not isinstance(output, dict):
                raise ConfigurationError(
                    f"node {node} returned {type(output).__name__}, but a downstream node needs a JSON object: "
                    "convert it in align_outputs()"
                )
            merged.update(output)
        return merged

    def align_inputs(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """Hook: adapt `inputs` before a node is called.

        Called as `align_inputs(inputs, cur_node, runtime_graph, llm_parameters_dict, **kwargs)`.
        """
        return inputs

    def align_outputs(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        """Hook: adapt a node's answer.

        Called as `align_outputs(data, cur_node, inputs, runtime_graph, llm_parameters_dict, **kwargs)`.
        """
        return data

    align_generator = _default_align_generator
    """Hook: adapt a stream. Called as `align_generator(gen, **kwargs)`; `gen` yields one SSE event (bytes) at
    a time. Write it as a sync generator (OPEA's way; run without threads) or as an async generator."""

    def get_all_final_outputs(self, result_dict: dict[str, Any], runtime_graph: DAG) -> dict[str, Any]:
        """Return the results of the leaves of the graph that ran."""
        return {leaf: result_dict[leaf] for leaf in runtime_graph.all_leaves()}

    def extract_chunk_str(self, chunk_str: str) -> str:
        """Strip OPEA's `data: b'…'` framing from one frame."""
        return _compat.extract_chunk_str(chunk_str)

    def token_generator(self, sentence: str, token_start: float, is_first: bool, is_last: bool) -> Iterator[str]:
        """Re-stream `sentence` as OPEA token frames, recording token latencies."""
        for token in _compat.split_tokens(sentence):
            token_start = self.metrics.token_update(token_start, is_first)
            yield _compat.opea_token_frame(token.replace("\\n", "\n"))
            is_first = False
        if is_last:
            yield _compat.DONE_FRAME


class _Relay:
    """What a streamed LLM answer goes through between the upstream and the client, one batch at a time.

    `align_generator` (a sync hook through a greenlet bridge), the token latency metrics, and the
    SSE error event that ends a stream which failed after it started. Events that arrived together
    stay together: the hook gets them as one batch, and what it yields for them is written in one
    `send` (one syscall) and counts as tokens with no time between them, which is what the client sees.
    """

    __slots__ = ("_bridge", "_clock", "_guard", "_metrics", "_req_start", "started")

    def __init__(
        self,
        orchestrator: ServiceOrchestrator,
        run: _Run,
        guard: _StreamGuard,
        bridge: "_compat.GeneratorBridge | None",
    ) -> None:
        self._bridge = bridge
        self._clock = _TokenClock(orchestrator.metrics, run.req_start)
        self._guard = guard
        self._metrics = orchestrator.metrics
        self._req_start = run.req_start
        self.started = False

    @property
    def done(self) -> bool:
        """The hook wants no more input (it returned, or failed)."""
        return self._bridge is not None and self._bridge.finished

    def feed(self, batch: list[Any]) -> list[Any]:
        """What goes to the client for the upstream events `batch`."""
        bridge = self._bridge
        if bridge is not None:
            batch = bridge.feed(batch)
        if batch:
            self._clock.tick(len(batch))
        return batch

    def end(self) -> list[Any]:
        """What goes to the client once the upstream stream is over; raises what the hook raised."""
        bridge = self._bridge
        if bridge is None:
            return []
        batch = bridge.end()  # nothing once the hook has returned or failed
        if batch:
            self._clock.tick(len(batch))
        return batch

    def check(self) -> None:
        """Raise what the hook raised after the output it produced before failing has gone out."""
        if self._bridge is not None and self._bridge.error is not None:
            raise self._bridge.error

    def failure(self, exc: Exception) -> bytes:
        """The SSE event that tells the client the stream failed."""
        if isinstance(exc, UpstreamError):
            logger.warning("stream from %s failed after it started: %s", exc.node, exc)
            return _compat.error_frame(exc.to_dict())
        logger.error("stream failed after it started", exc_info=exc)
        return _compat.error_frame({"object": "error", "type": "internal_error", "message": type(exc).__name__})

    def close(self) -> None:
        self._guard.finish()
        self._metrics.request_update(self._req_start)
        if self._bridge is not None:
            self._bridge.close()


async def _relayed(relay: _Relay, source: AsyncIterator[list[Any]]) -> AsyncIterator[list[Any]]:
    """The batches for the client, from `source`'s batches of upstream events."""
    relay.started = True
    try:
        async for batch in source:
            out = relay.feed(batch)
            if out:
                yield out
            if relay.done:
                break
        out = relay.end()
        if out:
            yield out
        relay.check()
    except Exception as exc:  # noqa: BLE001  # after the first byte a failure can only be told in-band (logged there)
        yield [relay.failure(exc)]
    finally:
        relay.close()
        await aclose(source)


class _RelayedStream(BatchStreamingResponse):
    """An LLM's stream straight to the client: each network read is split into events, relayed and written in one loop.

    A token passes through no async-generator layer between the upstream's socket and the
    client's. If OPEA code takes `body_iterator` over, the stream is served from it instead.
    """

    def __init__(
        self, relay: _Relay, source: AsyncIterator[list[Any]], response: StreamedAnswer, node: str, url: str
    ) -> None:
        super().__init__(_relayed(relay, source))
        self._relay = relay
        self._response = response
        self._node = node
        self._url = url

    async def _stream(self, send: Send, chunks: Send) -> None:
        relay = self._relay
        if self.body_iterator is not self._items or relay.started:
            await super()._stream(send, chunks)
            return
        relay.started = True
        response = self._response
        reader = _EventReader(self._node, self._url)
        completed = False
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            try:
                async for data in response.content.iter_any():
                    events = reader.feed(data)
                    if events:
                        out = relay.feed(events)
                        if out:
                            await chunks({"type": "http.response.body", "body": join(out), "more_body": True})
                        if relay.done:
                            break
                else:
                    completed = True
                rest = reader.flush() if completed else []
                out = relay.feed(rest) if rest else []
                out += relay.end()
                if out:
                    await send({"type": "http.response.body", "body": join(out), "more_body": True})
                relay.check()
            except Exception as exc:  # noqa: BLE001  # told in-band, as in _relayed
                body = relay.failure(exc)
                await send({"type": "http.response.body", "body": body, "more_body": True})
        finally:
            if completed:
                response.release()
            else:
                response.close()
            relay.close()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _EventReader:
    """An upstream's SSE byte stream cut into complete raw events (framing included), with the event size limit."""

    __slots__ = ("_node", "_splitter", "_url")

    def __init__(self, node: str, url: str) -> None:
        self._splitter = EventSplitter()
        self._node = node
        self._url = url

    def feed(self, data: bytes) -> list[bytes]:
        """The events `data` completed."""
        splitter = self._splitter
        events = splitter.feed(data)
        if splitter.pending > MAX_EVENT_BYTES:
            raise UpstreamProtocolError(
                f"{self._node} sent an SSE event longer than {MAX_EVENT_BYTES} bytes", node=self._node, url=self._url
            )
        return events

    def flush(self) -> list[bytes]:
        """What is left once the stream is over (an unterminated last event)."""
        rest = self._splitter.flush()
        return [rest] if rest else []


def _decode(node: str, url: str, content_type: str, body: bytes) -> Any:
    """A node's answer: JSON decoded, binary media as bytes."""
    if content_type.startswith(_BINARY_TYPES):
        return body
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(
            f"{node} answered {content_type or 'no content type'} that is not JSON: {body[:200]!r}", node=node, url=url
        ) from None


def _fallback_node(service: "MicroService", url: str) -> "MicroService":
    """The fallback named by `MEGASERVICE_NODE_<NAME>_FALLBACK_URL`, as a remote node of the same type."""
    name = service.name.rsplit("/", 1)[0] + "-fallback"
    return remote_node(name, url, service.service_type, what=f"{node_prefix(service.name)}FALLBACK_URL")


def remote_node(name: str, url: str, service_type: ServiceType, *, what: str) -> "MicroService":
    """A remote `MicroService` for a node at `url` (`ConfigurationError` naming `what` if it is not http(s))."""
    from megaservice.microservice import MicroService  # microservice imports this module

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
    from megaservice.microservice import MicroService  # microservice imports this module

    if service.api_key or type(service).endpoint_path is not MicroService.endpoint_path:
        return None
    return service.endpoint_path(None)


def _sentences(text: str) -> tuple[list[str], str]:
    """The complete sentences at the start of `text`, and the rest."""
    sentences = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        sentences.append(text[start : match.end()])
        start = match.end()
    return sentences, text[start:]


def _opea_frames(sentence: str) -> list[str]:
    return [_compat.opea_token_frame(token.replace("\\n", "\n")) for token in _compat.split_tokens(sentence)]


def _copy_inputs(inputs: JSON | BaseModel) -> Any:
    return dict(inputs) if isinstance(inputs, dict) else inputs


def _as_dict(inputs: Any) -> JSON:
    if isinstance(inputs, dict):
        return inputs
    if isinstance(inputs, BaseModel):
        return {k: v for k, v in inputs.model_dump().items() if v is not None}
    raise ConfigurationError(f"LLM node inputs must be a JSON object, got {type(inputs).__name__}")


def _payload(inputs: Any) -> Any:
    """What goes on the wire: models as dicts without their top-level `None`s (as OPEA sends them)."""
    if isinstance(inputs, BaseModel):
        return {k: v for k, v in inputs.model_dump().items() if v is not None}
    return inputs


def _answer_text(answer: Any, node: str, url: str) -> str:
    if isinstance(answer, Mapping) and isinstance(answer.get("text"), str):
        return str(answer["text"])
    raise UpstreamProtocolError(f"{node} must answer a JSON object with a 'text' field", node=node, url=url)


async def _read_batches(response: StreamedAnswer, node: str, url: str) -> AsyncIterator[list[bytes]]:
    """Yield the upstream's SSE events as they complete, a batch per network read (raw bytes, framing included).

    Events that arrived together stay together, so everything downstream of here (the align hook,
    the metrics, the write to the client) handles what is ready in one go instead of one event at a time.
    """
    reader = _EventReader(node, url)
    completed = False
    try:
        async for data in response.content.iter_any():  # everything received so far, in one piece
            events = reader.feed(data)
            if events:
                yield events
        completed = True
        rest = reader.flush()
        if rest:
            yield rest
    finally:
        if completed:
            response.release()  # fully read: the connection goes back to the pool
        else:
            response.close()  # abandoned or failed: drop the connection, which stops the upstream


async def _singletons(items: AsyncIterator[Any]) -> AsyncIterator[list[Any]]:
    try:
        async for item in items:
            yield [item]
    finally:
        await aclose(items)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real failure of a task group (siblings were cancelled because of it)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
