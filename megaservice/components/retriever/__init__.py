"""The retriever service (`megaservice serve retriever`, port 7000): OPEA's `/v1/retrieval` over pgvector.

    from megaservice.components.retriever import RetrieverSettings, create_service

    create_service(RetrieverSettings.from_env()).start()

It searches the collection dataprep writes (`COLLECTION_NAME`, one default for both) in the
PostgreSQL of `PG_CONNECTION_STRING`, or in the embedded one (joined, or started). Search types
`similarity`, `similarity_distance_threshold`, `similarity_score_threshold`, `mmr` and `hybrid`
(full text and vectors fused by reciprocal rank), with metadata filters. docs/components/retriever.md.
"""

from megaservice.components.retriever.backend import RetrieverBackend, RetrieverSettings, Search, load_backend
from megaservice.components.retriever.service import create_service

__all__ = ["SETTINGS", "RetrieverBackend", "RetrieverSettings", "Search", "create_service", "load_backend"]

SETTINGS = RetrieverSettings
"""The settings class the runner reads (`SETTINGS.from_env()`)."""
