"""The `llm-judge` bias detector: a yes/no question to any OpenAI-compatible server (vLLM, TGI, Ollama, OpenAI).

Each text is one chat completion (`megaservice.components.guardrails.judge`); a request's texts
are asked concurrently. The question follows the labels of the packaged data set
(`data/README.md`): prejudice, stereotypes and one-sided loaded language about a group count;
reporting, quoting or rebutting bias does not.
"""

import asyncio
from collections.abc import Sequence

from megaservice.components.bias.backend import BiasSettings, BiasVerdict
from megaservice.components.guardrails.judge import LLMJudge

__all__ = ["BIAS_QUESTION", "JudgeBias"]

BIAS_QUESTION = (
    "Does the text express prejudice, a stereotype (positive ones included) or one-sided loaded language about a "
    "group of people (a gender, race, religion, nationality, age, disability, political side, sexual orientation, "
    "class or similar)? Reporting, quoting or rebutting such a view, and neutral facts about a group, are not bias."
)
"""The question the judge answers yes or no."""


class JudgeBias:
    """Bias as an LLM judges it (`BIAS_JUDGE_ENDPOINT`, `BIAS_JUDGE_MODEL`); scores are 1.0 (yes) or 0.0 (no)."""

    name = "llm-judge"
    ready = True

    def __init__(self, settings: BiasSettings | None = None) -> None:
        settings = settings or BiasSettings()
        self.judge = LLMJudge(settings.judge(), BIAS_QUESTION)

    async def load(self) -> None:
        """Nothing to load: the judge is asked per request."""

    async def detect(self, texts: Sequence[str]) -> list[BiasVerdict]:
        """One judgement per text, asked concurrently (`UpstreamError` naming the judge if it fails)."""
        judgements = await asyncio.gather(*(self.judge.judge(text) for text in texts))
        return [BiasVerdict(j.flagged, 1.0 if j.flagged else 0.0) for j in judgements]

    async def aclose(self) -> None:
        """Nothing to release (the pooled client belongs to the process)."""
