"""One run of a pipeline: walk the DAG for one request, calling each node when its parents have answered.

A chain runs inline in one task; fan-out runs in an `asyncio.TaskGroup` (concurrent, cancelled
together on failure); fan-in merges parent outputs in insertion order (`process_outputs`). A node
call is `align_inputs` → `call.post` → `align_outputs`; a streaming LLM node's call returns a
`RelayedStream` instead, built before the LLM is asked so that only attaching is left once its
headers arrive.
"""

import asyncio
import inspect
import logging
import re
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from megaservice import _compat
from megaservice._pipeline import call
from megaservice._pipeline.guard import fails_open, first_batch, through_node
from megaservice._pipeline.plan import Node, Plan
from megaservice._pipeline.relay import EventReader, Relay, RelayedStream, StreamGuard, read_batches, singletons
from megaservice.client import UpstreamClient, dumps
from megaservice.dag import RuntimeGraph
from megaservice.exceptions import ConfigurationError, UpstreamError, UpstreamUnavailable
from megaservice.protocol.docs import LLMParams
from megaservice.responses import StreamingResponse, flatten

if TYPE_CHECKING:
    from megaservice.orchestrator import ServiceOrchestrator

__all__ = ["Run", "copy_inputs", "default_align_generator"]

logger = logging.getLogger("megaservice.orchestrator")


def default_align_generator(self: Any, gen: Any, *args: Any, **kwargs: Any) -> Any:
    """The `align_generator` hook that changes nothing (the relay then skips it)."""
    return gen


