"""The dataprep service (`megaservice serve dataprep`, port 5000): OPEA's `/v1/dataprep/ingest`, `/get`, `/delete`.

    from megaservice.components.dataprep import DataprepSettings, create_service

    create_service(DataprepSettings.from_env({"TEI_EMBEDDING_ENDPOINT": "http://embedding:6000"})).start()

Files (txt, md, html, pdf, docx, csv, json, jsonl) and links are read, cut into chunks, embedded
(by the embedding service, or the packaged model in process) and stored in the pgvector collection
the retriever reads. docs/components/dataprep.md says more.
"""

from megaservice.components.dataprep.backend import DataprepBackend, DataprepSettings, load_backend
from megaservice.components.dataprep.service import create_service

__all__ = ["SETTINGS", "DataprepBackend", "DataprepSettings", "create_service", "load_backend"]

SETTINGS = DataprepSettings
"""The settings class the runner reads (`SETTINGS.from_env()`)."""
