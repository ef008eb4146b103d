"""A node after the LLM in a streaming pipeline (an output guardrail): fed the answer sentence by sentence, pipelined.

OPEA's wire protocol, without OPEA's waits: the LLM's text is cut into sentences (or windows of
`MAX_CHARS` cut at a space), each POSTed to the node as `{"text": sentence}` as soon as it is
complete, while the LLM keeps being read (`megaservice.checked_stream`; at most the node's
`stream_in_flight` sentences of one stream sent and not yet passed on). The node's answers go out
in order, as OPEA token frames (`data: b'…'`), each as soon as it and all earlier ones are in:
nothing reaches the client before the node passed it, and nothing the node passed waits for the
rest of the answer.

* The node's `text` replaces the sentence (OPEA's semantics): a guardrail that masks personal data
  answers the masked text, and that is what the client gets.
* A refusal (an answer with a non-empty `downstream_black_list`, OPEA's refusal, or HTTP 466, OPEA's
  llm-guard status) ends the stream: its text (`Violated policies: …, please check your input.`)
  goes out as OPEA token frames, which is what OPEA's UIs display, then a final `event: error` whose
  data names the node and the checks (`type: guardrail_violation`, the node's `violations` when it
  sends them, as megaservice's guardrails service does); no `[DONE]` follows, the answer is not
  complete. The LLM's stream is closed, which cancels its request; sentences in flight are cancelled.
* A node that fails (unreachable, 5xx, timed out, circuit open) fails the stream closed: before
  anything was sent, `schedule()` raises (`first_batch()`), so the client gets a 502/503/504 naming
  the node; later, the relay's final error event names it. With `MEGASERVICE_NODE_<NAME>_FAIL_OPEN=1`
  the sentence passes unchecked instead, with a warning. A fail-closed node without a fallback whose
  circuit is open fails the request with its 503 before the LLM is called, streaming or not (`run`).
"""

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from megaservice import _compat
from megaservice._pipeline.call import answer_text, post
from megaservice._pipeline.plan import Node
from megaservice.checked_stream import CheckedUnits, TextCutter, Unit
from megaservice.client import UpstreamClient
from megaservice.exceptions import UpstreamError, UpstreamStatusError
from megaservice.metrics import OrchestratorMetrics
from megaservice.resilience import is_node_failure
from megaservice.responses import aclose

__all__ = ["MAX_CHARS", "REFUSAL_STATUS", "fails_open", "first_batch", "through_node"]

logger = logging.getLogger("megaservice.orchestrator")

MAX_CHARS = 400
"""A unit with no sentence end is sent to the node once it is this long (cut at a space)."""
REFUSAL_STATUS = 466
"""The status OPEA's llm-guard guardrails refuse a text with."""

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Answer:
    """The node's decision on one sentence: the text to send instead, or the refusal that ends the stream."""

    text: str
    refusal: dict[str, Any] | None = None


async def through_node(
    client: UpstreamClient, metrics: OrchestratorMetrics, node: Node, source: AsyncIterator[list[bytes]]
) -> AsyncIterator[list[str | bytes]]:
    """Feed an LLM stream (`source`: batches of raw events) to `node` sentence by sentence; yield its answers."""
    text = _Text(source)
    units: CheckedUnits[str, _Answer] = CheckedUnits(
        text.pieces(), TextCutter(MAX_CHARS), _NodeCheck(client, metrics, node), max_pending=node.stream_in_flight
    )
    sent = False
    try:
        async for unit, answer in units:
            if answer is not None and answer.refusal is not None:
                message = answer.refusal["message"]
                yield [*_opea_frames(" " + message if sent else message), _compat.error_frame(answer.refusal)]
                return
            frames = _opea_frames(unit.text if answer is None else answer.text)  # `None`: blank, not checked
            if frames:
                sent = True
                yield frames
        if text.error is not None:
            yield [text.error]  # the LLM's own error event, after what passed: as the relay passes it without a guard
        elif text.done:
            yield [_compat.DONE_FRAME]
    finally:
        await units.aclose()


