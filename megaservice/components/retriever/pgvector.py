"""The retriever's pgvector backend: searches over `Store`, connecting in the background at startup.

Until the first connection succeeds, searches are answered 503 naming the database (and `/v1/ready`
is 503); afterwards the store's pool reconnects by itself when PostgreSQL restarts. A collection
built with another embedding model than `RETRIEVER_EMBEDDING_MODEL` makes every search a 409 naming
both, and `/v1/ready` a 503 with the same reason. A request's `index_name` (OPEA's) searches that
collection instead of `COLLECTION_NAME`: one store per collection, at most `RETRIEVER_MAX_COLLECTIONS`.
A collection that does not exist is searched as an empty one: it takes none of those stores, and
nothing is created (only dataprep's ingest creates a collection).
"""

import asyncio
import dataclasses
import logging
from typing import Any

from megaservice.components._store import ModelMismatch, Store, StoreUnavailable
from megaservice.components._store.settings import StoreSettings, collection_name
from megaservice.components._store.types import Hit
from megaservice.components.retriever.backend import RetrieverSettings, Search
from megaservice.exceptions import InputError

__all__ = ["PgvectorBackend"]

logger = logging.getLogger("megaservice.retriever")

_RETRY = 2.0  # seconds between connection attempts while the database is down at startup


class PgvectorBackend:
    """Searches one or more collections of a PostgreSQL with pgvector."""

    name = "pgvector"

    def __init__(self, settings: RetrieverSettings, *, store: Store | None = None) -> None:
        self.settings = settings
        self.store_settings = settings.store_settings()
        self.store = store if store is not None else Store(self.store_settings, model=settings.model)
        self._others: dict[str, Store] = {}
        self._connected = asyncio.Event()
        self._problem: Exception | None = StoreUnavailable("connecting", url=self.store.location)

    async def start(self) -> None:
        """Connect, retrying every 2 s while the database is down; stop on a model mismatch."""
        while True:
            try:
                await self.store.connect()
            except StoreUnavailable as exc:
                if str(exc) != str(self._problem):
                    logger.warning("%s; retrying every %g s", exc, _RETRY)
                self._problem = exc
                await asyncio.sleep(_RETRY)
                continue
            except ModelMismatch as exc:
                self._problem = exc
                break
            except Exception as exc:  # anything else: say it, stay unready, try again
                logger.exception("connecting to %s failed; retrying every %g s", self.store.location, _RETRY)
                self._problem = StoreUnavailable(f"{type(exc).__name__}: {exc}", url=self.store.location)
                await asyncio.sleep(_RETRY)
                continue
            self._problem = None
            self._connected.set()
            logger.info("connected to %s, collection %r", self.store.location, self.store_settings.collection)
            return
        logger.error("%s", self._problem)

    def _check(self) -> None:
        if self._problem is not None:
            raise self._problem

    async def ready(self) -> bool:
        """Connected, the database answers, and the collection (if any yet) was built with our model."""
        self._check()
        return await self.store.ready()

    async def search(self, search: Search) -> list[Hit]:
        """The store's search with the request's options."""
        self._check()
        store = await self._store(search.collection)
        if store is None:
            return []  # a collection that does not exist holds no documents
        return await store.search(
            search.vector,
            k=search.k,
            search_type=search.search_type,
            text=search.text,
            distance_threshold=search.distance_threshold,
            score_threshold=search.score_threshold,
            fetch_k=search.fetch_k,
            lambda_mult=search.lambda_mult,
            filters=search.filters,
        )

    async def _store(self, collection: str | None) -> Store | None:
        """The store of `collection` (`None`: the default), or `None` when no such collection exists."""
        if collection is None or collection == self.store_settings.collection:
            return self.store
        store = self._others.get(collection)
        if store is None:
            try:
                collection_name(collection)
            except ValueError as exc:
                raise InputError(
                    f"index_name {collection!r} is not a collection name: {exc}", status_code=422
                ) from None
            if await self.store.find_collection(collection) is None:
                return None  # searched as empty, holding none of the RETRIEVER_MAX_COLLECTIONS stores
            store = self._open(collection)
        await store.connect()
        return store

    def _open(self, collection: str) -> Store:
        """The store of an existing collection, made on first use (at most `RETRIEVER_MAX_COLLECTIONS` in all)."""
        store = self._others.get(collection)  # made by a concurrent search meanwhile
        if store is None:
            if len(self._others) + 1 >= self.settings.max_collections:
                raise InputError(
                    f"index_name {collection!r}: this retriever searches at most {self.settings.max_collections} "
                    f"collections (RETRIEVER_MAX_COLLECTIONS)",
                    status_code=422,
                )
            settings: StoreSettings = dataclasses.replace(self.store_settings, collection=collection, pool_min=0)
            store = self._others[collection] = Store(settings, model=self.settings.model)
        return store

    async def aclose(self) -> None:
        """Close every store's pool."""
        stores: list[Any] = [self.store, *self._others.values()]
        self._others.clear()
        await asyncio.gather(*(store.aclose() for store in stores), return_exceptions=True)
