"""OPEA's retrieval fields of a request, checked with the retriever's rules (a 422 saying what is wrong).

    search_type                          one of `SEARCH_TYPES`               default "similarity"
    k, fetch_k                           an integer from 1 to `MAX_K`        4, 20
    distance_threshold                   a number ≥ 0 (OPEA's NonNegativeFloat), or null     null
    score_threshold                      a number from 0 to 1 (a cosine similarity), or null  null
    lambda_mult                          a number from 0 to 1                0.5

A refusal shows the value as the JSON the client sent (`true`, `null`, `"mmr"`).

The retriever reads them from its requests (`megaservice.components.retriever.inputs`); the
gateway reads them from a chat request before it calls any node, so a wrong value is the same
422 wherever it is sent, never a 502 blaming the retriever.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import orjson

from megaservice.exceptions import InputError

__all__ = ["MAX_K", "RETRIEVAL_FIELDS", "SEARCH_TYPES", "RetrievalParams", "SearchType", "read_retrieval", "shown"]

MAX_K = 1000
"""Most results one search returns (`k`), and most candidates it fetches (`fetch_k`)."""

SearchType = Literal["similarity", "similarity_distance_threshold", "similarity_score_threshold", "mmr", "hybrid"]
SEARCH_TYPES: tuple[str, ...] = get_args(SearchType)
"""The `search_type`s the store answers (OPEA's four, and `hybrid`: full text and vectors, fused by rank)."""

RETRIEVAL_FIELDS = ("search_type", "k", "distance_threshold", "fetch_k", "lambda_mult", "score_threshold")
"""The fields `read_retrieval` reads."""


@dataclass(frozen=True, slots=True)
class RetrievalParams:
    """A request's retrieval fields, checked."""

    search_type: str = "similarity"
    k: int = 4
    distance_threshold: float | None = None
    score_threshold: float | None = None
    fetch_k: int = 20
    lambda_mult: float = 0.5


def read_retrieval(fields: Mapping[str, Any]) -> RetrievalParams:
    """The retrieval fields of `fields` (a request body); absent or null ones are the defaults.

    Raises:
        InputError: 422 naming the field and saying what it must be.
    """
    search_type = fields.get("search_type", "similarity")
    if search_type not in SEARCH_TYPES:
        raise _fail(f"`search_type` {shown(search_type)} is not one of {', '.join(SEARCH_TYPES)}")
    return RetrievalParams(
        search_type=search_type,
        k=_count(fields, "k", 4),
        distance_threshold=_threshold(fields, "distance_threshold"),
        score_threshold=_score_threshold(fields),
        fetch_k=_count(fields, "fetch_k", 20),
        lambda_mult=_fraction(fields, "lambda_mult", 0.5),
    )


def shown(value: Any, limit: int = 60) -> str:
    """`value` as the JSON the client sent (`true`, `null`, `"mmr"`), cut to about `limit` characters."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # orjson's JSONEncodeError: not a JSON value (a caller in Python)
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _fail(message: str) -> InputError:
    return InputError(message, status_code=422)


def _count(fields: Mapping[str, Any], field: str, default: int) -> int:
    value = fields.get(field, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"`{field}` must be an integer from 1 to {MAX_K}, not {shown(value)}")
    if not 1 <= value <= MAX_K:
        raise _fail(f"`{field}` must be from 1 to {MAX_K}, got {value}")
    return value


def _number(fields: Mapping[str, Any], field: str, default: float | None) -> float | None:
    value = fields.get(field, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(f"`{field}` must be a number, not {shown(value)}")
    return float(value)


def _threshold(fields: Mapping[str, Any], field: str) -> float | None:
    """A threshold: a number, not negative (OPEA's `NonNegativeFloat`), or `None`."""
    value = _number(fields, field, None)
    if value is not None and value < 0:
        raise _fail(f"`{field}` must not be negative (OPEA's NonNegativeFloat), got {value:g}")
    return value


def _score_threshold(fields: Mapping[str, Any]) -> float | None:
    """`score_threshold`: from 0 to 1, as a cosine similarity is never above 1."""
    value = _threshold(fields, "score_threshold")
    if value is not None and value > 1:
        raise _fail(f"`score_threshold` must be at most 1, got {value:g}: it is a cosine similarity, never above 1")
    return value


def _fraction(fields: Mapping[str, Any], field: str, default: float) -> float:
    value = _number(fields, field, default)
    assert value is not None  # the default is not None
    if not 0.0 <= value <= 1.0:
        raise _fail(f"`{field}` must be between 0 and 1, got {value}")
    return value
