"""The checks a text goes through, in two stages.

    1. patterns   banned substrings and regexes, then PII (refused, or masked in the text passed on);
                  microseconds, on the event loop (in a worker thread for texts over 20 000 characters)
    2. models     toxicity, bias and the LLM judge, concurrently, on the text as stage 1 left it (a
                  remote judge never sees the PII that was masked)

A text refused in stage 1 does not reach stage 2 (no model time spent on it). Every check of the
stage that refused is reported. A model check that fails (the judge is down) fails the request;
the other checks of the stage are cancelled.
"""

import asyncio
from collections.abc import Iterable, Mapping, Sequence

from megaservice.components._shared.blocking import Worker
from megaservice.components.guardrails.banned import Banned
from megaservice.components.guardrails.checks import Check, Outcome, Violation
from megaservice.components.guardrails.pii import KINDS, PIIMatch, ReplaceMethod, find_pii, mask

__all__ = ["Guardrails"]

_INLINE_CHARS = 20_000


class Guardrails:
    """The guardrails backend: runs the enabled checks (`checks`) on texts.

    `models` holds the model-backed checks by name; one that is not enabled is loaded only when a
    single-purpose route asks for it (`/v1/toxicity`).
    """

    def __init__(
        self,
        checks: Sequence[str],
        *,
        banned: Banned | None = None,
        pii_kinds: Iterable[str] = KINDS,
        pii_action: str = "mask",
        pii_replacement: ReplaceMethod = "category",
        models: Mapping[str, Check] | None = None,
        name: str = "local",
    ) -> None:
        self.name = name
        self.checks = tuple(checks)
        self.banned = banned or Banned()
        self.pii_kinds = tuple(pii_kinds)
        self.pii_action = pii_action
        self.pii_replacement: ReplaceMethod = pii_replacement
        self.models = dict(models or {})
        self._scanner = Worker(threads=1)

    @property
    def ready(self) -> bool:
        """Whether every enabled model-backed check is loaded."""
        return all(check.ready for name, check in self.models.items() if name in self.checks)

    async def load(self) -> None:
        """Load the enabled model-backed checks, concurrently."""
        await asyncio.gather(*(check.load() for name, check in self.models.items() if name in self.checks))

    def find_pii(self, text: str) -> list[PIIMatch]:
        """The personal data of the configured kinds in `text`."""
        return find_pii(text, self.pii_kinds)

    def _patterns(self, text: str, enabled: Sequence[str]) -> Outcome:
        violations: list[Violation] = []
        masked: tuple[str, ...] = ()
        if "banned" in enabled:
            hit = self.banned.scan(text)
            if hit is not None:
                violations.append(hit)
        if "pii" in enabled:
            found = self.find_pii(text)
            if found:
                kinds = tuple(dict.fromkeys(match.kind for match in found))
                if self.pii_action == "refuse":
                    violations.append(Violation("pii", ", ".join(kinds)))
                else:
                    text = mask(text, found, self.pii_replacement)
                    masked = kinds
        return Outcome(text, tuple(violations), masked)

    async def check(self, text: str, *, prompt: str | None = None, only: Sequence[str] | None = None) -> Outcome:
        """The decision on `text` (an LLM's answer to `prompt`, when given) by the enabled checks, or `only` these.

        Raises:
            UpstreamError: the LLM judge could not answer (naming it).
        """
        enabled = self.checks if only is None else tuple(only)
        if len(text) > _INLINE_CHARS:
            outcome = await self._scanner.run(self._patterns, text, enabled)
        else:
            outcome = self._patterns(text, enabled)
        names = [name for name in enabled if name in self.models]
        if not outcome.allowed or not names:
            return outcome
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self.models[name].scan(outcome.text, prompt)) for name in names]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None  # the first failure; its siblings were cancelled
        violations = tuple(v for v in (task.result() for task in tasks) if v is not None)
        return Outcome(outcome.text, violations, outcome.masked)

    async def aclose(self) -> None:
        """Release every model-backed check."""
        for check in self.models.values():
            await check.aclose()
