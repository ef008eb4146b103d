"""The dataprep service's ingestion progress (on `/metrics`).

    dataprep_ingest_in_progress        gauge    ingest requests being worked on
    dataprep_chunks_embedded_total     counter  chunks embedded so far (moves while a long file is
                                                embedded: its rate() is the ingestion's speed)
    dataprep_files_total               counter  files (and links) stored
    dataprep_chunks_total              counter  chunks stored (once their file's transaction committed)
    dataprep_failures_total{kind}      counter  ingest requests that failed: `input` (a 4xx: a file
                                                that cannot be read, too large, ...), `unavailable`
                                                (a 503: the service not ready), `upstream` (the
                                                embedding service or the database), `internal`

A request the client left before its answer is no failure.
"""

from prometheus_client import Counter, Gauge

from megaservice.exceptions import InputError, UpstreamError
from megaservice.metrics import per_process

__all__ = ["DataprepMetrics", "dataprep_metrics", "failure_kind"]


class DataprepMetrics:
    """The series (module docstring)."""

    def __init__(self) -> None:
        self.in_progress = Gauge("dataprep_ingest_in_progress", "Ingest requests the dataprep service is working on.")
        self.chunks_embedded = Counter("dataprep_chunks_embedded", "Chunks the dataprep service embedded.")
        self.files = Counter("dataprep_files", "Files (and links) the dataprep service stored.")
        self.chunks = Counter("dataprep_chunks", "Chunks the dataprep service stored.")
        self.failures = Counter("dataprep_failures", "Ingest requests that failed, by kind.", ["kind"])


def failure_kind(exc: BaseException) -> str:
    """The `kind` label of a failed ingest request."""
    if isinstance(exc, InputError):
        return "input" if exc.status_code < 500 else "unavailable"
    if isinstance(exc, UpstreamError):
        return "upstream"
    return "internal"


@per_process
def dataprep_metrics() -> DataprepMetrics:
    """The process's dataprep series, made on first use."""
    return DataprepMetrics()
