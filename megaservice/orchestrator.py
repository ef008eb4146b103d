"""`ServiceOrchestrator`: run a DAG of remote microservices for each request, with OPEA's API and hooks.

The life of one `schedule()` call (the machinery is in `megaservice._pipeline`):

1. The topology is frozen into a `Plan` the first time it runs (`_pipeline.plan`: validated once,
   children and parents as tuples in insertion order, each node's URL and policies resolved;
   rebuilt only if the DAG or its services change).
2. A `Run` holds the request's state (`_pipeline.run`): results so far, and a copy-on-write
   `RuntimeGraph` that hooks may rewire and that `downstream_black_list` answers prune. No graph
   is copied unless a request actually changes it.
3. Each root gets its own shallow copy of the inputs. A node runs when all its parents answered;
   a chain runs inline in one task, fan-out in an `asyncio.TaskGroup`, fan-in merges parent
   outputs in insertion order (`process_outputs`).
4. A node call is `align_inputs` → one POST with the node's retries, circuit breaker and fallback
   (`_pipeline.call`) → `align_outputs`. A streaming LLM/LVM node instead returns a stream whose
   body is read from the upstream as it arrives and relayed event by event through
   `align_generator` (`_pipeline.relay`), and (if the LLM has a downstream node, e.g. an output
   guardrail) sentence by sentence through that node, several at once and released in order
   (`_pipeline.guard`).
5. Failures raise one `UpstreamError` naming the node; after a stream has started they end it
   with an SSE error event. The pending-request gauge is decremented on every exit path.
"""

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from megaservice import _compat
from megaservice._pipeline.plan import Plan, build_plan
from megaservice._pipeline.run import Run, copy_inputs, default_align_generator
from megaservice.client import UpstreamClient, get_client
from megaservice.dag import DAG, Graph, RuntimeGraph
from megaservice.exceptions import ConfigurationError
from megaservice.metrics import get_metrics
from megaservice.protocol.docs import LLMParams
from megaservice.resilience import Circuit, CircuitBreaker, Retry, Timeout
from megaservice.settings import Settings

if TYPE_CHECKING:
    from megaservice.microservice import MicroService

__all__ = ["RuntimeGraph", "ServiceOrchestrator"]

JSON = dict[str, Any]
_T = TypeVar("_T")


class ServiceOrchestrator(DAG):
    """Run a DAG of (remote) microservices per request, with OPEA's API and hooks.

    **Parameters:**

    * **timeout** - default `Timeout` (or total seconds) of every node call.
    * **retry** - default `Retry` of the nodes before the LLM (default: no retry).
    * **breaker** - default `CircuitBreaker` of every node (default: none).
    * **client** - the `UpstreamClient` to call nodes with; default: the process's pooled client.
    * **settings** - where unset policies come from (default: `Settings.from_env()`).

    A node's own `MicroService(timeout=, retry=, breaker=, fallback=)` wins over these, and the
    environment can set all of them (docs/configuration.md gives the order).

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
        self._plan: Plan | None = None
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
        self.clock: Callable[[], float] = time.monotonic
        """What the nodes' circuit breakers measure time with (a test may step a clock of its own)."""

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

    def circuit(self, node: str, breaker: CircuitBreaker, *, label: str | None = None) -> Circuit:
        """The circuit of `node` (kept across plan rebuilds while its breaker stays the same).

        `label` is how its errors and logs name the node (default: `node`).
        """
        circuit = self._circuits.get(node)
        if circuit is None or circuit.breaker != breaker:
            gauge = self.metrics.circuit_open.labels(node)
            named = node if label is None else label
            circuit = self._circuits[node] = Circuit(breaker, named, clock=lambda: self.clock(), on_change=gauge.set)
        return circuit

    def _get_plan(self) -> Plan:
        plan = self._plan
        if plan is None:
            plan = self._plan = build_plan(self)
        return plan

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
            await run.run_roots(initial_inputs)
            ok = True
        finally:
            if ok and run.streams:
                run.streams[0].owns_pending = True  # the stream counts the request out when it ends
            else:
                run.finish_streams()
                metrics.pending_update(False)
                metrics.request_update(run.req_start)
        if run.graph.changed:
            run.prune()
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
            return await run.call_node(cur_node, copy_inputs(inputs))
        except BaseException:
            run.finish_streams()
            raise

    def _new_run(self, graph: RuntimeGraph, params: LLMParams, kwargs: dict[str, Any], req_start: float) -> Run:
        return Run(
            orchestrator=self,
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

    align_generator = default_align_generator
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
