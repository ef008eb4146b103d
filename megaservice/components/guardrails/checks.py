"""What a guardrail check is, what it reports, and how a refusal reads.

    Check          a model-backed check (toxicity, bias, llm-judge): loaded once, `scan()`ned per text
    Violation      which check fired, with what it found (a PII kind, a judge's category) and its score
    Outcome        the text to pass on (PII masked), or the violations that refuse it
    refusal_text   OPEA's wording: "Violated policies: bias, please check your input."

The pattern checks (`banned`, `pii`) are plain functions of the text; `pipeline.Guardrails` runs both kinds.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Check", "Outcome", "Violation", "refusal_text"]


@dataclass(frozen=True, slots=True)
class Violation:
    """One check that fired."""

    check: str
    """The check's name (`banned`, `pii`, `toxicity`, `bias`, `llm-judge`)."""
    detail: str | None = None
    """What it found, when that helps (the banned term, the PII kinds, the judge's category)."""
    score: float | None = None
    """The model's score, for model-backed checks."""

    def label(self) -> str:
        """How the refusal text names it: `pii (email, card)`, or just `toxicity`."""
        return f"{self.check} ({self.detail})" if self.detail else self.check

    def to_dict(self) -> dict[str, Any]:
        """The entry of the answer's `violations` field."""
        entry: dict[str, Any] = {"check": self.check}
        if self.detail is not None:
            entry["detail"] = self.detail
        if self.score is not None:
            entry["score"] = round(self.score, 4)
        return entry


def refusal_text(violations: Sequence[Violation]) -> str:
    """OPEA's refusal text naming every check that fired."""
    return f"Violated policies: {', '.join(v.label() for v in violations)}, please check your input."


@dataclass(frozen=True, slots=True)
class Outcome:
    """The guardrails' decision on one text."""

    text: str
    """The text to pass on: the input, with personal data masked when PII masking is on."""
    violations: tuple[Violation, ...] = ()
    """The checks that fired; the text is refused when there is any."""
    masked: tuple[str, ...] = ()
    """The PII kinds that were masked in `text`."""

    @property
    def allowed(self) -> bool:
        """Whether the text may pass."""
        return not self.violations

    def refusal(self) -> str:
        """The refusal text (for a refused outcome)."""
        return refusal_text(self.violations)


class Check(Protocol):
    """A model-backed check, run on texts that passed the pattern checks."""

    name: str
    """Its name in `GUARDRAILS_CHECKS` and in violations."""

    @property
    def ready(self) -> bool:
        """Whether its model is loaded."""
        ...

    async def load(self) -> None:
        """Load its model, off the event loop."""
        ...

    async def scan(self, text: str, prompt: str | None = None) -> Violation | None:
        """A violation if `text` (an answer to `prompt`, when given) breaks this check's policy, else `None`."""
        ...

    async def aclose(self) -> None:
        """Release what `load()` took."""
        ...
