"""The tables: one registry of collections, and per collection a narrow chunks table and a files table.

    megaservice_collections   name, embedding model, dimension, its tables: what a collection was built with
    chunks_<name>_<hash>      id, source, chunk_index, text, metadata jsonb, embedding vector(dimension),
                              tsv (generated full-text vector); HNSW (vector_cosine_ops), GIN on tsv and metadata
    files_<name>_<hash>       source, chunks, ingested_at, metadata: one row per stored file (and the lock
                              that serializes two replacements of the same file)

The embedding column is kept in the row (storage MAIN), not moved out to TOAST next to a long text,
so an exact scan reads no second relation. Everything is created with IF NOT EXISTS under an
advisory lock, so services starting together create it once.
"""

import hashlib
import re

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

from megaservice.components._store.types import Collection

__all__ = ["REGISTRY", "TEXT_SEARCH_CONFIG", "create_collection", "ensure_registry", "read_collection", "table_names"]

REGISTRY = "megaservice_collections"
TEXT_SEARCH_CONFIG = "english"
"""PostgreSQL's text search configuration of the full-text column (stemming, stop words)."""

_SETUP_LOCK = 0x6D656761  # pg_advisory_xact_lock key: schema changes, one service at a time
_SLUG = re.compile(r"[^a-z0-9_]+")


def table_names(collection: str) -> tuple[str, str]:
    """The chunks and files tables of `collection` (readable, unique by a hash, within PostgreSQL's 63 bytes)."""
    slug = _SLUG.sub("_", collection.lower()).strip("_")[:40] or "c"
    digest = hashlib.sha1(collection.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"chunks_{slug}_{digest}", f"files_{slug}_{digest}"


async def setup_lock(conn: AsyncConnection[TupleRow]) -> None:
    """Take the schema lock for the current transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))


async def ensure_registry(conn: AsyncConnection[TupleRow]) -> None:
    """Pgvector and the registry of collections, if missing (in the caller's transaction, under the lock)."""
    await setup_lock(conn)
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    await conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, model text NOT NULL, dimension int NOT NULL, "
            "chunks_table text NOT NULL, files_table text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        ).format(sql.Identifier(REGISTRY))
    )


async def read_collection(conn: AsyncConnection[TupleRow], name: str) -> Collection | None:
    """The registry's record of collection `name`, or `None`."""
    cur = await conn.execute(
        sql.SQL("SELECT name, model, dimension, chunks_table, files_table FROM {} WHERE name = %s").format(
            sql.Identifier(REGISTRY)
        ),
        (name,),
    )
    row = await cur.fetchone()
    return Collection(*row) if row is not None else None


async def create_collection(
    conn: AsyncConnection[TupleRow], name: str, model: str, dimension: int, *, m: int, ef_construction: int
) -> Collection:
    """Create collection `name`'s tables and indexes and record it (in the caller's transaction, under the lock)."""
    chunks, files = table_names(name)
    ident = sql.Identifier(chunks)
    await conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {chunks} ("
            " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " source text NOT NULL,"
            " chunk_index int NOT NULL,"
            " text text NOT NULL,"
            " metadata jsonb NOT NULL DEFAULT '{{}}',"
            " embedding vector({dim}) NOT NULL,"
            " tsv tsvector GENERATED ALWAYS AS (to_tsvector({config}, text)) STORED,"
            " UNIQUE (source, chunk_index))"
        ).format(chunks=ident, dim=sql.Literal(dimension), config=sql.Literal(TEXT_SEARCH_CONFIG))
    )
    await conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN embedding SET STORAGE MAIN").format(ident))
    await conn.execute(
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS {name} ON {chunks} USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = {m}, ef_construction = {efc})"
        ).format(
            name=sql.Identifier(f"{chunks}_hnsw"), chunks=ident, m=sql.Literal(m), efc=sql.Literal(ef_construction)
        )
    )
    await conn.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin (tsv)").format(sql.Identifier(f"{chunks}_tsv"), ident)
    )
    await conn.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin (metadata jsonb_path_ops)").format(
            sql.Identifier(f"{chunks}_meta"), ident
        )
    )
    await conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (source text PRIMARY KEY, chunks int NOT NULL, "
            "ingested_at timestamptz NOT NULL DEFAULT now(), metadata jsonb NOT NULL DEFAULT '{{}}')"
        ).format(sql.Identifier(files))
    )
    await conn.execute(
        sql.SQL(
            "INSERT INTO {} (name, model, dimension, chunks_table, files_table) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (name) DO NOTHING"
        ).format(sql.Identifier(REGISTRY)),
        (name, model, dimension, chunks, files),
    )
    return Collection(name, model, dimension, chunks, files)
