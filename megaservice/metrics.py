"""Prometheus metrics of the megaservice, under OPEA's names (Grafana dashboards pin them).

    megaservice_first_token_latency   histogram  request start → first streamed chunk sent
    megaservice_inter_token_latency   histogram  between two streamed chunks
    megaservice_request_latency       histogram  request start → last byte (streaming or not)
    megaservice_request_pending       gauge      requests inside the pipeline (never leaks: every
                                                 exit path, including errors and disconnects, decrements)
    pipeline_node_latency_seconds     histogram  per node: call start → answer (or stream headers)
    pipeline_node_errors_total        counter    per node and error kind

They live in the default registry, are created once per process, and are shared by every
orchestrator (OPEA PR #1301: duplicated time series otherwise).

Every service also exports the series of prometheus-fastapi-instrumentator's defaults, which OPEA
services expose and dashboards query (`HTTPMetrics`, `get_http_metrics`):

    http_requests_total{method,status,handler}         counter    status grouped: 2xx, 4xx, ...
    http_request_size_bytes{handler}                   summary    request Content-Length (0 if none)
    http_response_size_bytes{handler}                  summary    response Content-Length (0 if streamed)
    http_request_duration_seconds{method,handler}      histogram  buckets 0.1, 0.5, 1
    http_request_duration_highr_seconds                histogram  21 buckets, 10 ms to 60 s

`handler` is the route's path template (`/v1/items/{id}`), `none` for a path no route matched.
`MEGASERVICE_HTTP_METRICS=0` turns them off.

A component's own series (the gateway's, the embedding service's, ...) live in its package and
are made by a function decorated with `per_process`: created on first use, once per process, so
that tests starting many services in one process never register a name twice. The whole list is
in docs/observability.md.
"""

import bisect
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

__all__ = [
    "FastGauge",
    "FastHistogram",
    "HTTPMetrics",
    "OrchestratorMetrics",
    "get_http_metrics",
    "get_metrics",
    "per_process",
]

_T = TypeVar("_T")

_DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_LOWR_BUCKETS = (0.1, 0.5, 1.0)
_HIGHR_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 7.5, 10.0, 30.0, 60.0,
)  # fmt: skip
_NODE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Series:
    """One histogram series: a count per bucket and a sum (`observe` is a bisect and two additions)."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        """Record one value."""
        self.counts[bisect.bisect_left(self._bounds, amount)] += 1
        self.sum += amount


class FastHistogram(Collector):
    """A Prometheus histogram for the event loop's hot path; same exposition as `prometheus_client.Histogram`.

    `prometheus_client`'s histogram takes a lock and walks its buckets in Python for every value,
    several microseconds a call; streams observe one value per token. This one records with one
    `bisect` and two additions, and turns counts into cumulative buckets only when scraped. It is
    meant to be observed from one thread (the event loop's), as the orchestrator does.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = _DEFAULT_BUCKETS,
        registry: "object | None" = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._bounds = tuple(sorted(float(b) for b in buckets if b != math.inf))
        self._series: dict[tuple[str, ...], _Series] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)  # type: ignore[attr-defined]

    def labels(self, *values: str) -> _Series:
        """The series of one label combination (look it up once, keep it)."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        series = self._series.get(key)
        if series is None:
            with self._lock:
                series = self._series.setdefault(key, _Series(self._bounds))
        return series

    def observe(self, amount: float) -> None:
        """Record one value (a histogram without labels)."""
        series = self._series.get(())
        if series is None:
            series = self.labels()
        series.observe(amount)

    def describe(self) -> Iterable[Metric]:
        """The metric without samples (lets the registry catch duplicate names)."""
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        """The current values, as Prometheus reads them."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        series_list = list(self._series.items()) if self.labelnames else [((), self.labels())]
        for key, series in series_list:
            counts = list(series.counts)
            cumulative = 0
            buckets = []
            for bound, count in zip((*self._bounds, math.inf), counts, strict=True):
                cumulative += count
                buckets.append((_bound_text(bound), cumulative))
            family.add_metric(list(key), buckets, series.sum)
        return [family]


