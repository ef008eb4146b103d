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
"""

import threading
import time

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["OrchestratorMetrics", "get_metrics"]

_NODE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class OrchestratorMetrics:
    """The megaservice's series, with OPEA's `OrchestratorMetrics` update methods."""

    def __init__(self) -> None:
        self.first_token_latency = Histogram("megaservice_first_token_latency", "First token latency (histogram)")
        self.inter_token_latency = Histogram("megaservice_inter_token_latency", "Inter-token latency (histogram)")
        self.request_latency = Histogram("megaservice_request_latency", "Whole request/reply latency (histogram)")
        self.request_pending = Gauge("megaservice_request_pending", "Count of currently pending requests (gauge)")
        self.node_latency = Histogram(
            "pipeline_node_latency_seconds", "Latency of one call to a pipeline node", ["node"], buckets=_NODE_BUCKETS
        )
        self.node_errors = Counter("pipeline_node_errors", "Failed calls to a pipeline node", ["node", "kind"])

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
