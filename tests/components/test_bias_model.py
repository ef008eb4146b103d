"""The shipped bias model's held-out numbers, computed by the service's own scoring, are the ones the docs publish.

docs/components/guardrails.md has one table row per (set, threshold); this test recomputes every
row with `LocalBias` (the `local` backend the service runs, sentence splitting included), so the
published precision and recall cannot drift from what the code does.
"""

import json
import re
from pathlib import Path

import pytest

from megaservice.components.bias import BiasSettings
from megaservice.components.bias.head import HEAD_FILE, BiasHead
from megaservice.components.bias.local import LocalBias

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DATA = HEAD_FILE.parent / "data"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "components" / "guardrails.md"
_ROW = re.compile(
    r"^\| `(?P<set>test|challenge)\.jsonl` \| (?P<n>\d+) \| (?P<threshold>[\d.]+) \| "
    r"\**(?P<precision>[\d.]+)\** \| \**(?P<recall>[\d.]+)\** \| \**(?P<f1>[\d.]+)\** \| (?P<accuracy>[\d.]+) \|",
    re.MULTILINE,
)


def published() -> list[dict[str, str]]:
    rows = [match.groupdict() for match in _ROW.finditer(DOCS.read_text())]
    assert {row["set"] for row in rows} == {"test", "challenge"}, "the docs' results table was not found"
    return rows


def metrics(labels: list[bool], scores: list[float], threshold: float) -> dict[str, float]:
    tp = sum(1 for y, s in zip(labels, scores, strict=True) if y and s >= threshold)
    fp = sum(1 for y, s in zip(labels, scores, strict=True) if not y and s >= threshold)
    fn = sum(1 for y, s in zip(labels, scores, strict=True) if y and s < threshold)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall),
        "accuracy": (len(labels) - fp - fn) / len(labels),
    }


async def test_the_docs_publish_what_the_service_computes_on_the_held_out_sets(minilm):
    detector = LocalBias(BiasSettings(), model=minilm)
    scored: dict[str, tuple[list[bool], list[float]]] = {}
    for name in ("test", "challenge"):
        rows = [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines() if line.strip()]
        verdicts = await detector.detect([row["text"] for row in rows])
        scored[name] = ([row["label"] == "BIASED" for row in rows], [v.score for v in verdicts])
        stored = BiasHead.load().metrics[name]  # what the training script measured, to 4 decimals
        computed = metrics(*scored[name], BiasHead.load().threshold)
        for key in ("precision", "recall", "f1", "accuracy"):
            assert computed[key] == pytest.approx(stored[key], abs=5e-5), (name, key)
    await detector.aclose()
    rows = published()
    assert any(float(row["threshold"]) == BiasHead.load().threshold for row in rows)
    for row in rows:
        labels, scores = scored[row["set"]]
        assert int(row["n"]) == len(labels)
        computed = metrics(labels, scores, float(row["threshold"]))
        for key in ("precision", "recall", "f1", "accuracy"):
            assert float(row[key]) == pytest.approx(computed[key], abs=5e-4 + 1e-9), (row, key)
