"""`Store`: the chunks of files, their vectors and full text, in a PostgreSQL with pgvector.

    store = await Store.open(StoreSettings.from_env(), model="all-MiniLM-L6-v2", dimension=384)
    await store.replace_file("guide.pdf", chunks, vectors)         # one transaction
    hits = await store.search(vector, k=4, search_type="hybrid", text="how to install")
    await store.aclose()

A store is opened with the embedding model and dimension of its caller. The collection records
the model and dimension it was built with; opening it with others raises `ModelMismatch` naming
both. A reader may open with neither (it learns them from the collection, once one was written).
Connections come from a pool (psycopg_pool) of autocommit connections; one that broke (PostgreSQL
restarted) is replaced and a search is tried once more, so the services recover on their own.
While PostgreSQL cannot be reached every call raises `StoreUnavailable` (503 naming the database),
after at most `PG_POOL_TIMEOUT` seconds; the pool tries to connect every 0.5 s (`pool.RECONNECT_DELAY`),
so calls succeed again within about that once PostgreSQL answers. With no `PG_CONNECTION_STRING`
the store joins the embedded PostgreSQL of the data directory, or starts it
(`megaservice.components.postgres.embedded`).
"""

import asyncio
import logging
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Self, TypeVar

import numpy as np
import numpy.typing as npt
import orjson
import psycopg
import psycopg.errors
from pgvector.psycopg import register_vector_async
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb, set_json_loads
from psycopg_pool import PoolClosed, PoolTimeout, TooManyRequests

from megaservice.components._store import queries, schema
from megaservice.components._store.checks import (
    MAX_K,
    check_chunks,
    check_dimension,
    matrix_of,
    query_vector,
)
from megaservice.components._store.errors import DATABASE_NODE, ModelMismatch, StoreUnavailable
from megaservice.components._store.filters import filter_condition
from megaservice.components._store.plan import SearchPlan
from megaservice.components._store.pool import Pool
from megaservice.components._store.settings import StoreSettings, shown_dsn
from megaservice.components._store.types import Chunk, Collection, FileInfo, Hit
from megaservice.exceptions import InputError, UpstreamTimeout

__all__ = ["MAX_K", "Store"]

logger = logging.getLogger("megaservice.store")

_COMMON_TTL = 60.0  # seconds the common words of hybrid search are kept

_T = TypeVar("_T")
_Conn = AsyncConnection[TupleRow]
_BROKEN = (psycopg.OperationalError, psycopg.InterfaceError)
_POOL_ERRORS = (PoolTimeout, PoolClosed, TooManyRequests)  # OperationalErrors too, but no connection broke