@dataclass(slots=True)
class Run:
    """One call of `schedule()` (or `execute()`): the results so far and the graph this request runs."""

    orchestrator: "ServiceOrchestrator"
    plan: Plan
    graph: RuntimeGraph
    params: LLMParams
    params_dict: dict[str, Any]
    kwargs: dict[str, Any]
    req_start: float
    client: UpstreamClient
    results: dict[str, Any] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    streams: list[StreamGuard] = field(default_factory=list)

    def children(self, node: str) -> list[str]:
        if self.graph.changed:
            return self.graph.downstream(node)
        return list(self.plan.children.get(node, ()))

    def parents(self, node: str) -> tuple[str, ...] | list[str]:
        if self.graph.changed:
            return self.graph.predecessors(node)
        return self.plan.parents.get(node, ())

    # -- walking the graph ------------------------------------------------------------------------

    async def run_roots(self, initial_inputs: Any) -> None:
        roots = self.plan.roots
        self.started.update(roots)
        if len(roots) == 1:
            await self._walk(roots[0], copy_inputs(initial_inputs))
        else:
            await self._fan_out([(root, copy_inputs(initial_inputs)) for root in roots])

    async def _fan_out(self, work: list[tuple[str, Any]]) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for node, inputs in work:
                    group.create_task(self._walk(node, inputs))
        except BaseExceptionGroup as errors:
            raise _first_error(errors) from None

    async def _walk(self, node: str, inputs: Any) -> None:
        """Run `node`, then whatever became ready because of it (inline for a chain)."""
        merge = self.orchestrator.process_outputs
        while True:
            result, stored_as = await self.call_node(node, inputs)
            self.results[stored_as] = result
            self.started.add(stored_as)
            children = self._children_after(stored_as, result)
            ready = [c for c in children if c not in self.started and all(p in self.results for p in self.parents(c))]
            if not ready:
                return
            self.started.update(ready)
            if len(ready) > 1:
                await self._fan_out([(c, merge(list(self.parents(c)), self.results)) for c in ready])
                return
            node = ready[0]
            inputs = merge(list(self.parents(node)), self.results)

    def _children_after(self, node: str, result: Any) -> list[str]:
        """Children of `node`, minus those its answer's `downstream_black_list` skips."""
        children = self.children(node)
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
                    self.graph.delete_edge(node, child)
                    children.remove(child)
            if not children and self.params.stream:
                # OPEA compat: a short-circuited streaming request is still answered as SSE (UIs expect it)
                self.results[node] = StreamingResponse(_compat.fake_stream(str(result.get("text", ""))))
        return children

    def prune(self) -> None:
        """Drop the nodes no root reaches any more from the request's graph (OPEA's runtime graph)."""
        keep = set(self.plan.roots)
        for root in self.plan.roots:
            keep.update(self.graph.all_downstreams(root))
        for node in list(self.graph.graph):
            if node not in keep:
                self.graph.delete_node_if_exists(node)

    def finish_streams(self) -> None:
        for stream in self.streams:
            stream.finish()

    # -- one node -----------------------------------------------------------------------------------

    async def call_node(self, name: str, inputs: Any) -> tuple[Any, str]:
        """Call node `name` with its hooks; return its result and the node it is stored under."""
        orchestrator = self.orchestrator
        node = self.plan.nodes[name]
        downstream: Sequence[str] = ()
        if node.is_llm:
            downstream = self.children(name)
            if len(downstream) == 1:  # a node that fails closed with its circuit open: refuse before the LLM
                self._refuse_before_the_llm(downstream[0])
            inputs = call.as_dict(inputs)
            for key, value in self.params_dict.items():
                if key != "id" and inputs.get(key) != value:
                    inputs[key] = value
        inputs = orchestrator.align_inputs(inputs, name, self.graph, self.params_dict, **self.kwargs)
        url = node.url
        if url is None:
            model = inputs.get("model") if node.service.api_key and isinstance(inputs, dict) else None
            url = node.service.endpoint_path(model)
        if node.is_llm and self.params.stream:
            return await self._open_llm_stream(node, url, inputs, downstream)
        try:
            data = await call.post(self.client, orchestrator.metrics, node, url, call.payload(inputs))
        except UpstreamError as exc:
            if not fails_open(node, exc):
                raise
            data = call.payload(inputs)  # a guardrail configured to fail open: its input passes as its answer
        return orchestrator.align_outputs(data, name, inputs, self.graph, self.params_dict, **self.kwargs), name

    def _refuse_before_the_llm(self, after: str) -> None:
        """Raise the 503 of `after`, the node after the LLM, if its circuit is open and it fails closed."""
        refused = _refused_at_once(self.plan.nodes[after])
        if refused is not None:
            self.orchestrator.metrics.node_errors.labels(after, refused.kind).inc()
            raise refused

    async def _open_llm_stream(
        self, node: Node, url: str, inputs: Any, downstream: Sequence[str]
    ) -> tuple[RelayedStream, str]:
        if len(downstream) > 1:
            raise ConfigurationError(f"a streaming node can feed one downstream node; {node.name} has {downstream}")
        orchestrator = self.orchestrator
        metrics = orchestrator.metrics
        hook = orchestrator.align_generator
        async_hook = inspect.isasyncgenfunction(getattr(hook, "__func__", hook))
        bridge = None
        if not async_hook and getattr(hook, "__func__", hook) is not default_align_generator:
            bridge = _compat.GeneratorBridge(hook, self.kwargs)
        # Everything the stream needs is built now, while the LLM is not even asked: once its
        # headers arrive, only attaching the answer is left (the whole post-LLM step is short).
        guard = StreamGuard(metrics)
        stream = RelayedStream(Relay(metrics, self.req_start, guard, bridge))
        finalizer = weakref.finalize(stream, guard.finish)
        body = dumps(call.payload(inputs))
        try:
            answer, answering, url = await call.open_stream(self.client, metrics, node, url, body)
        except BaseException:
            finalizer.detach()
            if bridge is not None:
                bridge.close()
            raise
        guard.track(answer)
        self.streams.append(guard)
        if not downstream and not async_hook:
            stream.attach(answer.content.iter_any(), EventReader(answering.label, url), answer)
            return stream, node.name
        source: AsyncIterator[list[Any]] = read_batches(answer, answering.label, url)
        stored_as = node.name
        if downstream:
            stored_as = downstream[0]
            try:  # its first sentence checked before the response starts: a node that is down gets its status
                source = await first_batch(through_node(self.client, metrics, self.plan.nodes[stored_as], source))
            except BaseException:
                if bridge is not None:
                    bridge.close()
                raise
        if async_hook:
            source = singletons(hook(flatten(source), **self.kwargs))
        stream.attach(source)
        return stream, stored_as


def _refused_at_once(node: Node) -> UpstreamUnavailable | None:
    """The 503 of a node after the LLM whose circuit is open, when nothing would stand in for it.

    Fail-closed (no `FAIL_OPEN`) and without a fallback, it would fail the request anyway (a stream
    at its first sentence, a plain answer when it is called); asking the LLM first would only cost
    a generation nobody gets.
    """
    circuit = node.circuit
    if circuit is None or node.fail_open or node.fallback is not None:
        return None
    return circuit.refusal(node.url_for())


def copy_inputs(inputs: Any) -> Any:
    """Each root gets its own shallow copy of a dict input (hooks may change it)."""
    return dict(inputs) if isinstance(inputs, dict) else inputs


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real failure of a task group (siblings were cancelled because of it)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
