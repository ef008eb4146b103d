"""What goes into the store and what comes out of it."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from megaservice.protocol.retrieval import SEARCH_TYPES, SearchType

__all__ = ["SEARCH_TYPES", "Chunk", "Collection", "FileInfo", "Hit", "SearchType"]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a file, as stored: its text, its place in the file, what else is known of it."""

    text: str
    index: int
    """Its position in the file (0, 1, ...); unique per file."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """JSON values: page, title, ...; `source` and `chunk_index` are added when it is stored."""


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A stored file: its name, how many chunks it has, when it was stored, its own metadata."""

    source: str
    chunks: int
    ingested_at: datetime
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk a search found."""

    id: int
    source: str
    index: int
    """The chunk's position in its file."""
    text: str
    metadata: dict[str, Any]
    """The chunk's metadata, with `source` and `chunk_index`."""
    distance: float
    """Cosine distance to the query vector (0 = same direction, 2 = opposite)."""
    score: float
    """How well it matches: cosine similarity (1 - distance), or for `hybrid` the reciprocal-rank score."""


@dataclass(frozen=True, slots=True)
class Collection:
    """A collection as recorded: the embedding model and dimension it was built with, and its tables."""

    name: str
    model: str
    dimension: int
    chunks_table: str
    files_table: str
