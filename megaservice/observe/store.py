"""The traces a receiver holds: the last `max_traces`, at most `max_spans` spans in all, in memory only.

    store = TraceStore(max_traces=500, max_spans=20_000)
    store.add(spans)                       # the spans of one export request, any traces
    store.summaries(limit=50)              # the most recently updated traces first
    store.trace(trace_id)                  # one trace: its spans as a waterfall

A trace is kept as its spans arrive, from whichever services export them, in whichever order.
When either bound is passed, the trace updated least recently goes first; a trace with more than
`max_spans` spans keeps its first ones and counts the ones it dropped.
"""

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from megaservice.observe.otlp import ReceivedSpan

__all__ = ["KEY_ATTRIBUTES", "TraceStore", "root_of"]

KEY_ATTRIBUTES = (
    "megaservice.node",
    "megaservice.status",
    "http.response.status_code",
    "gen_ai.request.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "megaservice.retrieved_docs",
    "megaservice.reranked_docs",
    "megaservice.stream.events",
    "error.type",
)
"""The attributes a waterfall row shows by itself (every attribute is in the span's detail)."""


@dataclass(slots=True)
class _Trace:
    spans: list[ReceivedSpan] = field(default_factory=list)
    dropped: int = 0


def root_of(spans: Sequence[ReceivedSpan]) -> ReceivedSpan:
    """The trace's root: the earliest span whose parent is not among `spans` (a caller's, or none)."""
    ids = {span.span_id for span in spans}
    orphans = [span for span in spans if span.parent_id is None or span.parent_id not in ids]
    return min(orphans or spans, key=lambda s: s.start_ns)


class TraceStore:
    """Traces by id, bounded (see the module docstring)."""

    def __init__(self, *, max_traces: int = 500, max_spans: int = 20_000) -> None:
        if max_traces < 1 or max_spans < 1:
            raise ValueError("max_traces and max_spans must be at least 1")
        self.max_traces = max_traces
        self.max_spans = max_spans
        self.received = 0
        """Spans received in all (kept, dropped or evicted since)."""
        self.evicted = 0
        """Traces let go to stay within the bounds."""
        self._traces: OrderedDict[str, _Trace] = OrderedDict()
        self._span_count = 0

    def __len__(self) -> int:
        return len(self._traces)

    @property
    def span_count(self) -> int:
        """Spans held now."""
        return self._span_count

    def add(self, spans: Iterable[ReceivedSpan]) -> None:
        """Keep `spans` (from one export: any services, any traces), letting the oldest traces go if need be."""
        for span in spans:
            self.received += 1
            trace = self._traces.get(span.trace_id)
            if trace is None:
                trace = self._traces[span.trace_id] = _Trace()
            else:
                self._traces.move_to_end(span.trace_id)
            if len(trace.spans) >= self.max_spans:
                trace.dropped += 1
                continue
            trace.spans.append(span)
            self._span_count += 1
        while len(self._traces) > self.max_traces or (self._span_count > self.max_spans and len(self._traces) > 1):
            _, oldest = self._traces.popitem(last=False)
            self._span_count -= len(oldest.spans)
            self.evicted += 1

    def spans(self, trace_id: str) -> list[ReceivedSpan]:
        """One trace's spans by start time (empty if unknown)."""
        trace = self._traces.get(trace_id)
        return sorted(trace.spans, key=lambda s: s.start_ns) if trace is not None else []

    def summaries(self, *, limit: int = 100, service: str | None = None, errors: bool = False) -> list[dict[str, Any]]:
        """A summary of each trace, the most recently updated first; only `service`'s, only those with errors."""
        found: list[dict[str, Any]] = []
        for trace_id in reversed(self._traces):
            summary = self.summary(trace_id)
            if (
                summary is None
                or (service and service not in summary["services"])
                or (errors and not summary["errors"])
            ):
                continue
            found.append(summary)
            if len(found) >= limit:
                break
        return found

    def summary(self, trace_id: str) -> dict[str, Any] | None:
        """What the trace list shows of one trace: root span, services, start, duration, span and error counts."""
        trace = self._traces.get(trace_id)
        if trace is None or not trace.spans:
            return None
        spans = trace.spans
        root = root_of(spans)
        start = min(span.start_ns for span in spans)
        end = max(span.end_ns for span in spans)
        return {
            "trace_id": trace_id,
            "root": root.name,
            "root_service": root.service,
            "services": list(dict.fromkeys(span.service for span in sorted(spans, key=lambda s: s.start_ns))),
            "start_unix_ms": start / 1e6,
            "duration_ms": round((end - start) / 1e6, 3),
            "spans": len(spans),
            "dropped_spans": trace.dropped,
            "errors": sum(1 for span in spans if span.status == "error"),
        }

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """One trace as its summary plus its spans in waterfall order (each after its parent, by start time)."""
        summary = self.summary(trace_id)
        if summary is None:
            return None
        spans = self.spans(trace_id)
        start = min(span.start_ns for span in spans)
        rows = [_row(span, depth, start) for span, depth in waterfall(spans)]
        return {**summary, "spans": rows, "span_count": len(rows)}


def waterfall(spans: Sequence[ReceivedSpan]) -> list[tuple[ReceivedSpan, int]]:
    """`spans` depth first, children under their parent by start time, each with its depth (a root: 0)."""
    ids = {span.span_id for span in spans}
    children: dict[str | None, list[ReceivedSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_ns):
        children.setdefault(span.parent_id if span.parent_id in ids else None, []).append(span)
    ordered: list[tuple[ReceivedSpan, int]] = []
    stack = [(span, 0) for span in reversed(children.get(None, []))]
    seen: set[str] = set()
    while stack:
        span, depth = stack.pop()
        if span.span_id in seen:  # a span id sent twice: shown once
            continue
        seen.add(span.span_id)
        ordered.append((span, depth))
        stack.extend((child, depth + 1) for child in reversed(children.get(span.span_id, [])))
    ordered.extend((span, 0) for span in sorted(spans, key=lambda s: s.start_ns) if span.span_id not in seen)
    return ordered


def _row(span: ReceivedSpan, depth: int, start: int) -> dict[str, Any]:
    return {
        "span_id": span.span_id,
        "parent_id": span.parent_id,
        "depth": depth,
        "service": span.service,
        "name": span.name,
        "kind": span.kind,
        "offset_ms": round((span.start_ns - start) / 1e6, 3),
        "duration_ms": round(span.duration_ms, 3),
        "status": span.status,
        "status_message": span.status_message,
        "key_attributes": {key: span.attributes[key] for key in KEY_ATTRIBUTES if key in span.attributes},
        "attributes": span.attributes,
    }
