"""The sources of an answer: the documents the LLM was given, each named by its file and chunk.

The retriever answers OPEA's `SearchedMultimodalDoc`: `retrieved_docs` (texts), and either a
`metadata` dict on each document or a top-level `metadata` list beside them (OPEA's way). The
reranker then keeps the best of them, in one of OPEA's shapes (`LLMParamsDoc.documents`,
`RerankedDoc.reranked_docs`, a `SearchedDoc` again). A reranked document that lost its metadata on
the way is matched back to the retrieved one with the same text, so a reranker that passes texts
only (OPEA's) still yields named sources.

A source's name is the first of these metadata keys that is set: `source`, `file_name`,
`filename`, `doc_name`, `name`, `path`, `url`; its chunk the first of `chunk_index`, `chunk`,
`chunk_id`, `index`; its page `page` or `page_number`.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Source", "documents_of", "reranked", "retrieved"]

_NAME_KEYS = ("source", "file_name", "filename", "doc_name", "name", "path", "url")
_CHUNK_KEYS = ("chunk_index", "chunk", "chunk_id", "index")
_PAGE_KEYS = ("page", "page_number")


@dataclass(slots=True)
class Source:
    """One document given to the LLM."""

    text: str
    source: str | None = None
    """The document it comes from (a file name, a path, a URL), if the retriever said."""
    chunk: int | None = None
    """Its chunk index within that document."""
    page: int | None = None
    score: float | None = None
    """The reranker's (or else the retriever's) score, if one was given."""
    metadata: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The source as the answers carry it (`sources` items)."""
        return {"source": self.source, "chunk": self.chunk, "page": self.page, "score": self.score, "text": self.text}


def retrieved(answer: Any) -> list[Source]:
    """The documents of a retriever's answer (`retrieved_docs`, with their metadata)."""
    if not isinstance(answer, Mapping):
        return []
    docs = answer.get("retrieved_docs")
    if not isinstance(docs, list):
        return []
    side = answer.get("metadata")
    side_list = side if isinstance(side, list) and len(side) == len(docs) else None
    found = []
    for position, doc in enumerate(docs):
        outer = side_list[position] if side_list is not None else None
        source = _source(doc, outer if isinstance(outer, Mapping) else None)
        if source is not None:
            found.append(source)
    return found


def reranked(answer: Any, candidates: Sequence[Source]) -> list[Source] | None:
    """The documents a reranker kept, named from `candidates` where it dropped their metadata.

    `None` if the answer has no documents field at all (then it is not a reranker's answer this
    module knows, and the candidates stand).
    """
    documents = documents_of(answer)
    if documents is None:
        return None
    unused = list(candidates)
    kept = []
    for doc in documents:
        source = _source(doc, None)
        if source is None:
            continue
        if source.source is None:
            for index, candidate in enumerate(unused):
                if candidate.text == source.text:
                    match = unused.pop(index)
                    source.source, source.chunk, source.page = match.source, match.chunk, match.page
                    source.metadata = match.metadata
                    if source.score is None:
                        source.score = match.score
                    break
        kept.append(source)
    return kept


def documents_of(answer: Any) -> list[Any] | None:
    """The documents field of a reranker's (or retriever's) answer, in any of OPEA's shapes.

    `reranked_docs` first: where an answer has both (ours, to an `LLMParamsDoc`), `documents` holds the
    same texts without their scores and metadata.
    """
    if not isinstance(answer, Mapping):
        return None
    for key in ("reranked_docs", "documents", "retrieved_docs"):
        value = answer.get(key)
        if isinstance(value, list):
            return value
    return None


def _source(doc: Any, outer: Mapping[str, Any] | None) -> Source | None:
    """A document (a string, or an object with a `text`) and its metadata, as a `Source`."""
    if isinstance(doc, str):
        return _named(Source(text=doc), outer)
    if not isinstance(doc, Mapping):
        return None
    text = doc.get("text")
    if isinstance(text, list):
        text = "\n".join(str(part) for part in text)
    if not isinstance(text, str):
        return None
    inner = doc.get("metadata")
    metadata: Mapping[str, Any] = {}
    if isinstance(outer, Mapping):
        metadata = outer
    if isinstance(inner, Mapping):
        metadata = {**metadata, **inner}
    score = doc.get("score", metadata.get("score"))  # the reranker's, else the retriever's (in the metadata)
    source = Source(text=text, score=float(score) if _number(score) else None)
    if not metadata:  # some keep the metadata on the document itself: {"text", "source", "chunk_index"}
        metadata = {k: v for k, v in doc.items() if k in _NAME_KEYS or k in _CHUNK_KEYS or k in _PAGE_KEYS}
        metadata.pop("index", None)  # a reranker's `index` is a position in its input, not a chunk
    return _named(source, metadata)


def _named(source: Source, metadata: Mapping[str, Any] | None) -> Source:
    if not metadata:
        return source
    source.metadata = metadata
    for key in _NAME_KEYS:
        value = metadata.get(key)
        if isinstance(value, str) and value:
            source.source = value
            break
    source.chunk = _integer(metadata, _CHUNK_KEYS)
    source.page = _integer(metadata, _PAGE_KEYS)
    return source


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(metadata: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = metadata.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None
