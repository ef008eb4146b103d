"""The retriever service: OPEA's `POST /v1/retrieval` over the store dataprep fills.

    POST /v1/retrieval    EmbedDoc → SearchedMultimodalDoc; RetrievalRequest → RetrievalResponse;
                          ChatCompletionRequest → the same request with `retrieved_docs` and `documents`

Each document's metadata has its `source` (file name), `chunk_index`, what dataprep recorded
(`page`, ...), and the search's `score` and `distance`, so the megaservice can cite its sources.
Bad input is a 422 saying what is wrong; the database down, a 503 naming it (`"node": "postgres"`);
a collection built with another embedding model than `RETRIEVER_EMBEDDING_MODEL`, a 409 naming both.
Each search's time and documents are recorded by search type (`.metrics`).
"""

import random
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from megaservice import tracing
from megaservice.components._store.types import Hit
from megaservice.components.retriever.backend import RetrieverBackend, RetrieverSettings, load_backend
from megaservice.components.retriever.inputs import Asked, Shape, read_request
from megaservice.components.retriever.metrics import retrieval_metrics
from megaservice.constants import ServiceType
from megaservice.exceptions import InputError
from megaservice.microservice import MicroService
from megaservice.protocol.docs import EmbedDoc, SearchedMultimodalDoc
from megaservice.statistics import BaseStatistics, statistics_dict

__all__ = ["STATISTICS_NAME", "create_service"]

STATISTICS_NAME = "opea_service@retrievers"
"""The name of the service's latencies in `/v1/statistics` (OPEA's)."""


def _new_id() -> str:
    """A document id as OPEA's documents have them (32 hex digits)."""
    return f"{random.getrandbits(128):032x}"


def _metadata(hit: Hit, image: str | None) -> dict[str, Any]:
    meta = {
        **hit.metadata,
        "source": hit.source,
        "chunk_index": hit.index,
        "score": hit.score,
        "distance": hit.distance,
    }
    if image is not None:
        meta["b64_img_str"] = image
    return meta


def answer(asked: Asked, hits: list[Hit]) -> dict[str, Any]:
    """The answer in the shape of the request (module docstring)."""
    if asked.shape is Shape.EMBED_DOC:
        return {
            "id": _new_id(),
            "retrieved_docs": [{"id": _new_id(), "text": hit.text, "downstream_black_list": []} for hit in hits],
            "initial_query": asked.search.text,
            "top_n": 1,
            "metadata": [_metadata(hit, asked.image) for hit in hits],
        }
    docs = [{"text": hit.text, "metadata": _metadata(hit, None)} for hit in hits]
    if asked.shape is Shape.RETRIEVAL:
        return {"retrieved_docs": docs}
    assert asked.chat is not None
    return {**asked.chat.model_dump(), "retrieved_docs": docs, "documents": [hit.text for hit in hits]}


class _Routes:
    def __init__(self, backend: RetrieverBackend) -> None:
        self.backend = backend
        self.statistics = statistics_dict.setdefault(STATISTICS_NAME, BaseStatistics())
        self.metrics = retrieval_metrics()

    async def retrieval(self, request: Request) -> Response:
        """`POST /v1/retrieval`."""
        started = time.perf_counter()
        try:
            body = orjson.loads(await request.body() or b"null")
        except orjson.JSONDecodeError as exc:
            raise InputError(f"the body is not JSON: {exc}", status_code=422) from None
        asked = read_request(body)
        search = asked.search
        with tracing.span("retrieval.search", k=search.k, search_type=search.search_type) as work:
            searched = time.perf_counter()
            hits = await self.backend.search(search)
            metrics = self.metrics
            metrics.latency.labels(search.search_type).observe(time.perf_counter() - searched)
            metrics.documents.labels(search.search_type).observe(len(hits))
            work.set("megaservice.retrieved_docs", len(hits))
            work.content("megaservice.input", search.text)
        body = orjson.dumps(answer(asked, hits))
        self.statistics.append_latency(time.perf_counter() - started)
        return Response(body, media_type="application/json")


def create_service(settings: RetrieverSettings | None = None, backend: RetrieverBackend | None = None) -> MicroService:
    """The retriever over `backend` (default: the one `settings` name; settings from the environment)."""
    if settings is None:
        settings = RetrieverSettings.from_env()
    if backend is None:
        backend = load_backend(settings)
    service = MicroService(
        "retriever",
        service_type=ServiceType.RETRIEVER,
        host=settings.host,
        port=settings.port,
        endpoint="/v1/retrieval",
        input_datatype=EmbedDoc,
        output_datatype=SearchedMultimodalDoc,
        description=f"Retrieval over {backend.name}: OPEA's /v1/retrieval (similarity, thresholds, mmr, hybrid)",
    )
    routes = _Routes(backend)
    service.add_route("/v1/retrieval", routes.retrieval, methods=["POST"], body_model=EmbedDoc)
    service.add_startup_event(backend.start)
    service.add_readiness_check(backend.ready)
    service.on_shutdown(backend.aclose)
    return service
