"""A document's text cut into overlapping chunks, each knowing the page it starts on.

    pieces = split(document, ChunkParams(chunk_size=1500, chunk_overlap=100), source="report.pdf")
    pieces[3].text, pieces[3].metadata   # {"source": "report.pdf", "chunk_index": 3, "page": 2, ...}

The cutting is langchain-text-splitters' `RecursiveCharacterTextSplitter` (the splitter OPEA's
dataprep uses, so chunks come out as they do there): paragraphs first, then lines, then words, so
that each chunk has at most `chunk_size` characters and repeats about `chunk_overlap` of the one
before. Markdown is split at headings first. The sections of a document (a PDF's pages) are
joined before splitting, so a chunk may run over a page break; its `page` is the page it starts
on and `page_end` the one it ends on, when that is another. Blocking: call it in a worker thread.
"""

import bisect
from dataclasses import dataclass
from typing import Any, NamedTuple

from megaservice.components._shared.deps import require
from megaservice.components.dataprep.documents import Document
from megaservice.exceptions import InputError

__all__ = ["MAX_CHUNK_SIZE", "ChunkParams", "Piece", "split"]

MAX_CHUNK_SIZE = 100_000
"""The largest `chunk_size` accepted (characters)."""
_SEPARATOR = "\n\n"


@dataclass(frozen=True, slots=True)
class ChunkParams:
    """How to cut: OPEA's `chunk_size` (characters, default 1500) and `chunk_overlap` (default 100)."""

    chunk_size: int = 1500
    chunk_overlap: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise InputError(f"`chunk_size` must be between 1 and {MAX_CHUNK_SIZE}, not {self.chunk_size}")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise InputError(
                f"`chunk_overlap` must be at least 0 and less than `chunk_size` ({self.chunk_size}), "
                f"not {self.chunk_overlap}"
            )

    def about_chunks(self, characters: int) -> int:
        """About how many chunks `characters` of text make (to refuse a request before cutting it)."""
        return -(-characters // (self.chunk_size - self.chunk_overlap))


class Piece(NamedTuple):
    """One chunk of a document: its text and what is stored with it."""

    text: str
    metadata: dict[str, Any]


def _splitter(kind: str, params: ChunkParams) -> Any:
    splitters = require("langchain_text_splitters", "dataprep", "langchain-text-splitters")
    options = {"chunk_size": params.chunk_size, "chunk_overlap": params.chunk_overlap}
    if kind == "markdown":
        return splitters.RecursiveCharacterTextSplitter.from_language(splitters.Language.MARKDOWN, **options)
    return splitters.RecursiveCharacterTextSplitter(**options)


def split(
    document: Document, params: ChunkParams, *, source: str, metadata: dict[str, Any] | None = None
) -> list[Piece]:
    """The chunks of `document`, in order, with `source`, `chunk_index`, `page` (if any) and `metadata` each."""
    text = _SEPARATOR.join(section.text for section in document.sections)
    starts = []  # where each section begins in `text`
    offset = 0
    for section in document.sections:
        starts.append(offset)
        offset += len(section.text) + len(_SEPARATOR)
    pages = [section.page for section in document.sections]
    common = {"source": source, "format": document.format, **document.metadata, **(metadata or {})}
    pieces = []
    cursor = 0
    for index, chunk in enumerate(_splitter(document.format, params).split_text(text)):
        found = text.find(chunk, cursor)  # chunks are substrings of `text`, in order
        entry = {**common, "chunk_index": index}
        if found >= 0:
            cursor = found + 1
            first = pages[bisect.bisect_right(starts, found) - 1]
            last = pages[bisect.bisect_right(starts, found + len(chunk) - 1) - 1]
            if first is not None:
                entry["page"] = first
                if last is not None and last != first:
                    entry["page_end"] = last
        pieces.append(Piece(chunk, entry))
    return pieces
