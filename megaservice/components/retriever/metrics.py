"""The retriever service's series (on `/metrics`), by `search_type` (OPEA's: `similarity`, `mmr`, `hybrid`, ...).

    retrieval_latency_seconds{search_type}   histogram  one search: the query sent to the store → its documents
    retrieval_documents{search_type}         histogram  documents one search returned (0 counts too)

A request refused before its search (bad input) is in neither.
"""

from megaservice.metrics import FastHistogram, per_process

__all__ = ["RetrievalMetrics", "retrieval_metrics"]

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DOCUMENTS = (0, 1, 2, 4, 8, 16, 32, 64, 128)


class RetrievalMetrics:
    """The two histograms (module docstring); observed from the event loop."""

    def __init__(self) -> None:
        self.latency = FastHistogram(
            "retrieval_latency_seconds",
            "Seconds one search of the store took, by search type.",
            ["search_type"],
            buckets=_SECONDS,
        )
        self.documents = FastHistogram(
            "retrieval_documents", "Documents one search returned, by search type.", ["search_type"], buckets=_DOCUMENTS
        )


@per_process
def retrieval_metrics() -> RetrievalMetrics:
    """The process's retrieval series, made on first use."""
    return RetrievalMetrics()
