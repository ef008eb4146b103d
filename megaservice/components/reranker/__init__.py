"""The reranking service (`megaservice serve reranker`, port 8000): OPEA's `/v1/reranking` and TEI's `/rerank`.

    from megaservice.components.reranker import RerankerSettings, create_service

    create_service(RerankerSettings.from_env({"RERANK_BACKEND": "tei"})).start()

Backends: `embedding` (the default: rescoring by the packaged all-MiniLM-L6-v2, in process or through
an embedding service), `tei`, `cross-encoder` (`RERANK_BACKEND`). docs/components/reranker.md says more,
and what the default is worth.
"""

from megaservice.components.reranker.backend import RerankerBackend, RerankerSettings, load_backend
from megaservice.components.reranker.service import create_service

__all__ = ["SETTINGS", "RerankerBackend", "RerankerSettings", "create_service", "load_backend"]

SETTINGS = RerankerSettings
"""The settings class the runner reads (`SETTINGS.from_env()`)."""
