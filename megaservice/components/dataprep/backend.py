"""What the dataprep service runs: its settings, where chunks go (the backend protocol), and `load_backend()`.

    pgvector    the collection the retriever reads (`megaservice.components._store`): any PostgreSQL with
                pgvector (`PG_CONNECTION_STRING`), else the embedded one; the only backend

OPEA's component name `OPEA_DATAPREP_PGVECTOR` (`DATAPREP_COMPONENT_NAME`) selects it too. What
embeds the chunks is set apart (`embedder`): the embedding service when `TEI_EMBEDDING_ENDPOINT` or
`EMBEDDING_ENDPOINT` is set, else the packaged model in process.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, Self

from megaservice.components._store.settings import StoreSettings
from megaservice.exceptions import ConfigurationError
from megaservice.settings import EnvSettings, variable

if TYPE_CHECKING:
    from megaservice.components._store import Chunk, FileInfo

__all__ = ["BACKENDS", "DataprepBackend", "DataprepSettings", "load_backend"]

BACKENDS = ("pgvector",)
"""The backends `DATAPREP_BACKEND` may name."""
_OPEA_NAMES = {"OPEA_DATAPREP_PGVECTOR": "pgvector"}


@dataclass(frozen=True, slots=True)
class DataprepSettings(EnvSettings):
    """What the dataprep service runs (OPEA's variable names where OPEA has one)."""

    host: str = variable("DATAPREP_HOST", "0.0.0.0", help="The address the dataprep service listens on.")
    port: int = variable(
        "DATAPREP_PORT", 5000, minimum=1, help="The port of the dataprep service (OPEA's dataprep microservice's)."
    )
    backend: str = variable(
        "DATAPREP_BACKEND",
        "pgvector",
        aliases=("DATAPREP_COMPONENT_NAME",),
        help="Where chunks are stored: `pgvector` (the collection the retriever reads); OPEA's "
        "`OPEA_DATAPREP_PGVECTOR` is accepted.",
    )
    tei_endpoint: str | None = variable(
        "TEI_EMBEDDING_ENDPOINT",
        None,
        help="Embed chunks with this TEI server's `POST /embed` (a TEI, or `megaservice serve embedding`); the "
        "model's name is read from its `GET /info`. Unset (and `EMBEDDING_ENDPOINT` unset): embedded in process.",
    )
    embedding_endpoint: str | None = variable(
        "EMBEDDING_ENDPOINT",
        None,
        help="Embed chunks with this OpenAI-compatible server's `POST /v1/embeddings` (`megaservice serve "
        "embedding`, TEI, Ollama, vLLM), when `TEI_EMBEDDING_ENDPOINT` is unset.",
    )
    embedding_model: str | None = variable(
        "DATAPREP_EMBEDDING_MODEL",
        None,
        aliases=("EMBED_MODEL",),
        help="dataprep's embedding model: with `EMBEDDING_ENDPOINT` the name sent; with `TEI_EMBEDDING_ENDPOINT` the "
        "name recorded when `/info` gives none; in process a sentence-transformers model (path or Hugging Face cache "
        "name; unset: the packaged all-MiniLM-L6-v2). The collection records it; the retriever must use the same. "
        "OPEA's `EMBED_MODEL` sets it (and the embedding service's `EMBEDDING_MODEL`).",
    )
    hf_token: str | None = variable(
        "HF_TOKEN",
        None,
        aliases=("HUGGINGFACEHUB_API_TOKEN",),
        secret=True,
        help="Bearer token sent to the TEI server (a TEI behind Hugging Face's inference endpoints).",
    )
    embedding_timeout: float = variable(
        "DATAPREP_EMBEDDING_TIMEOUT",
        120.0,
        minimum=0.001,
        help="Seconds the embedding server may take to answer one call; longer is a 504.",
    )
    embedding_batch: int = variable(
        "DATAPREP_EMBEDDING_BATCH",
        32,
        minimum=1,
        help="Chunks per call to the embedding server (TEI's default `max_client_batch_size`); four calls run at once.",
    )
    threads: int = variable(
        "DATAPREP_THREADS", 2, minimum=1, help="Threads of the in-process embedding model (onnxruntime or torch)."
    )
    local_batch: int = variable(
        "DATAPREP_LOCAL_BATCH",
        1,
        minimum=1,
        help="Chunks per call of the packaged in-process model: 1, the cheapest for chunks of hundreds of tokens "
        "(25% less CPU per chunk than 4, docs/components/dataprep.md).",
    )
    chunk_size: int = variable(
        "CHUNK_SIZE",
        1500,
        minimum=1,
        help="Characters per chunk when a request gives no `chunk_size` (OPEA's default, 1500).",
    )
    chunk_overlap: int = variable(
        "CHUNK_OVERLAP",
        100,
        minimum=0,
        help="Characters two neighbouring chunks share when a request gives no `chunk_overlap` (OPEA's, 100).",
    )
    max_upload_bytes: int = variable(
        "DATAPREP_MAX_UPLOAD_BYTES",
        64 * 1024 * 1024,
        minimum=1,
        help="Largest ingest request (all its files together) and largest fetched link, in bytes; larger is 413.",
    )
    max_files: int = variable(
        "DATAPREP_MAX_FILES", 100, minimum=1, help="Most files in one ingest request; more is refused with 413."
    )
    max_chunks: int = variable(
        "DATAPREP_MAX_CHUNKS",
        100_000,
        minimum=1,
        help="Most chunks one ingest request may make (a small `chunk_size` on a large file); more is 413.",
    )
    max_collections: int = variable(
        "DATAPREP_MAX_COLLECTIONS",
        16,
        minimum=1,
        help="Most collections one dataprep writes to (a request's OPEA `index_name` names one; each has a pool).",
    )
    link_timeout: float = variable(
        "DATAPREP_LINK_TIMEOUT", 30.0, minimum=0.001, help="Seconds to fetch one `link_list` URL."
    )
    allow_private_urls: bool = variable(
        "MEGASERVICE_ALLOW_PRIVATE_URLS",
        False,
        help="Let image URLs and ingested links point at loopback, link-local or private addresses.",
    )
    store: StoreSettings | None = None
    """The PostgreSQL and collection (`StoreSettings`, read from the same environment by `from_env`)."""

    @classmethod
    def from_env(cls, environ: Any = None, *, prefix: str | None = None, base: Self | None = None) -> Self:
        """The settings the environment gives, with the store's (`StoreSettings`) read from it too."""
        read = EnvSettings.from_env.__func__  # type: ignore[attr-defined]  # slots dataclass: no zero-argument super()
        settings: Self = read(cls, environ, prefix=prefix, base=base)
        if settings.store is None:
            settings = replace(settings, store=StoreSettings.from_env(environ))
        return settings

    def store_settings(self) -> StoreSettings:
        """`store`, or the environment's."""
        return self.store if self.store is not None else StoreSettings.from_env()


class DataprepBackend(Protocol):
    """Where the service puts chunks: each file's chunks replaced whole, in one transaction.

    `collection`: another collection than the default (a request's OPEA `index_name`); `None`: the default.
    """

    name: str
    """The backend's name (`pgvector`)."""

    @property
    def collection(self) -> str:
        """The default collection."""

    async def start(self, model: str, dimension: int) -> None:
        """Connect, and check (or record) that the collection holds vectors of `model` and `dimension`."""

    async def ready(self) -> bool:
        """Whether the database answers."""

    async def replace_file(
        self,
        source: str,
        chunks: "Sequence[Chunk]",
        vectors: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        collection: str | None = None,
    ) -> int:
        """Replace `source`'s chunks by these, in one transaction; the number stored.

        `vectors`: one per chunk (sequences of floats, or an array's rows); `metadata`: the file's own.
        """

    async def files(self, *, collection: str | None = None) -> "list[FileInfo]":
        """The files stored, with their chunk counts."""

    async def delete(self, source: str | None, *, collection: str | None = None) -> int:
        """Remove the chunks of `source` (`None`: of every file); the number removed."""

    async def aclose(self) -> None:
        """Close the connections."""


def backend_name(name: str) -> str:
    """Our name of backend `name` (OPEA's names mapped); `ConfigurationError` listing the known ones."""
    found = _OPEA_NAMES.get(name, name.strip().lower())
    if found not in BACKENDS:
        raise ConfigurationError(
            f"DATAPREP_BACKEND={name!r} is not a backend; choose one of {', '.join(BACKENDS)} "
            f"(or OPEA's {', '.join(_OPEA_NAMES)})"
        )
    return found


def load_backend(settings: DataprepSettings) -> DataprepBackend:
    """The backend `settings.backend` names, built (not connected: `start()` connects)."""
    backend_name(settings.backend)
    from megaservice.components.dataprep.pgvector import PgvectorBackend

    return PgvectorBackend(settings.store_settings(), max_collections=settings.max_collections)
