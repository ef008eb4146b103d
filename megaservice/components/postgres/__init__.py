"""The embedded PostgreSQL (with pgvector) of the retriever and dataprep: `megaservice serve postgres`.

    megaservice serve postgres              runs it until stopped (its data in $MEGASERVICE_DATA_DIR/postgres)
    join_or_start(data_dir)                 what a service with no PG_CONNECTION_STRING does (embedded.py)

The server listens on a Unix socket in its data directory only. See owner.py for who runs it and
when it stops, cluster.py for its files.
"""

from megaservice.components.postgres.backend import PostgresSettings
from megaservice.components.postgres.embedded import (
    EmbeddedUnavailable,
    Lease,
    accepting_connections,
    is_ready,
    join_or_start,
    wait_ready,
)
from megaservice.components.postgres.service import create_service

__all__ = [
    "SETTINGS",
    "EmbeddedUnavailable",
    "Lease",
    "PostgresSettings",
    "accepting_connections",
    "create_service",
    "is_ready",
    "join_or_start",
    "wait_ready",
]

SETTINGS = PostgresSettings
"""The settings class the runner reads from the environment."""
