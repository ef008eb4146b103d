"""The `toxicity` check: alt-profanity-check's `predict_prob` (a linear SVM over TF-IDF, packaged on PyPI).

The package loads its model when it is imported (~1.5 s), so the import happens in the worker
thread at startup. Texts of concurrent requests are scored together (`Batcher`): one call of 64
texts costs about what one call of one text does. A long text is scored sentence by sentence,
as the bias detector does, so that its neutral sentences do not dilute an insulting one.
"""

from collections.abc import Callable, Sequence
from typing import Any

from megaservice.components._shared.batching import Batcher
from megaservice.components._shared.blocking import Worker
from megaservice.components._shared.deps import require
from megaservice.components.bias.head import segments
from megaservice.components.guardrails.checks import Violation

__all__ = ["Toxicity"]


class Toxicity:
    """Toxic when `predict_prob` is at least `threshold` for the text (or one of its sentences)."""

    name = "toxicity"

    def __init__(self, threshold: float = 0.5, *, max_words: int = 64, batch_size: int = 64) -> None:
        self.threshold = threshold
        self._max_words = max_words
        self._worker = Worker(threads=1)
        self._batcher: Batcher[str, float] = Batcher(self._score_batch, self._worker, max_batch=batch_size)
        self._predict_prob: Callable[[Sequence[str]], Any] | None = None

    @property
    def ready(self) -> bool:
        """Whether the model is loaded."""
        return self._predict_prob is not None

    async def load(self) -> None:
        """Import alt-profanity-check (which reads its model) in the worker thread."""
        if self._predict_prob is None:
            await self._worker.run(self._load)

    def _load(self) -> None:
        if self._predict_prob is None:
            self._predict_prob = require("profanity_check", "guardrails", "alt-profanity-check").predict_prob

    def _score_batch(self, texts: list[str]) -> list[float]:
        assert self._predict_prob is not None
        return [float(p) for p in self._predict_prob(texts)]

    async def scores(self, texts: Sequence[str]) -> list[float]:
        """P(toxic) of each text: its most toxic sentence's, when it is long."""
        if self._predict_prob is None:
            await self.load()
        pieces = [segments(text, self._max_words) for text in texts]
        flat = await self._batcher.submit([piece for parts in pieces for piece in parts])
        result: list[float] = []
        start = 0
        for parts in pieces:
            result.append(max(flat[start : start + len(parts)], default=0.0))
            start += len(parts)
        return result

    async def scan(self, text: str, prompt: str | None = None) -> Violation | None:
        """A violation with the score if `text` is toxic."""
        (score,) = await self.scores([text])
        return Violation(self.name, score=score) if score >= self.threshold else None

    async def aclose(self) -> None:
        """Stop the batching task."""
        await self._batcher.aclose()
