"""Read a service's `/metrics` over its socket: every sample, by name and labels."""

from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    """The samples `url/metrics` exports now."""
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.get(f"{url}/metrics")
    assert answer.status_code == 200, answer.text
    return parse(answer.text)


def parse(text: str) -> Samples:
    """The samples of a Prometheus text exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """One sample's value (0 if it is not exported)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much one sample grew between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)
