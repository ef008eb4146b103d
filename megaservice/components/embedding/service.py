"""The embedding service: OPEA's `/v1/embeddings`, and TEI's own routes, so it stands in for either.

    POST /v1/embeddings   OPEA's three shapes (OpenAI's request, TextDoc, a chat request; see `inputs`)
    POST /embed           TEI: {"inputs": str | [str], "normalize"?, "truncate"?} → [[floats]]
    POST /                TEI's route for Hugging Face inference clients (langchain's
                          HuggingFaceInferenceAPIEmbeddings, which OPEA's retrievers and dataprep use)
    GET  /info            TEI's model description (`model_id`, `max_input_length`, ...)
    GET  /v1/models       the model, as an OpenAI-compatible server lists it

Every vector is L2-normalised (TEI's `normalize: false` aside); `dimensions` truncates and
renormalises. A request has at most `EMBEDDING_MAX_INPUTS` texts (2048, OpenAI's limit; more is a
413); each text is cut to the model's input length (TEI's `--auto-truncate`, which OPEA's compose
files pass). On TEI's routes a refusal has TEI's body, `{"error", "error_type"}`. The texts embedded
are counted by backend (`embedding_texts_total`, `.metrics`).
"""

import random
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from megaservice import tracing
from megaservice.components.embedding.backend import Embedded, EmbeddingBackend, EmbeddingSettings, load_backend
from megaservice.components.embedding.inputs import (
    EmbedRequest,
    Shape,
    read_embeddings_request,
    read_tei_request,
)
from megaservice.components.embedding.metrics import texts_counter
from megaservice.components.embedding.vectors import as_base64, check_dimensions, finish
from megaservice.constants import ServiceType
from megaservice.exceptions import InputError
from megaservice.microservice import MicroService
from megaservice.protocol.rag import EmbeddingRequest, EmbeddingResponse
from megaservice.statistics import BaseStatistics, statistics_dict

__all__ = ["STATISTICS_NAME", "create_service"]

STATISTICS_NAME = "opea_service@embedding"
"""The name of the service's latencies in `/v1/statistics` (OPEA's)."""

_JSON = "application/json"
_EMBED_DOC_DEFAULTS = {
    "search_type": "similarity",
    "k": 4,
    "distance_threshold": None,
    "fetch_k": 20,
    "lambda_mult": 0.5,
    "score_threshold": 0.2,
    "constraints": None,
    "index_name": None,
}
"""`EmbedDoc`'s retrieval fields, as OPEA's embedding service answers them (the defaults)."""


def _json(content: Any, status: int = 200) -> Response:
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status, media_type=_JSON)


def _tei_error(exc: InputError) -> Response:
    return _json({"error": str(exc), "error_type": "Validation"}, exc.status_code)


def _new_id() -> str:
    """A document id as OPEA's documents have them (32 hex digits)."""
    return f"{random.getrandbits(128):032x}"