class FastGauge(Collector):
    """A Prometheus gauge without a lock per update, for the event loop's hot path."""

    def __init__(self, name: str, documentation: str, registry: "object | None" = REGISTRY) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0.0
        if registry is not None:
            registry.register(self)  # type: ignore[attr-defined]

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount`."""
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Subtract `amount`."""
        self.value -= amount

    def describe(self) -> Iterable[Metric]:
        """The metric without samples."""
        return [GaugeMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[Metric]:
        """The current value."""
        return [GaugeMetricFamily(self.name, self.documentation, value=self.value)]


class _Exchanges:
    """The requests of one (method, status group, handler): their count, sizes and durations."""

    __slots__ = ("count", "duration", "request_bytes", "response_bytes")

    def __init__(self, duration: _Series) -> None:
        self.count = 0
        self.request_bytes = 0
        self.response_bytes = 0
        self.duration = duration


class HTTPMetrics(Collector):
    """The `http_*` series of prometheus-fastapi-instrumentator's defaults (module docstring), recorded cheaply.

    `observe` is one dict lookup, three additions and two histogram observations; the series are
    assembled when scraped. Like `FastHistogram`, it is meant to be observed from the event loop.
    """

    def __init__(self, registry: "object | None" = REGISTRY) -> None:
        self._exchanges: dict[tuple[str, str, str], _Exchanges] = {}
        self.duration = FastHistogram(
            "http_request_duration_seconds",
            "Latency with only few buckets by handler. Made to be only used if aggregation by handler is important.",
            ["method", "handler"],
            buckets=_LOWR_BUCKETS,
            registry=None,
        )
        self.duration_highr = FastHistogram(
            "http_request_duration_highr_seconds",
            "Latency with many buckets but no API specific labels. Made for more accurate percentile calculations.",
            buckets=_HIGHR_BUCKETS,
            registry=None,
        )
        self._highr = self.duration_highr.labels()
        if registry is not None:
            registry.register(self)  # type: ignore[attr-defined]

    def observe(
        self, method: str, status: int, handler: str, request_bytes: int, response_bytes: int, seconds: float
    ) -> None:
        """Record one finished request."""
        key = (method, _STATUS_GROUPS.get(status // 100, "xxx"), handler)
        exchanges = self._exchanges.get(key)
        if exchanges is None:
            exchanges = self._exchanges[key] = _Exchanges(self.duration.labels(method, handler))
        exchanges.count += 1
        exchanges.request_bytes += request_bytes
        exchanges.response_bytes += response_bytes
        exchanges.duration.observe(seconds)
        self._highr.observe(seconds)

    def describe(self) -> Iterable[Metric]:
        """The metrics without samples (lets the registry catch duplicate names)."""
        return list(self._families(()))

    def collect(self) -> Iterable[Metric]:
        """The current values, as Prometheus reads them."""
        return list(self._families(list(self._exchanges.items())))

    def _families(self, items: Sequence[tuple[tuple[str, str, str], _Exchanges]]) -> Iterable[Metric]:
        total = CounterMetricFamily(
            "http_requests",
            "Total number of requests by method, status and handler.",
            labels=["method", "status", "handler"],
        )
        sizes: dict[str, list[int]] = {}
        for (method, status, handler), exchanges in items:
            total.add_metric([method, status, handler], exchanges.count)
            size = sizes.setdefault(handler, [0, 0, 0])
            size[0] += exchanges.count
            size[1] += exchanges.request_bytes
            size[2] += exchanges.response_bytes
        yield total
        for name, what, column in (("request", "incoming requests", 1), ("response", "outgoing responses", 2)):
            summary = SummaryMetricFamily(
                f"http_{name}_size_bytes",
                f"Content length of {what} by handler. Only value of header is respected. Otherwise ignored. "
                "No percentile calculated. ",
                labels=["handler"],
            )
            for handler, size in sizes.items():
                summary.add_metric([handler], size[0], size[column])
            yield summary
        if items:
            yield from self.duration.collect()
            yield from self.duration_highr.collect()
        else:
            yield from self.duration.describe()
            yield from self.duration_highr.describe()


_STATUS_GROUPS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def _bound_text(bound: float) -> str:
    if bound == math.inf:
        return "+Inf"
    return repr(float(bound))


class OrchestratorMetrics:
    """The megaservice's series, with OPEA's `OrchestratorMetrics` update methods."""

    def __init__(self) -> None:
        self.first_token_latency = FastHistogram("megaservice_first_token_latency", "First token latency (histogram)")
        self.inter_token_latency = FastHistogram("megaservice_inter_token_latency", "Inter-token latency (histogram)")
        self.request_latency = FastHistogram("megaservice_request_latency", "Whole request/reply latency (histogram)")
        self.request_pending = FastGauge("megaservice_request_pending", "Count of currently pending requests (gauge)")
        self.node_latency = FastHistogram(
            "pipeline_node_latency_seconds", "Latency of one call to a pipeline node", ["node"], buckets=_NODE_BUCKETS
        )
        self.node_errors = Counter("pipeline_node_errors", "Failed calls to a pipeline node", ["node", "kind"])
        self.node_retries = Counter("pipeline_node_retries", "Calls to a pipeline node tried again", ["node"])
        self.node_fallbacks = Counter(
            "pipeline_node_fallbacks", "Failed calls to a pipeline node answered by its fallback", ["node"]
        )
        self.circuit_open = Gauge("pipeline_node_circuit_open", "1 while a node's circuit breaker is open", ["node"])

    def token_update(self, token_start: float, is_first: bool) -> float:
        """Record one token sent `now`; return `now` (OPEA's signature)."""
        now = time.monotonic()
        (self.first_token_latency if is_first else self.inter_token_latency).observe(now - token_start)
        return now

    def request_update(self, req_start: float) -> None:
        """Record a finished request."""
        self.request_latency.observe(time.monotonic() - req_start)

    def pending_update(self, increase: bool) -> None:
        """Count a request in (`True`) or out (`False`) of the pipeline."""
        if increase:
            self.request_pending.inc()
        else:
            self.request_pending.dec()


_metrics: OrchestratorMetrics | None = None
_lock = threading.Lock()


def get_metrics() -> OrchestratorMetrics:
    """Return the process's metrics, creating them on first use."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = OrchestratorMetrics()
    return _metrics


_http_metrics: HTTPMetrics | None = None


def get_http_metrics(enabled: bool = True) -> HTTPMetrics | None:
    """Return the process's `http_*` series (created on first use), or `None` if not `enabled` (settings)."""
    global _http_metrics
    if _http_metrics is None:
        if not enabled:
            return None
        with _lock:
            if _http_metrics is None:
                _http_metrics = HTTPMetrics()
    return _http_metrics


def per_process(make: Callable[[], _T]) -> Callable[[], _T]:
    """`make`, called once per process: later calls return what the first returned (thread-safe).

    For the function that creates a component's series in the default registry:

        @per_process
        def retrieval_metrics() -> RetrievalMetrics:
            return RetrievalMetrics()
    """
    made: list[_T] = []
    lock = threading.Lock()

    def get() -> _T:
        if not made:
            with lock:
                if not made:
                    made.append(make())
        return made[0]

    get.__name__ = make.__name__
    get.__qualname__ = make.__qualname__
    get.__doc__ = make.__doc__
    return get
