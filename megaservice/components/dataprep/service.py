"""The dataprep service: OPEA's `/v1/dataprep/*` routes over the collection the retriever reads.

    POST /v1/dataprep/ingest   multipart form: `files` (any number), `link_list` (a JSON list of URLs),
                               `chunk_size`, `chunk_overlap`; OPEA's other fields (`process_table`,
                               `table_strategy`, ...) accepted; `index_name`: another collection
                               → {"status": 200, "message": "Data preparation succeeded", "files": [...]}
    POST /v1/dataprep/get      {"index_name"?} → [{"name", "id", "type": "File", "parent": "", "chunks", ...}, ...]
    POST /v1/dataprep/delete   {"file_path": "<name>" | "all", "index_name"?} → {"status": true}; 404: no such file

An ingest request is checked whole before anything is stored: every file read and cut, every link
fetched. One bad file or link is a 4xx naming it, and nothing of the request is stored. Then each
file is embedded and stored in one transaction (`ingest`). A file ingested again replaces its
chunks; two ingestions of one file at once leave one copy. `/v1/ready` answers 503 until the
embedding model answers and the database is connected.
"""

import asyncio
import logging
import time
from typing import Any

import orjson
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response

from megaservice.components._shared.blocking import Worker
from megaservice.components._store import ModelMismatch
from megaservice.components.dataprep.backend import DataprepBackend, DataprepSettings, load_backend
from megaservice.components.dataprep.chunking import ChunkParams
from megaservice.components.dataprep.documents import check_dependencies
from megaservice.components.dataprep.embedder import Embedder, load_embedder
from megaservice.components.dataprep.ingest import Ingestor, Prepared
from megaservice.components.dataprep.inputs import (
    read_chunk_params,
    read_index_name,
    read_link_list,
    sent_filename,
    source_name,
)
from megaservice.components.dataprep.links import LinkLimits, fetch_link
from megaservice.components.dataprep.metrics import dataprep_metrics, failure_kind
from megaservice.constants import ServiceType
from megaservice.exceptions import ConfigurationError, InputError, MissingDependencyError
from megaservice.guards import read_upload
from megaservice.microservice import MicroService
from megaservice.statistics import BaseStatistics, statistics_dict

__all__ = ["STATISTICS_NAME", "create_service", "long_chunk_warning"]

STATISTICS_NAME = "opea_service@dataprep"
"""The name of the service's ingest latencies in `/v1/statistics` (OPEA's)."""

logger = logging.getLogger("megaservice.dataprep")

_SUCCEEDED = "Data preparation succeeded"
_MULTIPART_MARGIN = 64 * 1024
"""Bytes of multipart framing and form fields allowed in an ingest request besides its files."""
CHARACTERS_PER_TOKEN = 4.5
"""Characters of English per MiniLM token (benchmarks/dataprep.py: 1500-character chunks hold 331 on average)."""
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
"""The bodies an ingest request may have (the second only carries `link_list` and the other fields)."""
_PERMANENT = (ModelMismatch, ConfigurationError, MissingDependencyError)
"""Startup failures that waiting does not cure: reported by `/v1/ready`, not retried."""


def long_chunk_warning(chunk_size: int, model_id: str, max_tokens: int) -> str | None:
    """The startup warning when chunks of `chunk_size` characters are longer than the model reads, else `None`."""
    tokens = round(chunk_size / CHARACTERS_PER_TOKEN)
    if tokens <= max_tokens:
        return None
    fits = int(max_tokens * CHARACTERS_PER_TOKEN * 0.7) // 100 * 100
    return (
        f"CHUNK_SIZE {chunk_size} characters is about {tokens} tokens, and {model_id} reads {max_tokens}: the end "
        f"of most chunks will be stored but not embedded; CHUNK_SIZE={fits} fits (docs/components/dataprep.md)"
    )