class Store:
    """One collection of chunks in PostgreSQL (see the module docstring). Safe to share between tasks."""

    def __init__(
        self, settings: StoreSettings | None = None, *, model: str | None = None, dimension: int | None = None
    ) -> None:
        self.settings = settings if settings is not None else StoreSettings()
        self.model = model
        self.dimension = dimension
        self._collection: Collection | None = None
        self._pool: Pool | None = None
        self._lease: Any = None  # the embedded server's lease, while this store uses it
        self._location = shown_dsn(self.settings.connection) if self.settings.connection else "(embedded)"
        self._lock = asyncio.Lock()
        self._common: tuple[float, list[str]] | None = None

    @classmethod
    async def open(
        cls, settings: StoreSettings | None = None, *, model: str | None = None, dimension: int | None = None
    ) -> Self:
        """A store, connected (see `connect()`)."""
        store = cls(settings, model=model, dimension=dimension)
        try:
            await store.connect()
        except BaseException:
            await store.aclose()
            raise
        return store

    # -- connecting -------------------------------------------------------------------------------

    @property
    def location(self) -> str:
        """Where the database is, as errors name it (no password)."""
        return self._location

    @property
    def collection(self) -> Collection | None:
        """The collection's record (model, dimension, tables), once it exists."""
        return self._collection

    @property
    def pool(self) -> Pool:
        """The connection pool (connections with pgvector's types, autocommit, `hnsw.ef_search` set)."""
        if self._pool is None:
            raise RuntimeError("the store is not connected: await store.connect() first")
        return self._pool

    async def connect(self) -> None:
        """Join (or start) the database, create what is missing, check the model; again only if it failed.

        Raises:
            StoreUnavailable: the database cannot be reached (or the embedded one did not start).
            ModelMismatch: the collection was built with another model or dimension.
        """
        async with self._lock:
            if self._pool is not None:
                return
            conninfo = await self._conninfo()
            try:
                async with await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True, connect_timeout=max(2, round(self.settings.pool_timeout))
                ) as conn:
                    self._collection = await self._setup(conn)
            except _BROKEN as exc:
                raise StoreUnavailable(_reason(exc), url=self._location) from exc
            self._pool = Pool(
                conninfo,
                min_size=self.settings.pool_min,
                max_size=max(self.settings.pool_max, self.settings.pool_min),
                kwargs={"autocommit": True},
                configure=self._configure,
                timeout=self.settings.pool_timeout,
                name=f"store-{self.settings.collection}",
                open=False,
            )
            await self._pool.open(wait=False)

    async def _conninfo(self) -> str:
        if self.settings.connection:
            return self.settings.connection
        if self._lease is None:
            from megaservice.components.postgres.embedded import EmbeddedUnavailable, join_or_start

            data_dir = self.settings.storage_dir()
            try:
                self._lease = await asyncio.to_thread(
                    join_or_start, data_dir, self.settings.start_timeout, self.settings.idle_stop
                )
            except EmbeddedUnavailable as exc:
                raise StoreUnavailable(str(exc), url=str(exc.location)) from exc
            except (OSError, subprocess.SubprocessError) as exc:  # the data directory, or starting its owner
                raise StoreUnavailable(
                    f"the embedded PostgreSQL of {data_dir} could not be started: {exc}", url=str(data_dir)
                ) from exc
            self._location = self._lease.location
        return str(self._lease.conninfo)

    async def _setup(self, conn: _Conn) -> Collection | None:
        async with conn.transaction():
            await schema.ensure_registry(conn)
            found = await schema.read_collection(conn, self.settings.collection)
            if found is None and self.model is not None and self.dimension is not None:
                found = await schema.create_collection(
                    conn,
                    self.settings.collection,
                    self.model,
                    self.dimension,
                    m=self.settings.hnsw_m,
                    ef_construction=self.settings.hnsw_ef_construction,
                )
        if found is not None:
            self._check(found)
        return found

    def _check(self, found: Collection) -> None:
        if (self.model is not None and found.model != self.model) or (
            self.dimension is not None and found.dimension != self.dimension
        ):
            raise ModelMismatch(
                found.name,
                stored_model=found.model,
                stored_dimension=found.dimension,
                model=self.model,
                dimension=self.dimension,
            )

    async def _configure(self, conn: _Conn) -> None:
        await register_vector_async(conn)
        set_json_loads(orjson.loads, conn)  # the metadata of each row: orjson is several times the stdlib's speed
        await conn.execute(
            "SELECT set_config('hnsw.ef_search', %s, false), set_config('statement_timeout', %s, false),"
            " set_config('jit', 'off', false)",
            (str(self.settings.ef_search), str(round(self.settings.query_timeout * 1000))),
        )

    @asynccontextmanager
    async def _connection(self, timeout: float | None = None, *, waited: float = 0.0) -> AsyncIterator[_Conn]:
        """A pooled connection; database failures become `StoreUnavailable` (or `UpstreamTimeout`).

        It waits at most `timeout` (`PG_POOL_TIMEOUT`) less `waited`, the seconds already spent waiting for one.
        """
        await self.connect()
        limit = timeout or self.settings.pool_timeout
        try:
            async with self.pool.connection(timeout=max(limit - waited, 0.001)) as conn:
                yield conn
        except PoolTimeout as exc:
            raise StoreUnavailable(f"no connection within {limit:g} s", url=self._location) from exc
        except psycopg.errors.QueryCanceled as exc:
            raise UpstreamTimeout(
                f"the database (PostgreSQL) did not answer within {self.settings.query_timeout:g} s",
                node=DATABASE_NODE,
                url=self._location,
            ) from exc
        except _BROKEN as exc:
            raise StoreUnavailable(_reason(exc), url=self._location) from exc

    async def _retrying(self, work: Callable[[_Conn], Awaitable[_T]]) -> _T:
        """`work` on a connection; once more on a fresh one if the first was broken (PostgreSQL restarted).

        `work` is one read, or one transaction that may run twice (a transaction cut by a broken
        connection did not commit, or committed what the second run commits again). Waiting for the
        two connections takes at most `PG_POOL_TIMEOUT` in all; no connection in that time is not retried.
        """
        start = time.monotonic()
        waited = 0.0
        try:
            async with self._connection() as conn:
                waited = time.monotonic() - start
                return await work(conn)
        except StoreUnavailable as exc:
            if not isinstance(exc.__cause__, _BROKEN) or isinstance(exc.__cause__, _POOL_ERRORS):
                raise
            await self.pool.check()  # drop every idle connection that broke with it
        async with self._connection(waited=waited) as conn:
            return await work(conn)

    async def _known_collection(self, conn: _Conn | None = None) -> Collection | None:
        """The collection's record, read again while it does not exist yet (a reader waiting for a writer)."""
        if self._collection is None:
            if conn is None:
                async with self._connection() as fresh:
                    found = await schema.read_collection(fresh, self.settings.collection)
            else:
                found = await schema.read_collection(conn, self.settings.collection)
            if found is not None:
                self._check(found)
                self._collection = found
        return self._collection

    async def find_collection(self, name: str) -> Collection | None:
        """The record of collection `name` (any collection of this store's database), or `None` if it does not exist.

        Reads the registry only: a service asks this before it opens a store for a collection a request
        names, so that reading or deleting from one that does not exist creates nothing.
        """

        async def work(conn: _Conn) -> Collection | None:
            return await schema.read_collection(conn, name)

        return await self._retrying(work)

    async def _common_words(self, conn: _Conn, collection: Collection) -> list[str]:
        """The words hybrid search leaves out (in over 1 % of the chunks), from PostgreSQL's statistics.

        Read again after a minute: autovacuum's ANALYZE renews them as the collection grows.
        """
        now = time.monotonic()
        if self._common is None or now - self._common[0] > _COMMON_TTL:
            cur = await conn.execute(queries.COMMON_WORDS, (collection.chunks_table, queries.COMMON_SHARE))
            row = await cur.fetchone()
            self._common = (now, list(row[0]) if row else [])
        return self._common[1]

    async def ready(self) -> bool:
        """Whether the database answers (for `/v1/ready`).

        Raises:
            ModelMismatch: the collection was built with another model: this store will never be ready.
        """
        try:
            async with self._connection(timeout=1.0) as conn:
                await conn.execute("SELECT 1")
                await self._known_collection(conn)
        except (StoreUnavailable, UpstreamTimeout):
            return False
        return True

    async def aclose(self) -> None:
        """Close the pool and leave the embedded server (which stops once no service uses it)."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._lease is not None:
            await asyncio.to_thread(self._lease.release)
            self._lease = None

    # -- writing ------------------------------------------------------------------------------------

    async def replace_file(
        self,
        source: str,
        chunks: Sequence[Chunk],
        vectors: Sequence[Sequence[float]] | npt.NDArray[np.floating[Any]],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Store file `source` as `chunks` (one vector each), replacing what it had, in one transaction.

        Concurrent replacements of one file are serialized (one copy remains); a failure leaves the
        file as it was. Returns the number of chunks stored.

        Raises:
            InputError: no chunks, a vector of the wrong dimension or with NaN, duplicate chunk indexes.
        """
        matrix = matrix_of(vectors)
        check_chunks(source, chunks, matrix)
        file_metadata = dict(metadata or {})

        async def work(conn: _Conn) -> int:
            collection = await self._writable(conn, matrix.shape[1])
            check_dimension(collection, matrix.shape[1], "the vectors have")
            try:
                async with conn.transaction():
                    await _no_time_limit(conn)
                    await self._replace(conn, collection, source, chunks, matrix, file_metadata)
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                raise InputError(f"{source}: the database refused the chunks: {_reason(exc)}") from exc
            return len(chunks)

        return await self._retrying(work)  # the same transaction again: replacing a file twice is one copy

    async def _writable(self, conn: _Conn, dimension: int) -> Collection:
        found = await self._known_collection(conn)
        if found is not None:
            return found
        if self.model is None:
            raise InputError(
                f"collection {self.settings.collection!r} does not exist and this store was opened without an "
                f"embedding model: open it with model= to create it"
            )
        async with conn.transaction():
            await schema.setup_lock(conn)
            found = await schema.read_collection(conn, self.settings.collection)
            if found is None:
                found = await schema.create_collection(
                    conn,
                    self.settings.collection,
                    self.model,
                    self.dimension or dimension,
                    m=self.settings.hnsw_m,
                    ef_construction=self.settings.hnsw_ef_construction,
                )
        self._check(found)
        self._collection = found
        return found

    @staticmethod
    async def _replace(
        conn: _Conn,
        collection: Collection,
        source: str,
        chunks: Sequence[Chunk],
        matrix: "npt.NDArray[np.float32]",
        metadata: dict[str, Any],
    ) -> None:
        files, table = sql.Identifier(collection.files_table), sql.Identifier(collection.chunks_table)
        # the file's row is the lock: a second replacement of the same file waits here until this one commits
        await conn.execute(
            sql.SQL(
                "INSERT INTO {} (source, chunks, metadata) VALUES (%s, %s, %s) ON CONFLICT (source) DO UPDATE"
                " SET chunks = EXCLUDED.chunks, metadata = EXCLUDED.metadata, ingested_at = now()"
            ).format(files),
            (source, len(chunks), Jsonb(metadata)),
        )
        await conn.execute(sql.SQL("DELETE FROM {} WHERE source = %s").format(table), (source,))
        copy_sql = sql.SQL("COPY {} (source, chunk_index, text, metadata, embedding) FROM STDIN (FORMAT BINARY)")
        async with conn.cursor().copy(copy_sql.format(table)) as copy:
            copy.set_types(["text", "int4", "text", "jsonb", "vector"])
            for chunk, vector in zip(chunks, matrix, strict=True):
                meta = {**chunk.metadata, "source": source, "chunk_index": chunk.index}
                await copy.write_row((source, chunk.index, chunk.text.replace("\x00", ""), meta, vector))

    async def delete(self, source: str | None) -> int:
        """Remove file `source`, or every file (`None`), in one transaction; the number of chunks removed."""

        async def work(conn: _Conn) -> int:
            collection = await self._known_collection(conn)
            if collection is None:
                return 0
            files, table = sql.Identifier(collection.files_table), sql.Identifier(collection.chunks_table)
            async with conn.transaction():
                await _no_time_limit(conn)
                if source is None:
                    await conn.execute(sql.SQL("DELETE FROM {}").format(files))
                    cur = await conn.execute(sql.SQL("DELETE FROM {}").format(table))
                else:
                    await conn.execute(sql.SQL("DELETE FROM {} WHERE source = %s").format(files), (source,))
                    cur = await conn.execute(sql.SQL("DELETE FROM {} WHERE source = %s").format(table), (source,))
            return max(cur.rowcount, 0)

        return await self._retrying(work)

    # -- reading --------------------------------------------------------------------------------------

    async def files(self) -> list[FileInfo]:
        """The stored files, by name."""

        async def work(conn: _Conn) -> list[FileInfo]:
            collection = await self._known_collection(conn)
            if collection is None:
                return []
            cur = await conn.execute(
                sql.SQL("SELECT source, chunks, ingested_at, metadata FROM {} ORDER BY source").format(
                    sql.Identifier(collection.files_table)
                )
            )
            return [FileInfo(*row) for row in await cur.fetchall()]

        return await self._retrying(work)

    async def count(self) -> int:
        """How many chunks the collection holds."""

        async def work(conn: _Conn) -> int:
            collection = await self._known_collection(conn)
            if collection is None:
                return 0
            cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(collection.chunks_table)))
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        return await self._retrying(work)

    async def search(
        self,
        vector: Sequence[float] | npt.NDArray[np.floating[Any]],
        *,
        k: int = 4,
        search_type: str = "similarity",
        text: str | None = None,
        distance_threshold: float | None = None,
        score_threshold: float | None = None,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """The chunks that match best, best first (`search_type`: see `SEARCH_TYPES` and the retriever's docs).

        Raises:
            InputError: an unknown search type, `k` or `fetch_k` out of 1..MAX_K, a vector of the wrong
                dimension, no text for `hybrid`, no `distance_threshold` for `similarity_distance_threshold`,
                a bad filter.
        """
        q = query_vector(vector)
        plan = SearchPlan.make(search_type, k, text, distance_threshold, score_threshold, fetch_k, lambda_mult)
        condition, values = filter_condition(filters) if filters else (None, {})

        async def work(conn: _Conn) -> list[Hit]:
            collection = await self._known_collection(conn)
            if collection is None:
                return []  # nothing was ever stored in this collection
            check_dimension(collection, len(q), "the query vector has")
            extra = {"common": await self._common_words(conn, collection)} if plan.search_type == "hybrid" else {}
            statement, args = plan.statement(collection.chunks_table, condition, q, {**values, **extra})
            if condition is None and plan.candidates <= self.settings.ef_search:
                cur = await conn.execute(statement, args, binary=plan.binary)
                rows = await cur.fetchall()
            else:
                async with conn.transaction():
                    ef = max(self.settings.ef_search, plan.candidates)
                    await conn.execute(
                        "SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', %s, true)",
                        (str(ef), "relaxed_order" if condition is not None else "off"),
                    )
                    cur = await conn.execute(statement, args, binary=plan.binary)
                    rows = await cur.fetchall()
            return plan.hits(rows, q)

        try:
            return await self._retrying(work)
        except psycopg.DataError as exc:
            raise InputError(f"the database refused the search: {_reason(exc)}") from exc


async def _no_time_limit(conn: _Conn) -> None:
    """No `statement_timeout` for this transaction's writes (a large file may take long into the HNSW index)."""
    await conn.execute("SELECT set_config('statement_timeout', '0', true)")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
