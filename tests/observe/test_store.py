"""TraceStore: summaries and waterfalls of the spans received, within its bounds."""

from typing import Any

import pytest

from megaservice.observe import ReceivedSpan, TraceStore
from megaservice.observe.store import waterfall

T1, T2, T3 = "a" * 32, "b" * 32, "c" * 32


def span(
    trace: str, span_id: str, parent: str | None, name: str, service: str, start: int, end: int, **kw: Any
) -> ReceivedSpan:
    return ReceivedSpan(
        trace, span_id.ljust(16, "0"), parent and parent.ljust(16, "0"), name, "internal", service, start, end, **kw
    )


def request_trace(trace: str = T1, *, error: bool = False) -> list[ReceivedSpan]:
    """A gateway request over two nodes, as three services export it (children first, as exporters send)."""
    return [
        span(trace, "3", "2", "POST /v1/retrieval", "retriever", 2_000_000, 5_000_000),
        span(
            trace,
            "2",
            "1",
            "node retriever",
            "chatqna",
            1_000_000,
            6_000_000,
            attributes={"megaservice.node": "retriever", "url.path": "/x"},
        ),
        span(
            trace,
            "4",
            "1",
            "node llm",
            "chatqna",
            6_000_000,
            20_000_000,
            status="error" if error else "unset",
            attributes={"gen_ai.usage.input_tokens": 11, "gen_ai.usage.output_tokens": 5},
        ),
        span(trace, "1", None, "POST /v1/chatqna", "chatqna", 0, 21_000_000),
    ]


def test_a_trace_is_summed_up_from_its_root_whatever_order_its_spans_came_in():
    store = TraceStore()
    store.add(request_trace())
    [summary] = store.summaries()
    assert summary == {
        "trace_id": T1,
        "root": "POST /v1/chatqna",
        "root_service": "chatqna",
        "services": ["chatqna", "retriever"],
        "start_unix_ms": 0.0,
        "duration_ms": 21.0,
        "spans": 4,
        "dropped_spans": 0,
        "errors": 0,
    }
    assert store.summary(T2) is None and store.trace(T2) is None


def test_the_waterfall_puts_each_span_under_its_parent_with_offsets_and_key_attributes():
    store = TraceStore()
    store.add(request_trace(error=True))
    trace = store.trace(T1)
    assert trace is not None and trace["errors"] == 1 and trace["span_count"] == 4
    rows = [(row["name"], row["depth"], row["offset_ms"], row["duration_ms"]) for row in trace["spans"]]
    assert rows == [
        ("POST /v1/chatqna", 0, 0.0, 21.0),
        ("node retriever", 1, 1.0, 5.0),
        ("POST /v1/retrieval", 2, 2.0, 3.0),
        ("node llm", 1, 6.0, 14.0),
    ]
    llm = trace["spans"][3]
    assert llm["status"] == "error" and llm["service"] == "chatqna"
    assert llm["key_attributes"] == {"gen_ai.usage.input_tokens": 11, "gen_ai.usage.output_tokens": 5}
    retriever_node = trace["spans"][1]
    assert retriever_node["key_attributes"] == {"megaservice.node": "retriever"}
    assert retriever_node["attributes"]["url.path"] == "/x"  # every attribute is in the row, the key ones shown


def test_a_trace_whose_root_has_not_arrived_yet_shows_its_orphans_at_the_top():
    spans = request_trace()[:3]  # the gateway's server span comes later
    ordered = waterfall(spans)
    assert [(s.name, depth) for s, depth in ordered] == [
        ("node retriever", 0),
        ("POST /v1/retrieval", 1),
        ("node llm", 0),
    ]
    twice = waterfall([*spans, spans[0]])
    assert len(twice) == 3  # a span exported twice is shown once


def test_the_least_recently_updated_traces_go_first_beyond_max_traces():
    store = TraceStore(max_traces=2)
    store.add(request_trace(T1))
    store.add(request_trace(T2))
    store.add([span(T1, "9", "1", "late", "llm", 7_000_000, 8_000_000)])  # T1 updated: now the newest
    store.add(request_trace(T3))
    assert [s["trace_id"] for s in store.summaries()] == [T3, T1]
    assert store.evicted == 1 and len(store) == 2 and store.span_count == 9 and store.received == 13


def test_max_spans_bounds_the_spans_held_in_all_and_in_one_trace():
    store = TraceStore(max_traces=100, max_spans=6)
    store.add(request_trace(T1))
    store.add(request_trace(T2))  # 8 spans: T1 goes
    assert [s["trace_id"] for s in store.summaries()] == [T2] and store.span_count == 4
    huge = [span(T3, f"{i:x}", None, f"s{i}", "x", i, i + 1) for i in range(1, 10)]
    store.add(huge)
    [summary] = store.summaries()
    assert (summary["trace_id"], summary["spans"], summary["dropped_spans"]) == (T3, 6, 3)
    assert store.span_count == 6


def test_the_list_filters_by_service_and_errors_and_stops_at_the_limit():
    store = TraceStore()
    store.add(request_trace(T1, error=True))
    store.add(request_trace(T2))
    store.add([span(T3, "1", None, "GET /", "other", 0, 1)])
    assert [s["trace_id"] for s in store.summaries(service="retriever")] == [T2, T1]
    assert [s["trace_id"] for s in store.summaries(errors=True)] == [T1]
    assert [s["trace_id"] for s in store.summaries(limit=1)] == [T3]


def test_bounds_below_one_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        TraceStore(max_traces=0)
