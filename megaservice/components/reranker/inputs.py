"""The requests the reranking service accepts, read and checked: each refusal says what is wrong (4xx).

`POST /v1/reranking` takes OPEA's shapes, told apart by their fields as OPEA's pydantic union tells them apart:

    {"messages": ..., "retrieved_docs"?, "input"?, "top_n"?}    ChatCompletionRequest → the same request,
                                                                 `reranked_docs` and `documents` set
    {"initial_query", "retrieved_docs", "top_n"?, "metadata"?}  SearchedDoc / SearchedMultimodalDoc → LLMParamsDoc
    {"input", "retrieved_docs", "top_n"?}                       RerankingRequest → RerankingResponse

A retrieved document is `{"text", "metadata"?, ...}` (OPEA's TextDoc, MetadataTextDoc, RetrievalResponseData)
or a plain string (which OPEA's `RerankingRequest` declares but then fails on). Its metadata is its own
`metadata`, else the entry at its position in a SearchedMultimodalDoc's `metadata` list.

`POST /rerank` takes TEI's `{"query", "texts", "raw_scores"?, "return_text"?, "truncate"?, "truncation_direction"?}`.
"""

import enum
from dataclasses import dataclass
from typing import Any

from megaservice.exceptions import InputError
from megaservice.protocol.openai import ChatCompletionRequest

__all__ = ["Document", "RerankRequest", "Shape", "TEIRerankRequest", "read_reranking_request", "read_tei_request"]

_SHAPES = (
    "the body must be OPEA's SearchedDoc (`initial_query`, `retrieved_docs`), RerankingRequest (`input`, "
    "`retrieved_docs`) or a chat request (`messages`, `retrieved_docs`)"
)


class Shape(enum.Enum):
    """Which OPEA shape a `/v1/reranking` request had (the answer has the matching one)."""

    SEARCHED_DOC = "searched_doc"
    RERANKING_REQUEST = "reranking_request"
    CHAT = "chat"


@dataclass(slots=True)
class Document:
    """One retrieved document: its text and what the retriever said of it (source, chunk index, page...)."""

    text: str
    metadata: dict[str, Any] | None = None


@dataclass(slots=True)
class RerankRequest:
    """A `/v1/reranking` request, read."""

    shape: Shape
    query: str
    documents: list[Document]
    top_n: int
    chat: ChatCompletionRequest | None = None
    sent_docs: list[Any] | None = None
    """A chat request's `retrieved_docs` as sent (its answer carries them back)."""


@dataclass(slots=True)
class TEIRerankRequest:
    """A TEI `/rerank` request, read."""

    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool | None = None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _query(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"`{name}` must be a string, not {_kind(value)}", status_code=422)
    if not value.strip():
        raise InputError(f"`{name}` is empty: send the question the documents are ranked for")
    return value