def _check_form(request: Request) -> None:
    """`InputError` (400) for an ingest body that is not a form (a JSON body would read as an empty form)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type and media_type not in _FORM_TYPES:
        raise InputError(
            f"/v1/dataprep/ingest takes a multipart/form-data body, not {media_type[:100]}: OPEA's form, with "
            "`files` (file uploads) and `link_list` (a form field holding a JSON list of URLs), e.g. "
            """curl -F files=@guide.pdf -F 'link_list=["https://example.org/page"]'"""
        )


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


class _Routes:
    """The handlers, over one embedder and one backend."""

    def __init__(self, settings: DataprepSettings, embedder: Embedder, backend: DataprepBackend) -> None:
        self.settings = settings
        self.embedder = embedder
        self.backend = backend
        self.ingestor = Ingestor(embedder, backend, Worker(2), max_chunks=settings.max_chunks)
        self.defaults = ChunkParams(settings.chunk_size, min(settings.chunk_overlap, settings.chunk_size - 1))
        self.links = LinkLimits(
            allow_private=settings.allow_private_urls,
            max_bytes=settings.max_upload_bytes,
            timeout=settings.link_timeout,
        )
        self.started = False
        self.failure: BaseException | None = None
        self.statistics = statistics_dict.setdefault(STATISTICS_NAME, BaseStatistics())

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the embedder, then the backend with the embedder's model; retried until it works."""
        delay = 0.5
        while True:
            try:
                check_dependencies()
                await self.embedder.start()
                await self.backend.start(self.embedder.model_id, self.embedder.dimension)
            except _PERMANENT as exc:
                self.failure = exc
                logger.error("dataprep cannot start: %s", exc)  # noqa: TRY400  # the reason is the whole story
                return
            except Exception as exc:  # noqa: BLE001  # the embedding server or the database is not up yet
                self.failure = exc
                logger.warning("dataprep not ready (%s: %s); trying again in %.1f s", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 10.0)
                continue
            self.started = True
            self.failure = None
            self._warn_of_long_chunks()
            logger.info(
                "dataprep ready: %s embeddings (%s, %d dimensions) into collection %r (%s)",
                self.embedder.name,
                self.embedder.model_id,
                self.embedder.dimension,
                self.backend.collection,
                self.backend.name,
            )
            return

    def _warn_of_long_chunks(self) -> None:
        """Say so when the default chunk is longer than the model reads (its end would not be embedded)."""
        warning = long_chunk_warning(self.defaults.chunk_size, self.embedder.model_id, self.embedder.max_input_length)
        if warning is not None:
            logger.warning("%s", warning)

    async def ready(self) -> bool:
        """Whether requests can be served (raises why not, for `/v1/ready`)."""
        if not self.started:
            if self.failure is not None:
                raise self.failure
            return False
        return await self.backend.ready()

    def _check_started(self) -> None:
        if not self.started:
            reason = f": {type(self.failure).__name__}: {self.failure}" if self.failure is not None else ""
            raise InputError(f"dataprep is not ready yet{reason}", status_code=503)

    async def aclose(self) -> None:
        """Release the backend and the embedder."""
        await self.backend.aclose()
        await self.embedder.aclose()

    # -- routes -----------------------------------------------------------------------------------

    async def ingest(self, request: Request) -> Response:
        """`POST /v1/dataprep/ingest`: every file and link checked and cut first, then each one stored."""
        metrics = dataprep_metrics()
        metrics.in_progress.inc()
        try:
            return await self._ingest(request)
        except Exception as exc:
            metrics.failures.labels(failure_kind(exc)).inc()
            raise
        finally:
            metrics.in_progress.dec()

    async def _ingest(self, request: Request) -> Response:
        started = time.perf_counter()
        self._check_started()
        _check_form(request)
        form = await request.form(max_files=self.settings.max_files, max_fields=1000)
        try:
            collection = read_index_name(form.get("index_name"), writing=True)
            prepared = await self._prepare(form)
        finally:
            await form.close()
        files = []
        for item in prepared:
            stored = await self.ingestor.store(item, collection)
            files.append({"name": item.source, "chunks": stored, "pages": item.pages})
        self.statistics.append_latency(time.perf_counter() - started)
        return _json({"status": 200, "message": _SUCCEEDED, "files": files, "chunks": sum(f["chunks"] for f in files)})

    async def _prepare(self, form: FormData) -> list[Prepared]:
        params = read_chunk_params(form, self.defaults)
        links = read_link_list(form.get("link_list"))
        uploads = form.getlist("files")
        if not uploads and not links:
            raise InputError("send `files` (multipart uploads) or `link_list` (a JSON list of URLs), or both")
        names: set[str] = set()
        budget = self.settings.max_upload_bytes
        chunks_left = self.settings.max_chunks
        prepared = []
        for upload in uploads:
            if not isinstance(upload, UploadFile):
                raise InputError("`files` must be file uploads (multipart/form-data with a filename), not text")
            name = source_name(sent_filename(upload))
            if name in names:
                raise InputError(f"{name}: sent twice in one request")
            names.add(name)
            try:
                data = await read_upload(upload, budget)
            except InputError:
                raise InputError(
                    f"{name}: the upload is larger than {self.settings.max_upload_bytes} bytes in all "
                    "(DATAPREP_MAX_UPLOAD_BYTES)",
                    status_code=413,
                ) from None
            budget -= len(data)
            item = await self.ingestor.prepare(name, data, params, most=chunks_left)
            chunks_left -= len(item.pieces)
            prepared.append(item)
        for url in links:
            if url in names:
                raise InputError(f"{url}: sent twice in one request")
            names.add(url)
            page = await fetch_link(url, self.links)
            item = await self.ingestor.prepare(
                url, page.body, params, kind=page.format, metadata={"url": url}, most=chunks_left
            )
            chunks_left -= len(item.pieces)
            prepared.append(item)
        return prepared

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InputError("the body must be JSON (or empty)") from None
        if not isinstance(body, dict):
            raise InputError(f"the body must be a JSON object, not {type(body).__name__}")
        return body

    async def get(self, request: Request) -> Response:
        """`POST /v1/dataprep/get`: the files stored, as OPEA lists them (plus their chunk counts)."""
        body = await self._body(request)
        collection = read_index_name(body.get("index_name"), writing=False)
        self._check_started()
        files = await self.backend.files(collection=collection)
        answer = [
            {
                "name": info.source,
                "id": info.source,
                "type": "File",
                "parent": "",
                "chunks": info.chunks,
                "ingested_at": info.ingested_at.isoformat(),
                "metadata": info.metadata,
            }
            for info in files
        ]
        return _json(answer)

    async def delete(self, request: Request) -> Response:
        """`POST /v1/dataprep/delete`: `{"file_path": name}` removes one file, `"all"` every one."""
        body = await self._body(request)
        path = body.get("file_path")
        if not isinstance(path, str) or not path.strip():
            raise InputError('send {"file_path": "<a file name from /v1/dataprep/get>"} or {"file_path": "all"}')
        collection = read_index_name(body.get("index_name"), writing=False)
        self._check_started()
        if path.strip() == "all":
            removed = await self.backend.delete(None, collection=collection)
            logger.info("delete: every file (%d chunks)", removed)
            return _json({"status": True, "chunks": removed})
        removed = await self.backend.delete(path, collection=collection)
        if removed == 0:
            shown = collection or self.backend.collection
            raise InputError(f"no file {path!r} in collection {shown!r}", status_code=404)
        logger.info("delete %s: %d chunks", path, removed)
        return _json({"status": True, "chunks": removed})


def create_service(
    settings: DataprepSettings | None = None,
    backend: DataprepBackend | None = None,
    embedder: Embedder | None = None,
) -> MicroService:
    """The dataprep service (default: settings from the environment, the backend and embedder they name)."""
    if settings is None:
        settings = DataprepSettings.from_env()
    if backend is None:
        backend = load_backend(settings)
    if embedder is None:
        embedder = load_embedder(settings)
    service = MicroService(
        "dataprep",
        service_type=ServiceType.DATAPREP,
        host=settings.host,
        port=settings.port,
        endpoint="/v1/dataprep/ingest",
        description="Document ingestion (OPEA's /v1/dataprep): files and links read, chunked, embedded, stored",
        max_body_bytes=settings.max_upload_bytes + _MULTIPART_MARGIN,
    )
    routes = _Routes(settings, embedder, backend)
    service.add_route("/v1/dataprep/ingest", routes.ingest, methods=["POST"])
    service.add_route("/v1/dataprep/get", routes.get, methods=["POST"])
    service.add_route("/v1/dataprep/delete", routes.delete, methods=["POST"])
    service.add_startup_event(routes.start)
    service.add_readiness_check(routes.ready)
    service.on_shutdown(routes.aclose)
    return service
