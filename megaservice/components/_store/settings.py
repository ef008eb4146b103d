"""Where the store's PostgreSQL is and how it is used: `StoreSettings`, read from the environment.

PG_CONNECTION_STRING    any PostgreSQL with pgvector (OPEA's variable; `postgresql+psycopg2://` accepted);
                        unset: the embedded PostgreSQL in `$MEGASERVICE_DATA_DIR/postgres`
COLLECTION_NAME         the collection retriever and dataprep share (OPEA's `PG_INDEX_NAME` and
                        `INDEX_NAME` are read when it is unset); default `rag_pgvector`
"""

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

from megaservice.settings import EnvSettings, StorageSettings, variable

__all__ = ["DEFAULT_COLLECTION", "EF_SEARCH", "StoreSettings", "collection_name", "normalize_dsn", "shown_dsn"]

DEFAULT_COLLECTION = "rag_pgvector"
"""The collection retriever and dataprep use unless told otherwise (OPEA's retriever's default index name)."""

EF_SEARCH = 100
"""`hnsw.ef_search` by default: recall@10 0.986 on MiniLM embeddings of 10k chunks, 0.978 of 50k
(docs/components/retriever.md; pgvector's own default, 40, gave 0.964 at 10k)."""

_COLLECTION = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_DRIVER = re.compile(r"^(postgres|postgresql)(\+[a-z0-9_]+)?://", re.IGNORECASE)


def normalize_dsn(dsn: str) -> str:
    """A libpq connection string: SQLAlchemy's `postgresql+psycopg2://` (OPEA's form) becomes `postgresql://`.

    `key=value` strings pass unchanged. Raises `ValueError` for a URL of another scheme.
    """
    dsn = dsn.strip()
    match = _DRIVER.match(dsn)
    if match:
        return "postgresql://" + dsn[match.end() :]
    if "://" in dsn:
        raise ValueError(f"a postgresql:// URL or libpq key=value string, not a {dsn.split('://', 1)[0]}:// URL")
    return dsn


def shown_dsn(dsn: str) -> str:
    """`dsn` with its password hidden, for messages and logs."""
    if "://" not in dsn:
        return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", dsn)
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def collection_name(text: str) -> str:
    """`text` if it can name a collection, else `ValueError` saying what can."""
    if not _COLLECTION.match(text):
        raise ValueError("letters, digits, _ . : - (at most 100)")
    return text


@dataclass(frozen=True, slots=True)
class StoreSettings(EnvSettings):
    """The PostgreSQL the retriever and dataprep share, and how they use it."""

    connection: str | None = variable(
        "PG_CONNECTION_STRING",
        None,
        parse=normalize_dsn,
        expected="a postgresql:// URL (OPEA's postgresql+psycopg2:// is accepted) or a libpq key=value string",
        secret=True,
        help="The PostgreSQL (with pgvector) of the retriever and dataprep. Unset: the embedded PostgreSQL in "
        "`$MEGASERVICE_DATA_DIR/postgres`, joined if it runs (`megaservice serve postgres`), else started.",
    )
    collection: str = variable(
        "COLLECTION_NAME",
        DEFAULT_COLLECTION,
        aliases=("PG_INDEX_NAME", "INDEX_NAME"),
        parse=collection_name,
        expected="a name of letters, digits, _ . : - (at most 100)",
        help="The collection retriever and dataprep share (one default for both, unlike OPEA's two); OPEA's "
        "`PG_INDEX_NAME` (retriever) and `INDEX_NAME` (dataprep) are read when it is unset.",
    )
    pool_min: int = variable("PG_POOL_MIN", 1, minimum=0, help="Connections each service keeps open.")
    pool_max: int = variable("PG_POOL_MAX", 10, minimum=1, help="Most connections each service opens.")
    pool_timeout: float = variable(
        "PG_POOL_TIMEOUT",
        5.0,
        minimum=0.01,
        help="Seconds a request waits for a connection; then it is answered 503 naming the database.",
    )
    query_timeout: float = variable(
        "PG_QUERY_TIMEOUT", 30.0, minimum=0.01, help="Seconds one statement may run (PostgreSQL's statement_timeout)."
    )
    ef_search: int = variable(
        "PG_HNSW_EF_SEARCH",
        EF_SEARCH,
        minimum=1,
        help="pgvector's `hnsw.ef_search`: candidates the HNSW index search keeps (recall against speed; 100 "
        "gave recall@10 of 0.986 on MiniLM embeddings of 10k chunks, 0.978 of 50k: docs/components/retriever.md).",
    )
    hnsw_m: int = variable("PG_HNSW_M", 16, minimum=2, help="The HNSW index's `m` (links per node), at creation.")
    hnsw_ef_construction: int = variable(
        "PG_HNSW_EF_CONSTRUCTION", 64, minimum=4, help="The HNSW index's `ef_construction`, at creation."
    )
    start_timeout: float = variable(
        "PG_START_TIMEOUT",
        60.0,
        minimum=1,
        help="Seconds to wait for the embedded PostgreSQL to start (or for a started one to answer).",
    )
    idle_stop: float = variable(
        "PG_EMBEDDED_IDLE_STOP",
        30.0,
        minimum=0.1,
        help="Seconds an embedded PostgreSQL that a service started (none was running) runs on after the last "
        "service using it stopped; one run by `megaservice serve postgres` runs until that stops.",
    )
    data_dir: Path | None = None
    """The data directory of the embedded PostgreSQL's folder (`$MEGASERVICE_DATA_DIR`, `StorageSettings`)."""

    @classmethod
    def from_env(cls, environ: Any = None, *, prefix: str | None = None, base: Self | None = None) -> Self:
        """The settings the environment gives, with the data directory of `StorageSettings`."""
        read = EnvSettings.from_env.__func__  # type: ignore[attr-defined]  # slots dataclass: no zero-argument super()
        settings: Self = read(cls, environ, prefix=prefix, base=base)
        if settings.data_dir is None:
            settings = replace(settings, data_dir=StorageSettings.from_env(environ).data_dir)
        return settings

    def storage_dir(self) -> Path:
        """`data_dir`, or `StorageSettings`' default."""
        return self.data_dir if self.data_dir is not None else StorageSettings().data_dir
