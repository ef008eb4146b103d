"""The embedding service (`megaservice serve embedding`, port 6000): OPEA's `/v1/embeddings` and TEI's routes.

    from megaservice.components.embedding import EmbeddingSettings, create_service

    create_service(EmbeddingSettings.from_env({"EMBEDDING_BACKEND": "tei"})).start()

Backends: `local` (the packaged all-MiniLM-L6-v2, int8 ONNX, batched in process; the default), `tei`,
`openai`, `sentence-transformers`, `clip` (`backend`). docs/components/embedding.md says more.
"""

from megaservice.components.embedding.backend import EmbeddingBackend, EmbeddingSettings, load_backend
from megaservice.components.embedding.service import create_service

__all__ = ["SETTINGS", "EmbeddingBackend", "EmbeddingSettings", "create_service", "load_backend"]

SETTINGS = EmbeddingSettings
"""The settings class the runner reads (`SETTINGS.from_env()`)."""