class _Text:
    """An LLM's stream as text, and whether it ended with `[DONE]` or with an error event of its own."""

    __slots__ = ("done", "error", "source")

    def __init__(self, source: AsyncIterator[list[bytes]]) -> None:
        self.source = source
        self.done = False
        self.error: bytes | None = None

    async def pieces(self) -> AsyncIterator[str]:
        """The text, a piece per network read, up to `[DONE]` or an `event: error`; the source is closed at the end."""
        try:
            async for batch in self.source:
                pieces = []
                for raw in batch:
                    if raw.startswith(b"event: error"):
                        self.error = raw
                        break
                    text, done = _compat.event_text(raw)
                    if done:
                        self.done = True
                        break
                    pieces.append(text)
                yield "".join(pieces)
                if self.done or self.error is not None:
                    return
        finally:
            await aclose(self.source)


class _NodeCheck:
    """One sentence POSTed to the node: its answer's text, or its refusal."""

    __slots__ = ("client", "failed_open", "metrics", "node", "url")

    def __init__(self, client: UpstreamClient, metrics: OrchestratorMetrics, node: Node) -> None:
        self.client = client
        self.metrics = metrics
        self.node = node
        self.url = node.url_for()
        self.failed_open = False

    async def __call__(self, unit: Unit[str]) -> _Answer:
        node = self.node
        try:
            answer = await post(self.client, self.metrics, node, self.url, {"text": unit.text}, retry=False)
        except UpstreamError as exc:
            if isinstance(exc, UpstreamStatusError) and exc.upstream_status == REFUSAL_STATUS:
                return _Answer("", _refusal_of(exc.body, node.label))
            if fails_open(node, exc, warn=not self.failed_open):  # warned once per stream
                self.failed_open = True
                return _Answer(unit.text)
            raise
        text = answer_text(answer, node.label, self.url)
        if isinstance(answer, Mapping) and answer.get("downstream_black_list"):
            return _Answer(text, _refusal(text, node.label, answer.get("violations")))
        return _Answer(text)


async def first_batch(source: AsyncIterator[_T]) -> AsyncIterator[_T]:
    """`source` once its first item is in, so that its failure before anything was sent is raised here.

    A node after the LLM has its first sentence checked before the response starts: the client
    gets nothing earlier anyway, and a node that is down can still be answered with its status.
    """
    try:
        first = await anext(source)
    except StopAsyncIteration:
        return source
    except BaseException:
        await aclose(source)
        raise
    return _Primed(first, source)


class _Primed(Generic[_T]):
    """An item already read, then the rest of its source; `aclose()` closes the source even if never iterated."""

    __slots__ = ("_first", "_rest", "_started")

    def __init__(self, first: _T, rest: AsyncIterator[_T]) -> None:
        self._first = first
        self._rest = rest
        self._started = False

    def __aiter__(self) -> "_Primed[_T]":
        return self

    async def __anext__(self) -> _T:
        if not self._started:
            self._started = True
            return self._first
        return await anext(self._rest)

    async def aclose(self) -> None:
        await aclose(self._rest)


def fails_open(node: Node, exc: UpstreamError, *, warn: bool = True) -> bool:
    """Whether `node`'s input passes on unchecked after it failed with `exc` (its `FAIL_OPEN`, a node failure)."""
    if not node.fail_open or not is_node_failure(exc):
        return False
    if warn:
        logger.warning("%s failed (%s); passing its input on unchecked (FAIL_OPEN)", node.label, exc)
    return True


def _refusal(message: str, node: str, violations: Any = None) -> dict[str, Any]:
    """The body of the final event of a stream the node refused."""
    listed = [v for v in violations if isinstance(v, Mapping)] if isinstance(violations, list) else []
    return {
        "object": "error",
        "type": "guardrail_violation",
        "message": message,
        "code": REFUSAL_STATUS,
        "node": node,
        "violations": listed,
    }


def _refusal_of(body: str, node: str) -> dict[str, Any]:
    """The refusal a node answered with HTTP 466 (OPEA's llm-guard guardrails: `{"detail": "…"}`)."""
    message = body
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        decoded = None
    if isinstance(decoded, Mapping):
        for key in ("detail", "text", "message"):
            if isinstance(decoded.get(key), str):
                message = decoded[key]
                break
        return _refusal(message, node, decoded.get("violations"))
    return _refusal(message or f"{node} refused the answer", node)


def _opea_frames(sentence: str) -> list[str | bytes]:
    return [_compat.opea_token_frame(token.replace("\\n", "\n")) for token in _compat.split_tokens(sentence)]
