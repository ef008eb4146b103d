"""The LLM service's token timing, as its client sees it (on `/metrics`).

    llm_first_token_latency_seconds   histogram  request received → first streamed event sent
    llm_inter_token_latency_seconds   histogram  between two streamed events (about one per token)

Measured in the service, so the model server's time plus this service's; the megaservice's own
`megaservice_llm_first_token_latency` adds the network between them. Events that one read of the
model server's socket brought together go out in one write: the first of them waited since the
last write, the others not at all (observed as 0), which is what the client sees.
"""

import time

from megaservice.metrics import FastHistogram, per_process

__all__ = ["TokenClock", "token_histograms"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)


@per_process
def token_histograms() -> tuple[FastHistogram, FastHistogram]:
    """The process's first-token and inter-token histograms (module docstring)."""
    return (
        FastHistogram(
            "llm_first_token_latency_seconds",
            "Seconds from a streamed chat request received by the LLM service to its first event sent.",
            buckets=_BUCKETS,
        ),
        FastHistogram(
            "llm_inter_token_latency_seconds",
            "Seconds between two events of a stream the LLM service sent (about one event per token).",
            buckets=_BUCKETS,
        ),
    )


class TokenClock:
    """Times one stream's events; `tick(events)` when a write of `events` events goes out (event loop only)."""

    __slots__ = ("_first", "_inter", "_last", "started")

    def __init__(self, started: float) -> None:
        first, inter = token_histograms()
        self._first = first.labels()
        self._inter = inter.labels()
        self.started = started
        self._last = 0.0

    def tick(self, events: int) -> None:
        """`events` (at least one) go out now."""
        now = time.monotonic()
        last = self._last
        self._last = now
        if last:
            self._inter.observe(now - last)
        else:
            self._first.observe(now - self.started)
        if events > 1:
            observe = self._inter.observe
            for _ in range(events - 1):
                observe(0.0)
