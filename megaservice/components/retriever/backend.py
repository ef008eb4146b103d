"""What the retriever service runs: its settings, the backend protocol, and `load_backend()`.

    pgvector    PostgreSQL with pgvector (`PG_CONNECTION_STRING`, or the embedded PostgreSQL), the
                collection dataprep writes (`COLLECTION_NAME`, one default for both); the only backend

OPEA's `RETRIEVER_COMPONENT_NAME=OPEA_RETRIEVER_PGVECTOR` selects it too.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, Self

from megaservice.components._store.settings import StoreSettings
from megaservice.components._store.types import Hit
from megaservice.exceptions import ConfigurationError
from megaservice.settings import EnvSettings, variable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["BACKENDS", "RetrieverBackend", "RetrieverSettings", "Search", "load_backend"]

BACKENDS = ("pgvector",)
_OPEA_NAMES = {"OPEA_RETRIEVER_PGVECTOR": "pgvector"}


@dataclass(frozen=True, slots=True)
class RetrieverSettings(EnvSettings):
    """The retriever service's settings (the store's are `StoreSettings`: PG_CONNECTION_STRING, COLLECTION_NAME)."""

    host: str = variable("RETRIEVER_HOST", "0.0.0.0", help="The address the retriever listens on.")
    port: int = variable("RETRIEVER_PORT", 7000, minimum=1, help="The port of the retriever (OPEA's retriever's).")
    backend: str = variable(
        "RETRIEVER_BACKEND",
        "pgvector",
        aliases=("RETRIEVER_COMPONENT_NAME",),
        help="What the retriever searches: `pgvector` (OPEA's `OPEA_RETRIEVER_PGVECTOR` is accepted).",
    )
    model: str | None = variable(
        "RETRIEVER_EMBEDDING_MODEL",
        None,
        help="The embedding model of the query vectors, as dataprep recorded it (the embedding service's `/info` "
        "`model_id`). Set, the retriever refuses a collection built with another model (naming both) instead of "
        "retrieving nothing; unset, it takes the collection's model, and checks the vectors' dimension.",
    )
    max_collections: int = variable(
        "RETRIEVER_MAX_COLLECTIONS",
        16,
        minimum=1,
        help="Most collections a retriever searches (a request's OPEA `index_name` names one; each has a pool).",
    )
    store: StoreSettings | None = None
    """The store's settings (`StoreSettings.from_env()`)."""

    @classmethod
    def from_env(cls, environ: Any = None, *, prefix: str | None = None, base: Self | None = None) -> Self:
        """The settings the environment gives, with the store's."""
        read = EnvSettings.from_env.__func__  # type: ignore[attr-defined]  # slots dataclass: no zero-argument super()
        settings: Self = read(cls, environ, prefix=prefix, base=base)
        if settings.store is None:
            settings = replace(settings, store=StoreSettings.from_env(environ))
        return settings

    def store_settings(self) -> StoreSettings:
        """`store`, or the defaults."""
        return self.store if self.store is not None else StoreSettings()


@dataclass(frozen=True, slots=True)
class Search:
    """One retrieval, read from the request."""

    vector: "Sequence[float] | npt.NDArray[np.floating[Any]]"
    text: str
    k: int = 4
    search_type: str = "similarity"
    distance_threshold: float | None = None
    score_threshold: float | None = None
    fetch_k: int = 20
    lambda_mult: float = 0.5
    filters: Mapping[str, Any] | None = None
    collection: str | None = None
    """Another collection than the configured one (OPEA's `index_name`)."""


class RetrieverBackend(Protocol):
    """What the service needs of a backend. Calls never block the event loop."""

    name: str

    async def start(self) -> None:
        """Connect (retrying while the database is down); runs as a background task from startup."""

    async def ready(self) -> bool:
        """Whether searches can be answered (raises the reason when it is a configuration problem)."""

    async def search(self, search: Search) -> list[Hit]:
        """The best chunks, best first (`InputError` for bad input, `StoreUnavailable` while the database is down)."""

    async def aclose(self) -> None:
        """Release connections."""


def backend_name(name: str) -> str:
    """Our name of backend `name` (OPEA's mapped); `ConfigurationError` listing the known ones."""
    found = _OPEA_NAMES.get(name, name.strip().lower())
    if found not in BACKENDS:
        raise ConfigurationError(
            f"RETRIEVER_BACKEND={name!r} is not a backend; choose one of {', '.join(BACKENDS)} "
            f"(or OPEA's {', '.join(_OPEA_NAMES)})"
        )
    return found


def load_backend(settings: RetrieverSettings, **kwargs: Any) -> RetrieverBackend:
    """The backend `settings.backend` names (not connected: `start()` connects)."""
    backend_name(settings.backend)
    from megaservice.components.retriever.pgvector import PgvectorBackend

    return PgvectorBackend(settings, **kwargs)