def _top_n(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(
            f"`top_n` must be a positive integer (how many documents to keep), not {value!r}", status_code=422
        )
    return value


def _check_count(count: int, name: str, max_texts: int) -> None:
    if count > max_texts:
        raise InputError(f"`{name}` has {count} documents; at most {max_texts} per request", status_code=413)


def _documents(value: Any, metadata: Any, max_texts: int, *, allow_empty: bool) -> list[Document]:
    """The retrieved documents of `value` (a list of strings or of objects with a `text`)."""
    if not isinstance(value, list):
        raise InputError(f"`retrieved_docs` must be a list of documents, not {_kind(value)}", status_code=422)
    if not value and not allow_empty:
        raise InputError("`retrieved_docs` is an empty list: send at least one document to rerank")
    _check_count(len(value), "retrieved_docs", max_texts)
    shared = _shared_metadata(metadata, len(value))
    documents = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            documents.append(Document(item, shared[index]))
            continue
        if not isinstance(item, dict):
            raise InputError(
                f"`retrieved_docs[{index}]` must be an object with a `text`, not {_kind(item)}", status_code=422
            )
        text = item.get("text")
        if not isinstance(text, str):
            raise InputError(f"`retrieved_docs[{index}].text` must be a string, not {_kind(text)}", status_code=422)
        own = item.get("metadata")
        if own is not None and not isinstance(own, dict):
            raise InputError(f"`retrieved_docs[{index}].metadata` must be an object, not {_kind(own)}", status_code=422)
        documents.append(Document(text, own if own is not None else shared[index]))
    return documents


def _shared_metadata(metadata: Any, count: int) -> list[dict[str, Any] | None]:
    """A SearchedMultimodalDoc's `metadata`: one object per retrieved document (none: `None` each)."""
    if metadata is None:
        return [None] * count
    if not isinstance(metadata, list) or not all(isinstance(m, dict) for m in metadata):
        raise InputError("`metadata` must be a list of objects, one per retrieved document", status_code=422)
    if len(metadata) != count:
        raise InputError(
            f"`metadata` has {len(metadata)} entries for {count} retrieved documents: send one per document",
            status_code=422,
        )
    return list(metadata)


def read_reranking_request(body: Any, max_texts: int) -> RerankRequest:
    """A `/v1/reranking` body in any of OPEA's shapes (module docstring)."""
    if not isinstance(body, dict):
        raise InputError(f"the body must be a JSON object, not {_kind(body)}")
    if "messages" in body:
        return _read_chat(body, max_texts)
    if "initial_query" in body:
        if "retrieved_docs" not in body:
            raise InputError("the SearchedDoc has no `retrieved_docs`", status_code=422)
        documents = _documents(body["retrieved_docs"], body.get("metadata"), max_texts, allow_empty=True)
        return RerankRequest(
            Shape.SEARCHED_DOC, _query(body["initial_query"], "initial_query"), documents, _top_n(body.get("top_n", 1))
        )
    if "input" in body and "retrieved_docs" in body:
        documents = _documents(body["retrieved_docs"], None, max_texts, allow_empty=False)
        return RerankRequest(
            Shape.RERANKING_REQUEST, _query(body["input"], "input"), documents, _top_n(body.get("top_n", 1))
        )
    raise InputError(_SHAPES)


def _read_chat(body: dict[str, Any], max_texts: int) -> RerankRequest:
    documents = _documents(body.get("retrieved_docs", []), None, max_texts, allow_empty=True)
    top_n = _top_n(body.get("top_n", 1))
    # OPEA's model refuses plain-string documents: they are read above and kept as sent
    rest = {key: value for key, value in body.items() if key != "retrieved_docs"}
    chat = ChatCompletionRequest.model_validate(rest)  # a ValidationError is a 422, as FastAPI answers
    query = chat.input if isinstance(chat.input, str) and chat.input.strip() else _last_user_text(chat.messages)
    return RerankRequest(Shape.CHAT, query, documents, top_n, chat, body.get("retrieved_docs", []))


def _last_user_text(messages: Any) -> str:
    """The question of a chat request without a string `input`: its string, or its last user message's text."""
    if isinstance(messages, str):
        if messages.strip():
            return messages
    else:
        for message in reversed(messages):
            if message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
            if isinstance(content, str) and content.strip():
                return content
    raise InputError("the chat request has no `input` and no user message text to rank the documents for")


def _flag(body: dict[str, Any], name: str, default: bool | None) -> bool | None:
    value = body.get(name, default)
    if value is not None and not isinstance(value, bool):
        raise InputError(f"`{name}` must be true or false, not {value!r}", status_code=422)
    return value


def read_tei_request(body: Any, max_texts: int) -> TEIRerankRequest:
    """A TEI `/rerank` body (`truncation_direction` is checked; the in-process models cut on the right)."""
    if not isinstance(body, dict) or "query" not in body or "texts" not in body:
        raise InputError(
            "the body must be a JSON object with `query` (a string) and `texts` (a list of strings)", status_code=422
        )
    query = _query(body["query"], "query")
    texts = body["texts"]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InputError("`texts` must be a list of strings", status_code=422)
    if not texts:
        raise InputError("`texts` cannot be empty")
    _check_count(len(texts), "texts", max_texts)
    direction = body.get("truncation_direction")
    if direction is not None and direction not in ("Left", "Right", "left", "right"):
        raise InputError(f"`truncation_direction` must be 'Left' or 'Right', not {direction!r}", status_code=422)
    return TEIRerankRequest(
        query,
        texts,
        raw_scores=bool(_flag(body, "raw_scores", False)),
        return_text=bool(_flag(body, "return_text", False)),
        truncate=_flag(body, "truncate", None),
    )
