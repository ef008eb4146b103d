"""A fake but honest knowledge base: OPEA's dataprep, retriever and reranking services over one in-memory store.

For tests and demos of a whole RAG pipeline without a database or a model:

    kb = KnowledgeBase()
    async with serve(kb.dataprep) as dataprep, serve(kb.retriever) as retriever, serve(kb.reranker) as reranker:
        ...  # upload a file to dataprep; the retriever then finds its chunks

It answers as the real services do, with real work behind the answers: an uploaded text file is
really cut into chunks and kept (its name and chunk index in each chunk's metadata); a question
really finds the chunks that share the most words with it (not a vector search: words, minus the
most common English ones).

    dataprep   POST /v1/dataprep/ingest  multipart `files` (UTF-8 text: .txt, .md, ...) → OPEA's
                                         `{"status": 200, "message": "Data preparation succeeded"}`;
                                         a file that is not text is a 400 naming it; the same name
                                         again replaces the file
               POST /v1/dataprep/get     → `[{"name", "id", "type": "File", "parent": ""}]`
               POST /v1/dataprep/delete  `{"file_path": name | "all"}` → `{"status": true}` (404 if unknown)
    retriever  POST /v1/retrieval        OPEA's EmbedDoc (`text`, `embedding`, `k`) → OPEA's
                                         `SearchedMultimodalDoc`: `retrieved_docs` and, beside them,
                                         `metadata` (`source`, `chunk_index`) as OPEA's retrievers do
    reranker   POST /v1/reranking        OPEA's SearchedDoc (+ `top_n`) → OPEA's `LLMParamsDoc`
                                         (`query`, `documents`: the best texts; OPEA's drops the metadata)
"""

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["KnowledgeBase", "StoredChunk", "chunk_text"]

_WORD = re.compile(r"\w+")
_COMMON = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "has", "have",
        "how", "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our", "so", "that", "the",
        "their", "them", "there", "these", "they", "this", "to", "was", "we", "what", "when", "where",
        "which", "who", "why", "will", "with", "you", "your", "about", "tell"
    }
)  # fmt: skip


def _words(text: str) -> set[str]:
    return {word for word in (w.lower() for w in _WORD.findall(text)) if word not in _COMMON}


