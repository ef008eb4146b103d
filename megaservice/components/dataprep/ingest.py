"""One file's way into the collection: read and cut (in a worker thread), embedded, then stored whole.

    ingestor = Ingestor(embedder, backend, Worker(2))
    prepared = await ingestor.prepare("report.pdf", data, ChunkParams(1500, 100))   # InputError if bad
    stored = await ingestor.store(prepared)                                         # embedded, then one transaction

Everything that can be wrong with a file is found by `prepare`, before anything is embedded or
stored. `store` embeds every chunk first and only then hands the whole file to the backend's
`replace_file`, one transaction: a failure (or a SIGKILL of the process) before it commits leaves
the file's previous chunks, or none, never part of the new ones. Long files log their progress;
every file's is counted (`megaservice.components.dataprep.metrics`).
"""

import logging
import time
from dataclasses import dataclass
from typing import Any

from megaservice.components._shared.blocking import Worker
from megaservice.components._store import Chunk
from megaservice.components.dataprep.backend import DataprepBackend
from megaservice.components.dataprep.chunking import ChunkParams, Piece, split
from megaservice.components.dataprep.documents import read_document
from megaservice.components.dataprep.embedder import Embedder
from megaservice.components.dataprep.metrics import DataprepMetrics, dataprep_metrics
from megaservice.exceptions import InputError

__all__ = ["Ingestor", "Prepared"]

logger = logging.getLogger("megaservice.dataprep")

_LOG_EVERY = 5.0
"""Seconds between two progress lines of one file (besides one line per tenth of its chunks)."""
LONG = 256
"""A file of more chunks than this logs its progress (embedded so far; storing)."""


@dataclass(slots=True)
class Prepared:
    """A file read and cut, not yet embedded."""

    source: str
    pieces: list[Piece]
    format: str
    pages: int | None
    characters: int
    seconds: float
    """Time it took to read and cut it."""
    metadata: dict[str, Any]
    """What is stored with the file itself: its format, pages, characters, title or URL if any."""


def _prepare(
    source: str, data: bytes, params: ChunkParams, kind: str | None, metadata: dict[str, Any] | None, most: int
) -> Prepared:
    started = time.perf_counter()
    document = read_document(source, data, kind)
    if params.about_chunks(document.characters) > most:
        raise _too_many(source, params.about_chunks(document.characters), most)
    pieces = split(document, params, source=source, metadata=metadata)
    if len(pieces) > most:
        raise _too_many(source, len(pieces), most)
    about = {"format": document.format, "characters": document.characters, **document.metadata, **(metadata or {})}
    if document.pages is not None:
        about["pages"] = document.pages
    return Prepared(
        source, pieces, document.format, document.pages, document.characters, time.perf_counter() - started, about
    )


def _too_many(source: str, chunks: int, most: int) -> InputError:
    return InputError(
        f"{source}: about {chunks} chunks, more than the {most} one request may make; use a larger chunk_size "
        "or send the file in parts",
        status_code=413,
    )


class _Progress:
    """Logs how far the embedding of one file is: every tenth of its chunks, and at least every few seconds."""

    def __init__(self, source: str, total: int) -> None:
        self.source = source
        self.total = total
        self.started = self.last = time.monotonic()
        self.next_tenth = 1

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        tenth = done * 10 // self.total
        if tenth >= self.next_tenth or now - self.last >= _LOG_EVERY:
            self.next_tenth = tenth + 1
            self.last = now
            rate = done / max(now - self.started, 1e-9)
            logger.info(
                "ingest %s: embedded %d/%d chunks (%d%%, %.0f chunks/s)",
                self.source,
                done,
                self.total,
                done * 100 // self.total,
                rate,
            )


class _Counted:
    """Counts the chunks of one file as they are embedded (and passes the count on to the log's `_Progress`)."""

    __slots__ = ("_counted", "_log", "_metrics")

    def __init__(self, metrics: DataprepMetrics, log: _Progress | None) -> None:
        self._metrics = metrics
        self._log = log
        self._counted = 0

    def __call__(self, done: int) -> None:
        self._metrics.chunks_embedded.inc(done - self._counted)
        self._counted = done
        if self._log is not None:
            self._log(done)


class Ingestor:
    """Files into one backend through one embedder; reading and cutting in `worker`'s threads."""

    def __init__(self, embedder: Embedder, backend: DataprepBackend, worker: Worker, *, max_chunks: int) -> None:
        self.embedder = embedder
        self.backend = backend
        self.worker = worker
        self.max_chunks = max_chunks

    async def prepare(
        self,
        source: str,
        data: bytes,
        params: ChunkParams,
        *,
        kind: str | None = None,
        metadata: dict[str, Any] | None = None,
        most: int | None = None,
    ) -> Prepared:
        """`data` read as file `source` (`kind`: its format, else by the name) and cut; `InputError` if bad.

        `most`: the chunks it may make at most (default `max_chunks`).
        """
        most = self.max_chunks if most is None else most
        prepared = await self.worker.run(_prepare, source, data, params, kind, metadata, most)
        logger.info(
            "ingest %s: %s, %d characters%s, %d chunks (read and cut in %.2f s)",
            source,
            prepared.format,
            prepared.characters,
            f", {prepared.pages} pages" if prepared.pages else "",
            len(prepared.pieces),
            prepared.seconds,
        )
        return prepared

    async def store(self, prepared: Prepared, collection: str | None = None) -> int:
        """Embed every chunk of `prepared`, then replace the file's chunks with them (one transaction).

        `collection`: another than the backend's default (a request's `index_name`).
        """
        started = time.monotonic()
        texts = [piece.text for piece in prepared.pieces]
        long = len(texts) > LONG
        metrics = dataprep_metrics()
        progress = _Counted(metrics, _Progress(prepared.source, len(texts)) if long else None)
        vectors = await self.embedder.embed(texts, progress)
        chunks = [Chunk(piece.text, index, piece.metadata) for index, piece in enumerate(prepared.pieces)]
        logger.log(
            logging.INFO if long else logging.DEBUG, "ingest %s: storing %d chunks", prepared.source, len(chunks)
        )
        stored = await self.backend.replace_file(
            prepared.source, chunks, vectors, prepared.metadata, collection=collection
        )
        metrics.files.inc()
        metrics.chunks.inc(stored)
        logger.info("ingest %s: stored %d chunks in %.1f s", prepared.source, stored, time.monotonic() - started)
        return stored
