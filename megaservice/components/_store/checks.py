"""What the store checks before it asks the database: counts, vectors, a file's chunks, the dimension.

Each raises `InputError` (a 4xx) saying what was wrong, so bad input never reaches PostgreSQL.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from megaservice.components._store.types import Chunk, Collection
from megaservice.exceptions import InputError
from megaservice.protocol.retrieval import MAX_K

__all__ = ["MAX_K", "check_chunks", "check_count", "check_dimension", "matrix_of", "query_vector"]


def check_count(name: str, value: int) -> None:
    """`value` is an integer from 1 to `MAX_K` (a 422 naming `name` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_K:
        raise InputError(f"{name} must be an integer from 1 to {MAX_K}, got {value!r}", status_code=422)


def query_vector(vector: Sequence[float] | npt.NDArray[np.floating[Any]]) -> "npt.NDArray[np.float32]":
    """One search's query vector as float32: one finite, non-zero list of numbers."""
    try:
        q = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError("the query vector must be a list of numbers", status_code=422) from exc
    if q.ndim != 1 or q.size == 0:
        raise InputError("the query vector must be one non-empty list of numbers", status_code=422)
    if not np.isfinite(q).all():
        raise InputError("the query vector holds NaN or infinite values", status_code=422)
    if not q.any():
        raise InputError("the query vector is all zeros (it has no direction)", status_code=422)
    return q


def matrix_of(vectors: Sequence[Sequence[float]] | npt.NDArray[np.floating[Any]]) -> "npt.NDArray[np.float32]":
    """A file's vectors as one float32 matrix: lists of finite numbers, all of one length."""
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError("the vectors must be lists of numbers, all of one length") from exc
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise InputError("the vectors must be lists of numbers, all of one length")
    if not np.isfinite(matrix).all():
        bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise InputError(f"vector {bad} holds NaN or infinite values")
    return matrix


def check_chunks(source: str, chunks: Sequence[Chunk], matrix: "npt.NDArray[np.float32]") -> None:
    """A named file with chunks, one vector each, no index twice."""
    if not isinstance(source, str) or not source.strip() or "\x00" in source:
        raise InputError(f"a file needs a name, got {source!r}")
    if not chunks:
        raise InputError(f"{source}: no chunks to store")
    if len(chunks) != len(matrix):
        raise InputError(f"{source}: {len(chunks)} chunks but {len(matrix)} vectors")
    indexes = [chunk.index for chunk in chunks]
    if len(set(indexes)) != len(indexes):
        raise InputError(f"{source}: two chunks have the same index")


def check_dimension(collection: Collection, dimension: int, what: str) -> None:
    """`dimension` is the collection's (a 422 naming the collection's model otherwise)."""
    if dimension != collection.dimension:
        raise InputError(
            f"{what} {dimension} dimensions, but collection {collection.name!r} holds {collection.dimension}-dimension "
            f"vectors of model {collection.model!r}",
            status_code=422,
        )
