"""The `cross-encoder` backend: a sentence-transformers `CrossEncoder` the user names, on torch in process.

    RERANK_BACKEND=cross-encoder RERANK_MODEL=/models/bge-reranker-base megaservice serve reranker

`RERANK_MODEL` is a local folder or a name in the Hugging Face cache (downloads stay off unless
`HF_HUB_OFFLINE=0`): a sequence-classification checkpoint with one label, as TEI's rerankers are
(BAAI/bge-reranker-*, cross-encoder/ms-marco-*). Each query/text pair is read together (unlike the
`embedding` backend's two vectors). The pairs of concurrent requests share model calls (dynamic
batching), in one worker thread with `RERANK_THREADS` torch threads. The score is the sigmoid of the
model's logit, as TEI answers; `raw_scores` gives the logit. Needs
`pip install 'megaservice[sentence-transformers]'`. No cross-encoder weights ship offline: the tests
run this code on a tiny randomly initialised checkpoint.
"""

import inspect
import math
import threading
from typing import TYPE_CHECKING, Any

from megaservice.components._shared.batching import Batcher
from megaservice.components._shared.blocking import Loader, Worker
from megaservice.components._shared.deps import require
from megaservice.exceptions import ConfigurationError

if TYPE_CHECKING:
    from megaservice.components.reranker.backend import RerankerSettings

__all__ = ["MAX_BATCH", "CrossEncoderModel", "CrossEncoderReranker", "cross_encoder_backend"]

MAX_BATCH = 16
"""Query/text pairs per model call by default."""

_EXTRA = "sentence-transformers"
Pair = tuple[str, str]


class CrossEncoderModel:
    """A `CrossEncoder` on the CPU, loaded on `load()`; call it from one thread.

    **Parameters:**

    * **model** - a folder or a name in the Hugging Face cache.
    * **threads** - torch's threads.
    * **max_length** - most tokens of a pair (default: the checkpoint's own limit).
    """

    def __init__(self, model: str, *, threads: int = 2, max_length: int | None = None) -> None:
        self.model_id = model
        self._threads = threads
        self._max_length = max_length
        self._model: Any = None
        self._activation: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._model is not None

    @property
    def max_input_length(self) -> int:
        """Most tokens of a query/text pair the model reads (512 before `load()`)."""
        if self._model is None:
            return self._max_length or 512
        # sentence-transformers 6 renamed `max_length` to `max_seq_length` (the old name warns)
        name = "max_seq_length" if hasattr(type(self._model), "max_seq_length") else "max_length"
        length = getattr(self._model, name, None) or self._model.tokenizer.model_max_length
        return int(min(length, 1_000_000))

    def load(self) -> None:
        """Import torch and sentence-transformers and read the model (blocking).

        Raises:
            ConfigurationError: the checkpoint is not a reranker (it has more than one label).
        """
        with self._lock:
            if self._model is not None:
                return
            torch = require("torch", _EXTRA)
            sentence_transformers = require("sentence_transformers", _EXTRA, "sentence-transformers")
            torch.set_num_threads(self._threads)
            model = sentence_transformers.CrossEncoder(self.model_id, device="cpu", max_length=self._max_length)
            labels = int(model.model.config.num_labels)
            if labels != 1:
                raise ConfigurationError(
                    f"RERANK_MODEL={self.model_id!r} has {labels} labels; a reranker has one (a relevance logit)"
                )
            # the logits themselves: the service applies the sigmoid unless asked for raw scores
            parameters = inspect.signature(model.predict).parameters
            name = next((p for p in ("activation_fn", "activation_fct") if p in parameters), None)
            self._activation = {name: torch.nn.Identity()} if name else {}
            self._model = model

    def logits(self, pairs: list[Pair]) -> list[float]:
        """The model's logit for each (query, text) pair (blocking)."""
        if self._model is None:
            self.load()
        output = self._model.predict(
            pairs, batch_size=max(1, len(pairs)), show_progress_bar=False, convert_to_numpy=True, **self._activation
        )
        return [float(x) for x in output.reshape(-1)]


class CrossEncoderReranker:
    """A `RerankerBackend` over a `CrossEncoderModel`: one worker thread, pairs batched across requests."""

    name = "cross-encoder"

    def __init__(self, model: CrossEncoderModel, *, max_batch: int = MAX_BATCH, max_pending: int = 4096) -> None:
        self.model = model
        self._worker = Worker(threads=1)
        self._batcher: Batcher[Pair, float] = Batcher(
            model.logits, self._worker, max_batch=max_batch, max_pending=max_pending
        )
        self._loading = Loader(self._worker, model.load, lambda: model.loaded)

    @property
    def model_id(self) -> str:
        """The checkpoint's name or folder."""
        return self.model.model_id

    @property
    def max_input_length(self) -> int:
        """Most tokens of a pair the model reads."""
        return self.model.max_input_length

    async def start(self) -> None:
        """Load the model in the worker thread; a failure is kept and reported by `ready()`."""
        await self._loading.start()

    async def ready(self) -> bool:
        """Whether the model is loaded (raises what stopped it from loading: `/v1/ready` shows it)."""
        return self._loading.ready()

    async def score(
        self, query: str, texts: list[str], *, raw: bool = False, truncate: bool | None = None
    ) -> list[float]:
        """The sigmoid of each pair's logit (`raw`: the logit), computed with the pairs of concurrent requests."""
        logits = await self._batcher.submit([(query, text) for text in texts])
        return logits if raw else [_sigmoid(x) for x in logits]

    async def aclose(self) -> None:
        """Stop batching (waiting requests are cancelled)."""
        await self._batcher.aclose()


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def cross_encoder_backend(
    settings: "RerankerSettings", *, model: CrossEncoderModel | None = None
) -> CrossEncoderReranker:
    """`settings.model` behind dynamic batching (`model`: one already made; `ConfigurationError` if none is named)."""
    if model is None:
        if not settings.model:
            raise ConfigurationError(
                "RERANK_BACKEND=cross-encoder needs RERANK_MODEL: a cross-encoder folder or a name in the Hugging Face "
                "cache (e.g. BAAI/bge-reranker-base)"
            )
        model = CrossEncoderModel(settings.model, threads=settings.threads)
    return CrossEncoderReranker(
        model, max_batch=settings.max_batch or MAX_BATCH, max_pending=max(4096, 4 * settings.max_texts)
    )
