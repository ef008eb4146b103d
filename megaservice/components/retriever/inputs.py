"""The requests the retriever accepts, read and checked: each refusal says what is wrong (422).

`POST /v1/retrieval` takes OPEA's three shapes, told apart by their fields:

    {"messages": ..., "embedding": ...}          ChatCompletionRequest (as the embedding service passes it on)
                                                 → the same request with `retrieved_docs` and `documents`
    {"input": str, "embedding": ...}             RetrievalRequest → RetrievalResponse
    {"text": str, "embedding": [floats]}         EmbedDoc (EmbedMultimodalDoc) → SearchedMultimodalDoc

Each may carry OPEA's retrieval fields: `k`, `search_type`, `distance_threshold`, `score_threshold`,
`fetch_k`, `lambda_mult` (checked by `megaservice.protocol.retrieval`, as the gateway checks a chat
request's), `index_name`, and a metadata filter: `filters` (langchain PGVector's syntax,
see `megaservice.components._store.filters`) or OPEA's `constraints` (`{"key": value}` or
`{"key": [op, value]}` with op `==`, `!=`, `<`, `<=`, `>`, `>=`; a list of those is ANDed).
"""

import enum
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from megaservice.components.retriever.backend import Search
from megaservice.exceptions import InputError
from megaservice.protocol.openai import ChatCompletionRequest
from megaservice.protocol.retrieval import read_retrieval

__all__ = ["Asked", "Shape", "read_request"]

_OPS = {"==": "$eq", "!=": "$ne", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}


class Shape(enum.Enum):
    """Which OPEA shape the request had (the answer has the matching one)."""

    EMBED_DOC = "embed_doc"
    RETRIEVAL = "retrieval"
    CHAT = "chat"


@dataclass(slots=True)
class Asked:
    """A retrieval request, read."""

    shape: Shape
    search: Search
    chat: ChatCompletionRequest | None = None
    image: str | None = None
    """An `EmbedMultimodalDoc`'s `base64_image`, passed on in each document's metadata (as OPEA does)."""


def _fail(message: str) -> InputError:
    return InputError(message, status_code=422)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def read_request(body: Any) -> Asked:
    """A `/v1/retrieval` body in any of OPEA's three shapes (module docstring)."""
    if not isinstance(body, dict):
        raise _fail(f"the body must be a JSON object, not {_kind(body)}")
    if "messages" in body:
        chat = ChatCompletionRequest.model_validate(body)  # a ValidationError is a 422, as FastAPI answers
        text = chat.input if isinstance(chat.input, str) else _last_user_text(chat.messages)
        return Asked(Shape.CHAT, _search(body, text, "input", _vector(chat.model_dump()["embedding"])), chat)
    if "input" in body:
        return Asked(Shape.RETRIEVAL, _search(body, body["input"], "input", _vector(body.get("embedding"))))
    if "text" in body:
        image = body.get("base64_image")
        return Asked(
            Shape.EMBED_DOC,
            _search(body, _one(body["text"], "text"), "text", _vector(body.get("embedding"), single=True)),
            image=image if isinstance(image, str) and image else None,
        )
    raise _fail(
        "the body must have `text` and `embedding` (OPEA's EmbedDoc), `input` and `embedding` (RetrievalRequest) "
        "or `messages` and `embedding` (a chat request, as the embedding service passes it on)"
    )


def _one(value: Any, field: str) -> Any:
    """A `text` given as a list of one string (an EmbedDoc of a list) is that string."""
    if isinstance(value, list):
        if len(value) != 1:
            raise _fail(f"`{field}` holds {len(value)} texts; the retriever answers one query per request")
        return value[0]
    return value


def _vector(value: Any, *, single: bool = False) -> "list[float] | npt.NDArray[np.float32]":
    """The query vector: a list of numbers, an OpenAI embeddings response, or (EmbedDoc) a list of one vector."""
    if isinstance(value, dict):  # an EmbeddingResponse: {"data": [{"embedding": [...]}]}
        data = value.get("data")
        if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
            raise _fail("`embedding` must hold exactly one vector (`data` with one item)")
        value = data[0].get("embedding")
    if single and isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        value = value[0]
    if value is None or (isinstance(value, list) and not value):
        raise _fail("`embedding` is missing or empty: send the query through the embedding service first")
    if not isinstance(value, list):
        raise _fail(f"`embedding` must be a list of numbers, not {_kind(value)}")
    try:
        fast = np.asarray(value)
    except ValueError:  # ragged nesting
        fast = None
    if fast is not None and fast.dtype.kind in "fi" and fast.ndim == 1 and np.isfinite(fast).all():
        return fast.astype(np.float32)  # the usual case, checked in C; anything else is looked at item by item
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise _fail(f"`embedding[{index}]` must be a number, not {_kind(item)}")
        if not math.isfinite(item):
            raise _fail(f"`embedding[{index}]` is not a finite number")
    return value


def _search(body: dict[str, Any], text: Any, field: str, vector: "list[float] | npt.NDArray[np.float32]") -> Search:
    if not isinstance(text, str):
        raise _fail(f"`{field}` must be the query's text, not {_kind(text)}")
    if not text.strip():
        raise _fail(f"`{field}` is empty: send the query's text")
    params = read_retrieval(body)
    collection = body.get("index_name")
    if collection is not None and not isinstance(collection, str):
        raise _fail(f"`index_name` must be a string, not {_kind(collection)}")
    return Search(
        vector=vector,
        text=text,
        k=params.k,
        search_type=params.search_type,
        distance_threshold=params.distance_threshold,
        score_threshold=params.score_threshold,
        fetch_k=params.fetch_k,
        lambda_mult=params.lambda_mult,
        filters=_filters(body),
        collection=collection or None,
    )


def _filters(body: dict[str, Any]) -> dict[str, Any] | None:
    filters, constraints = body.get("filters"), body.get("constraints")
    if filters is not None and constraints is not None:
        raise _fail("give `filters` or OPEA's `constraints`, not both")
    if filters is not None:
        if not isinstance(filters, dict):
            raise _fail(f"`filters` must be an object, not {_kind(filters)}")
        return filters or None
    if constraints is None:
        return None
    items = constraints if isinstance(constraints, list) else [constraints]
    parts: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            raise _fail(f"`constraints` must be an object or a list of objects, not {_kind(item)}")
        for key, value in item.items():
            parts.append({key: _constraint(key, value)})
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _constraint(key: str, value: Any) -> Any:
    """`[op, value]` as a filter operator; anything else is an equality."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] in _OPS:
        return {_OPS[value[0]]: value[1]}
    if isinstance(value, dict | list):
        raise _fail(f"`constraints.{key}` must be a value or [op, value] with op one of {', '.join(_OPS)}")
    return value


def _last_user_text(messages: Any) -> str:
    """The query of a chat request without `input`: its string, or its last user message's text."""
    if isinstance(messages, str):
        return messages
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        if isinstance(content, str):
            return content
    return ""
