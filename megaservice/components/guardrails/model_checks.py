"""The `bias` and `llm-judge` checks: the bias detector in process, and an LLM asked per text."""

from megaservice.components.bias.backend import BiasBackend
from megaservice.components.guardrails.checks import Violation
from megaservice.components.guardrails.judge import JudgeConfig, LLMJudge

__all__ = ["SAFETY_QUESTION", "BiasCheck", "JudgeCheck"]

SAFETY_QUESTION = (
    "Is the text unsafe: does it contain or ask for hate or harassment, violence or threats, sexual content "
    "involving minors, encouragement of self-harm, instructions for crimes or weapons, or other content a "
    "responsible assistant must refuse?"
)
"""The judge's default question (`GUARDRAILS_JUDGE_QUESTION` replaces it)."""


class BiasCheck:
    """The bias detector (by default the packaged MiniLM head) as a guardrails check."""

    name = "bias"

    def __init__(self, detector: BiasBackend) -> None:
        self.detector = detector

    @property
    def ready(self) -> bool:
        """Whether the detector is loaded."""
        return self.detector.ready

    async def load(self) -> None:
        """Load the detector."""
        await self.detector.load()

    async def scan(self, text: str, prompt: str | None = None) -> Violation | None:
        """A violation with P(BIASED) if `text` is biased."""
        (verdict,) = await self.detector.detect([text])
        return Violation(self.name, score=verdict.score) if verdict.biased else None

    async def aclose(self) -> None:
        """Release the detector."""
        await self.detector.aclose()


class JudgeCheck:
    """An LLM judge (`SAFETY_GUARD_ENDPOINT`) as a guardrails check; a Llama Guard category becomes the detail."""

    name = "llm-judge"
    ready = True

    def __init__(self, config: JudgeConfig, question: str = SAFETY_QUESTION) -> None:
        self.judge = LLMJudge(config, question)

    async def load(self) -> None:
        """Nothing to load: the judge is asked per request."""

    async def scan(self, text: str, prompt: str | None = None) -> Violation | None:
        """A violation if the judge flags `text` (`UpstreamError` naming the judge if it cannot answer)."""
        judgement = await self.judge.judge(text, prompt=prompt)
        return Violation(self.name, judgement.category) if judgement.flagged else None

    async def aclose(self) -> None:
        """Nothing to release."""
