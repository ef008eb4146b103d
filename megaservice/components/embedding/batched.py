"""An in-process model as a backend: loaded in a worker thread, concurrent requests batched together.

    BatchedBackend("local", MiniLM(threads=2), max_batch=32)

The texts of concurrent requests go to the model together (`_shared.batching.Batcher`), at most
`max_batch` at a time, in one worker thread (`_shared.blocking.Worker`): the event loop never waits
for the model. Each batch's size and model time are recorded in the Prometheus histograms
`embedding_batch_size` and `embedding_batch_seconds` (label `backend`), on `/metrics`.
"""

import math
import threading
from typing import TYPE_CHECKING, Protocol

from megaservice.components._shared.batching import Batcher
from megaservice.components._shared.blocking import Loader, Worker
from megaservice.components.embedding.backend import Embedded
from megaservice.metrics import FastHistogram

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["BatchedBackend", "Encoder", "batch_histograms"]

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Encoder(Protocol):
    """A synchronous embedding model (`MiniLM`, a sentence-transformers model): called from one thread."""

    @property
    def model_id(self) -> str:
        """The model's name."""

    @property
    def dimension(self) -> int | None:
        """The vectors' length (`None` until a model named by the user is loaded)."""

    @property
    def max_input_length(self) -> int:
        """Most tokens of one text the model reads."""

    @property
    def dtype(self) -> str | None:
        """The weights' number type (`int8`, `float32`), as TEI's `/info` names it; `None` when not known."""

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""

    def load(self) -> None:
        """Read the model (blocking)."""

    def encode(self, texts: list[str], *, normalize: bool = True) -> "tuple[npt.NDArray[np.float32], list[int]]":
        """The vectors of `texts` and the tokens each one read."""


_histograms: tuple[FastHistogram, FastHistogram] | None = None
_lock = threading.Lock()


def batch_histograms() -> tuple[FastHistogram, FastHistogram]:
    """The process's `embedding_batch_size` and `embedding_batch_seconds` histograms (made on first use)."""
    global _histograms
    if _histograms is None:
        with _lock:
            if _histograms is None:
                _histograms = (
                    FastHistogram(
                        "embedding_batch_size",
                        "Texts the in-process embedding model embedded in one call (concurrent requests share calls).",
                        ("backend",),
                        buckets=_SIZE_BUCKETS,
                    ),
                    FastHistogram(
                        "embedding_batch_seconds",
                        "Seconds the in-process embedding model took for one batch.",
                        ("backend",),
                        buckets=_SECONDS_BUCKETS,
                    ),
                )
    return _histograms


class BatchedBackend:
    """An `EmbeddingBackend` over a synchronous `Encoder`: one worker thread, dynamic batching, bounded queue.

    **Parameters:**

    * **name** - the backend's name (the `backend` label of the batch histograms).
    * **encoder** - the model.
    * **max_batch** - most texts per model call.
    * **max_pending** - most texts waiting for the model; past it a request is refused at once (503).
    """

    def __init__(self, name: str, encoder: Encoder, *, max_batch: int = 32, max_pending: int = 4096) -> None:
        self.name = name
        self._encoder = encoder
        self._worker = Worker(threads=1)
        sizes, seconds = batch_histograms()
        self._sizes = sizes.labels(name)
        self._seconds = seconds.labels(name)
        self._batcher: Batcher[str, tuple[npt.NDArray[np.float32], int]] = Batcher(
            self._run, self._worker, max_batch=max_batch, max_pending=max_pending, on_batch=self._observe
        )
        self._loading = Loader(self._worker, encoder.load, lambda: encoder.loaded)

    @property
    def model_id(self) -> str:
        """The model's name."""
        return self._encoder.model_id

    @property
    def max_batch(self) -> int:
        """Most texts per model call."""
        return self._batcher.max_batch

    @property
    def dimension(self) -> int | None:
        """The vectors' length (`None` until a user-named model is loaded)."""
        return self._encoder.dimension

    @property
    def max_input_length(self) -> int:
        """Most tokens of one text the model reads."""
        return self._encoder.max_input_length

    @property
    def model_dtype(self) -> str | None:
        """The model's number type (`int8` for the packaged MiniLM); `None` when not known."""
        return self._encoder.dtype

    async def start(self) -> None:
        """Load the model in the worker thread; a failure is kept and reported by `ready()`."""
        await self._loading.start()

    async def ready(self) -> bool:
        """Whether the model is loaded (raises what stopped it from loading: `/v1/ready` shows it)."""
        return self._loading.ready()

    async def embed(self, texts: list[str], model: str | None = None) -> Embedded:
        """The raw (unnormalised) vectors of `texts`, computed with the texts of concurrent requests."""
        import numpy as np

        rows = await self._batcher.submit(texts)
        vectors = np.stack([vector for vector, _ in rows])
        return Embedded(vectors, sum(tokens for _, tokens in rows))

    def _run(self, texts: list[str]) -> "list[tuple[npt.NDArray[np.float32], int]]":
        vectors, tokens = self._encoder.encode(texts, normalize=False)
        return list(zip(vectors, tokens, strict=True))

    def _observe(self, size: int, seconds: float) -> None:
        self._sizes.observe(size)
        if math.isfinite(seconds):
            self._seconds.observe(seconds)

    async def aclose(self) -> None:
        """Stop batching (waiting requests are cancelled)."""
        await self._batcher.aclose()
