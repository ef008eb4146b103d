"""The `transformers` bias detector: a text-classification model run by a transformers `pipeline`.

OPEA's production default is `valurank/distilroberta-bias` (labels `BIASED`/`NEUTRAL`). The model
is a local folder, or a Hub id already in the Hugging Face cache: components run offline
(`HF_HUB_OFFLINE=1` unless the environment says otherwise), so nothing is downloaded. Texts of
concurrent requests are classified together (`Batcher`), in one worker thread; inputs longer
than the model's limit are truncated by its tokenizer.
"""

import importlib.util
from collections.abc import Sequence
from typing import Any

from megaservice.components._shared.batching import Batcher
from megaservice.components._shared.blocking import Worker
from megaservice.components._shared.deps import require
from megaservice.components.bias.backend import BiasSettings, BiasVerdict
from megaservice.exceptions import ConfigurationError, MissingDependencyError

__all__ = ["DEFAULT_THRESHOLD", "TransformersBias"]

DEFAULT_THRESHOLD = 0.5
"""P(label) at which a text is biased when `BIAS_DETECTION_THRESHOLD` is unset: the model's arg-max, as OPEA."""


class TransformersBias:
    """`pipeline("text-classification", model=BIAS_DETECTION_MODEL)`; biased when P(`BIAS_DETECTION_LABEL`) is high."""

    name = "transformers"

    def __init__(self, settings: BiasSettings | None = None) -> None:
        settings = settings or BiasSettings()
        if importlib.util.find_spec("transformers") is None:  # fail at build time, without importing it yet
            raise MissingDependencyError("transformers", "transformers")
        self.model = settings.model
        self.label = settings.label
        self.threshold = settings.threshold if settings.threshold is not None else DEFAULT_THRESHOLD
        self._worker = Worker(threads=1)
        self._batcher: Batcher[str, float] = Batcher(self._score_batch, self._worker, max_batch=settings.batch_size)
        self._pipeline: Any = None

    @property
    def ready(self) -> bool:
        """Whether the model is loaded."""
        return self._pipeline is not None

    async def load(self) -> None:
        """Load the model and its tokenizer in the worker thread.

        Raises:
            ConfigurationError: the model has no label `BIAS_DETECTION_LABEL`.
            OSError: the model is neither a folder nor in the cache (transformers' message names it).
        """
        if self._pipeline is None:
            await self._worker.run(self._load)

    def _load(self) -> None:
        if self._pipeline is not None:
            return
        transformers = require("transformers", "transformers")
        classifier = transformers.pipeline(
            "text-classification", model=self.model, tokenizer=self.model, top_k=None, device=-1
        )
        labels = set(classifier.model.config.id2label.values())
        if self.label not in labels:
            raise ConfigurationError(
                f"BIAS_DETECTION_LABEL: the model {self.model} has no label {self.label!r}; "
                f"its labels are {', '.join(sorted(labels))}"
            )
        self._pipeline = classifier

    def _score_batch(self, texts: list[str]) -> list[float]:
        results = self._pipeline(texts, truncation=True, batch_size=len(texts))
        return [next(float(r["score"]) for r in result if r["label"] == self.label) for result in results]

    async def detect(self, texts: Sequence[str]) -> list[BiasVerdict]:
        """One verdict per text: P(`label`) compared with the threshold."""
        if self._pipeline is None:
            await self.load()
        scores = await self._batcher.submit(list(texts))
        return [BiasVerdict(score >= self.threshold, score) for score in scores]

    async def aclose(self) -> None:
        """Stop the batching task and drop the model."""
        await self._batcher.aclose()
        self._pipeline = None
