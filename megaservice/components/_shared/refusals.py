"""The guardrail services' refusals, by the check that fired (on `/metrics`).

    guardrail_refusals_total{service,check}   counter  refused requests: `service` is `guardrails` or
                                                       `bias`; `check` the check that fired (`banned`,
                                                       `pii`, `toxicity`, `bias`, `llm-judge`); a
                                                       request two checks refused counts once under each

Shared by the guardrails and the bias services (a megaservice may run both).
"""

from collections.abc import Iterable

from prometheus_client import Counter

from megaservice.metrics import per_process

__all__ = ["count_refusal", "refusals_counter"]


@per_process
def refusals_counter() -> Counter:
    """The process's `guardrail_refusals_total{service,check}`, made on first use."""
    return Counter(
        "guardrail_refusals", "Requests a guardrail service refused, by service and check.", ["service", "check"]
    )


def count_refusal(service: str, checks: Iterable[str]) -> None:
    """One request `service` refused, because of `checks` (each counted once)."""
    counter = refusals_counter()
    for check in dict.fromkeys(checks):
        counter.labels(service, check).inc()
