"""One call to one node: its circuit, its retries, its fallback, its latency and error series.

    post(...)          a JSON call: encode, call (retrying what may be retried), decode, else the fallback
    open_stream(...)   a streaming call: the answer once its headers are in, else the fallback's

Written as one coroutine per call on purpose: every await of the call resumes through each
coroutine above it, so a layer per policy would cost on every request, configured or not.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any

import orjson
from pydantic import BaseModel

from megaservice import tracing
from megaservice._pipeline.plan import Node
from megaservice._transport.base import StreamedAnswer
from megaservice.client import UpstreamClient, dumps
from megaservice.exceptions import ConfigurationError, UpstreamError, UpstreamProtocolError
from megaservice.metrics import OrchestratorMetrics
from megaservice.resilience import is_node_failure

__all__ = ["Attempt", "answer_text", "as_dict", "decode", "fallback", "open_stream", "payload", "post"]

logger = logging.getLogger("megaservice.orchestrator")

_BINARY_TYPES = ("audio/", "image/", "video/", "application/octet-stream")


class Attempt:
    """One call to a node, as a `with` block: its circuit checked on entry; its latency, errors and outcome on exit."""

    __slots__ = ("_metrics", "_node", "_started")

    def __init__(self, metrics: OrchestratorMetrics, node: Node, url: str) -> None:
        circuit = node.circuit
        if circuit is not None:
            try:
                circuit.check(url)
            except UpstreamError as exc:
                metrics.node_errors.labels(node.name, exc.kind).inc()
                raise
        self._metrics = metrics
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
            self._metrics.node_errors.labels(node.name, exc.kind).inc()
        if node.circuit is not None:
            node.circuit.record(outcome)


def post(
    client: UpstreamClient, metrics: OrchestratorMetrics, node: Node, url: str, data: Any, *, retry: bool = True
) -> Awaitable[Any]:
    """Call a node (its retries and circuit breaker included) and decode its answer; then its fallback.

    Traced, the call (retries and fallback included) is the node's span (`megaservice.tracing`).
    """
    body = dumps(data)
    if tracing.tracer is None:
        return _post(client, metrics, node, url, body, retry)
    return tracing.tracer.node(_post(client, metrics, node, url, body, retry), node.label, body)


async def _post(
    client: UpstreamClient, metrics: OrchestratorMetrics, node: Node, url: str, body: bytes, retry: bool
) -> Any:
    policy = node.retry if retry else None
    attempt = 0
    fell_back = False
    while True:
        try:
            with Attempt(metrics, node, url):
                content_type, answer = await client.post(
                    node.label, url, body, headers=node.headers, timeout=node.timeout
                )
                return decode(node.label, url, content_type, answer)  # bad JSON counts as the node's failure
        except UpstreamError as exc:
            if policy is None or attempt + 1 >= policy.attempts or not policy.should_retry(exc):
                if fell_back:
                    raise
                node = fallback(metrics, node, exc)  # re-raises `exc` when there is none
                url = node.url_for()
                policy, fell_back = None, True
                continue
        metrics.node_retries.labels(node.name).inc()
        await asyncio.sleep(policy.delay(attempt))
        attempt += 1


def fallback(metrics: OrchestratorMetrics, node: Node, exc: UpstreamError) -> Node:
    """The node to try after `node` failed with `exc`; re-raise `exc` if there is none or the request was wrong."""
    stand_in = node.fallback
    if stand_in is None or not is_node_failure(exc):
        raise exc
    metrics.node_fallbacks.labels(node.name).inc()
    logger.warning("%s failed (%s); calling its fallback %s", node.label, exc, stand_in.label)
    return stand_in


def open_stream(
    client: UpstreamClient, metrics: OrchestratorMetrics, node: Node, url: str, body: bytes
) -> Awaitable[tuple[StreamedAnswer, Node, str]]:
    """Open a stream from `node`, else from its fallback; return the answer, the node answering and its URL.

    Traced, the node's span lasts until the answer is released or closed (`megaservice.tracing`).
    """
    if tracing.tracer is None:
        return _open_stream(client, metrics, node, url, body)
    return tracing.tracer.node_stream(_open_stream(client, metrics, node, url, body), node.label, body)


async def _open_stream(
    client: UpstreamClient, metrics: OrchestratorMetrics, node: Node, url: str, body: bytes
) -> tuple[StreamedAnswer, Node, str]:
    try:
        with Attempt(metrics, node, url):
            answer = await client.open_stream(node.label, url, body, headers=node.headers, timeout=node.timeout)
    except UpstreamError as exc:
        node = fallback(metrics, node, exc)
        url = node.url_for()
        with Attempt(metrics, node, url):
            answer = await client.open_stream(node.label, url, body, headers=node.headers, timeout=node.timeout)
    return answer, node, url


def decode(node: str, url: str, content_type: str, body: bytes) -> Any:
    """A node's answer: JSON decoded, binary media as bytes."""
    if content_type.startswith(_BINARY_TYPES):
        return body
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(
            f"{node} answered {content_type or 'no content type'} that is not JSON: {body[:200]!r}", node=node, url=url
        ) from None


def payload(inputs: Any) -> Any:
    """What goes on the wire: models as dicts without their top-level `None`s (as OPEA sends them)."""
    if isinstance(inputs, BaseModel):
        return {k: v for k, v in inputs.model_dump().items() if v is not None}
    return inputs


def as_dict(inputs: Any) -> dict[str, Any]:
    """An LLM node's inputs as a JSON object (`ConfigurationError` if they cannot be one)."""
    if isinstance(inputs, dict):
        return inputs
    if isinstance(inputs, BaseModel):
        return {k: v for k, v in inputs.model_dump().items() if v is not None}
    raise ConfigurationError(f"LLM node inputs must be a JSON object, got {type(inputs).__name__}")


def answer_text(answer: Any, node: str, url: str) -> str:
    """The `text` of a node's JSON answer (`UpstreamProtocolError` if it has none)."""
    if isinstance(answer, Mapping) and isinstance(answer.get("text"), str):
        return str(answer["text"])
    raise UpstreamProtocolError(f"{node} must answer a JSON object with a 'text' field", node=node, url=url)