def chunk_text(text: str, size: int) -> list[str]:
    """`text` cut into chunks of at most about `size` characters, at paragraph, then sentence, boundaries."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if len(paragraph) <= size:
            pieces.append(paragraph)
            continue
        current = ""
        for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
            if current and len(current) + 1 + len(sentence) > size:
                pieces.append(current)
                current = sentence
            else:
                current = f"{current} {sentence}".strip()
        if current:
            pieces.append(current)
    chunks: list[str] = []
    for piece in pieces:  # small paragraphs are joined up to `size`
        if chunks and len(chunks[-1]) + 2 + len(piece) <= size:
            chunks[-1] = f"{chunks[-1]}\n\n{piece}"
        else:
            chunks.append(piece)
    return chunks


@dataclass(slots=True)
class StoredChunk:
    """One chunk of an ingested file."""

    source: str
    index: int
    text: str
    words: set[str] = field(default_factory=set)


class KnowledgeBase:
    """Ingested files, cut into chunks, and the three ASGI apps over them (module docstring).

    **Parameters:**

    * **chunk_size** - the largest chunk, in characters (about).
    * **documents** - files to hold from the start: `{name: text}`.
    """

    def __init__(self, *, chunk_size: int = 600, documents: dict[str, str] | None = None) -> None:
        self.chunk_size = chunk_size
        self.files: dict[str, list[StoredChunk]] = {}
        self.searches: list[dict[str, Any]] = []
        """Every retrieval request received."""
        for name, text in (documents or {}).items():
            self.add(name, text)
        self.dataprep = Starlette(
            routes=[
                Route("/v1/dataprep/ingest", self._ingest, methods=["POST"]),
                Route("/v1/dataprep/get", self._get, methods=["POST"]),
                Route("/v1/dataprep/delete", self._delete, methods=["POST"]),
            ]
        )
        self.retriever = Starlette(routes=[Route("/v1/retrieval", self._retrieve, methods=["POST"])])
        self.reranker = Starlette(routes=[Route("/v1/reranking", self._rerank, methods=["POST"])])

    def add(self, name: str, text: str) -> int:
        """Keep file `name` (replacing one of that name); the number of its chunks."""
        chunks = [
            StoredChunk(name, index, piece, _words(piece))
            for index, piece in enumerate(chunk_text(text, self.chunk_size))
        ]
        self.files[name] = chunks
        return len(chunks)

    def search(self, query: str, k: int) -> list[tuple[StoredChunk, int]]:
        """The `k` chunks sharing the most words with `query` (those sharing none left out), best first."""
        wanted = _words(query)
        scored = []
        for chunks in self.files.values():
            for chunk in chunks:
                shared = len(wanted & chunk.words)
                if shared:
                    scored.append((chunk, shared))
        scored.sort(key=lambda pair: -pair[1])
        return scored[:k]

    # -- dataprep ---------------------------------------------------------------------------------

    async def _ingest(self, request: Request) -> JSONResponse:
        async with request.form() as form:
            uploads = [item for item in form.getlist("files") if not isinstance(item, str)]
            if not uploads:
                return JSONResponse({"detail": "Must provide either a file or a string list."}, status_code=400)
            texts = {}
            for upload in uploads:
                name = upload.filename or "upload"
                try:
                    text = (await upload.read()).decode("utf-8")
                except UnicodeDecodeError:
                    return JSONResponse({"detail": f"{name} is not a UTF-8 text file"}, status_code=400)
                if not text.strip():
                    return JSONResponse({"detail": f"{name} has no text"}, status_code=400)
                texts[name] = text
        for name, text in texts.items():
            self.add(name, text)
        return JSONResponse({"status": 200, "message": "Data preparation succeeded"})

    async def _get(self, request: Request) -> JSONResponse:
        return JSONResponse([{"name": name, "id": name, "type": "File", "parent": ""} for name in self.files])

    async def _delete(self, request: Request) -> JSONResponse:
        body = await request.json()
        name = body.get("file_path") if isinstance(body, dict) else None
        if name == "all":
            self.files.clear()
        elif name in self.files:
            del self.files[name]
        else:
            return JSONResponse({"detail": f"File {name} not found"}, status_code=404)
        return JSONResponse({"status": True})

    # -- retriever and reranker -----------------------------------------------------------------

    async def _retrieve(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.searches.append(body)
        query = body.get("text") if isinstance(body, dict) else None
        if not isinstance(query, str) or not isinstance(body.get("embedding"), list):
            return JSONResponse({"detail": "expected OPEA's EmbedDoc: `text` and `embedding`"}, status_code=422)
        found = self.search(query, int(body.get("k", 4)))
        return JSONResponse(
            {
                "id": uuid.uuid4().hex,
                "retrieved_docs": [{"id": uuid.uuid4().hex, "text": chunk.text} for chunk, _ in found],
                "initial_query": query,
                "top_n": 1,
                "metadata": [{"source": chunk.source, "chunk_index": chunk.index} for chunk, _ in found],
            }
        )

    async def _rerank(self, request: Request) -> JSONResponse:
        body = await request.json()
        docs = body.get("retrieved_docs") if isinstance(body, dict) else None
        if not isinstance(docs, list) or not isinstance(body.get("initial_query"), str):
            return JSONResponse({"detail": "expected OPEA's SearchedDoc: `initial_query` and `retrieved_docs`"}, 422)
        query = _words(body["initial_query"])
        texts = [doc["text"] for doc in docs if isinstance(doc, dict) and isinstance(doc.get("text"), str)]
        ranked = sorted(texts, key=lambda text: -len(query & _words(text)))
        top_n = int(body.get("top_n") or 1)
        return JSONResponse({"id": uuid.uuid4().hex, "query": body["initial_query"], "documents": ranked[:top_n]})