class _Routes:
    """The handlers, over one backend."""

    def __init__(self, backend: EmbeddingBackend, settings: EmbeddingSettings) -> None:
        self.backend = backend
        self.max_inputs = settings.max_inputs
        batch: int = getattr(backend, "max_batch", 32)  # a batching backend's; a remote one batches itself
        self.max_batch = settings.max_batch or batch
        self.statistics = statistics_dict.setdefault(STATISTICS_NAME, BaseStatistics())
        self.texts = texts_counter().labels(backend.name)

    async def _embed(self, texts: list[str], model: str | None, dimensions: int | None) -> Embedded:
        known = self.backend.dimension
        if known is not None:
            check_dimensions(dimensions, known)  # before the work, when the model's size is known
        with tracing.span("embedding.embed", texts=len(texts), backend=self.backend.name) as work:
            embedded = await self.backend.embed(texts, model)
            work.set("gen_ai.usage.input_tokens", embedded.tokens)
            work.content("megaservice.input", texts)
        self.texts.inc(len(texts))
        return embedded

    async def embeddings(self, request: Request) -> Response:
        """`POST /v1/embeddings`: OPEA's three shapes."""
        started = time.perf_counter()
        asked = read_embeddings_request(await request.json(), self.max_inputs)
        embedded = await self._embed(asked.texts, asked.model, asked.dimensions)
        vectors = finish(embedded.vectors, dimensions=asked.dimensions)
        if asked.shape is Shape.TEXT_DOC:
            answer: dict[str, Any] = {
                "id": _new_id(),
                "text": asked.texts[0] if asked.single else asked.texts,
                "embedding": vectors[0] if asked.single else vectors,
                **_EMBED_DOC_DEFAULTS,
            }
        else:
            answer = self._openai_answer(asked, embedded, vectors)
            if asked.chat is not None:
                answer = {**asked.chat.model_dump(), "embedding": answer}
        self.statistics.append_latency(time.perf_counter() - started)
        return _json(answer)

    def _openai_answer(self, asked: EmbedRequest, embedded: Embedded, vectors: Any) -> dict[str, Any]:
        encode = as_base64 if asked.base64 else None
        data = [
            {"object": "embedding", "index": i, "embedding": encode(row) if encode else row}
            for i, row in enumerate(vectors)
        ]
        usage = {"prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens}
        model = embedded.model or self.backend.model_id
        return {"object": "list", "data": data, "model": model, "usage": usage}

    async def tei_embed(self, request: Request) -> Response:
        """`POST /embed` and `POST /`: TEI's embed route."""
        started = time.perf_counter()
        try:
            asked = read_tei_request(await request.json(), self.max_inputs)
            embedded = await self._embed(asked.texts, None, asked.dimensions)
            vectors = finish(embedded.vectors, normalize=asked.normalize, dimensions=asked.dimensions)
        except InputError as exc:
            return _tei_error(exc)
        self.statistics.append_latency(time.perf_counter() - started)
        return _json(vectors)

    async def info(self) -> dict[str, Any]:
        """`GET /info`: TEI's description of the model and the router's limits."""
        from megaservice import __version__

        return {
            "model_id": self.backend.model_id,
            "model_sha": None,
            "model_dtype": self.backend.model_dtype,
            "model_type": {"embedding": {"pooling": "mean"}},
            "max_concurrent_requests": 512,
            "max_input_length": self.backend.max_input_length,
            "max_batch_tokens": self.max_batch * self.backend.max_input_length,
            "max_batch_requests": self.max_batch,
            "max_client_batch_size": self.max_inputs,
            "auto_truncate": True,
            "tokenization_workers": 1,
            "version": __version__,
            "sha": None,
            "docker_label": None,
            "backend": self.backend.name,
            "dimension": self.backend.dimension,
        }

    async def models(self) -> dict[str, Any]:
        """`GET /v1/models`: the one model served."""
        model = {"id": self.backend.model_id, "object": "model", "created": 0, "owned_by": "megaservice"}
        return {"object": "list", "data": [model]}


def create_service(settings: EmbeddingSettings | None = None, backend: EmbeddingBackend | None = None) -> MicroService:
    """The embedding service over `backend` (default: the one `settings` name; settings from the environment)."""
    if settings is None:
        settings = EmbeddingSettings.from_env()
    if backend is None:
        backend = load_backend(settings)
    service = MicroService(
        "embedding",
        service_type=ServiceType.EMBEDDING,
        host=settings.host,
        port=settings.port,
        endpoint="/v1/embeddings",
        input_datatype=EmbeddingRequest,
        output_datatype=EmbeddingResponse,
        description=f"Text embeddings ({backend.name} backend): OPEA's /v1/embeddings and TEI's /embed and /info",
    )
    routes = _Routes(backend, settings)
    service.add_route("/v1/embeddings", routes.embeddings, methods=["POST"], body_model=EmbeddingRequest)
    service.add_route("/embed", routes.tei_embed, methods=["POST"])
    service.add_route("/", routes.tei_embed, methods=["POST"])
    service.add_route("/info", routes.info, methods=["GET"])
    service.add_route("/v1/models", routes.models, methods=["GET"])
    service.add_startup_event(backend.start)
    service.add_readiness_check(backend.ready)
    service.on_shutdown(backend.aclose)
    return service
