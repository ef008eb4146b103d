"""The reranking service: OPEA's `/v1/reranking`, and TEI's own routes, so it stands in for either.

    POST /v1/reranking   OPEA's shapes (see `inputs`): the `top_n` best documents, best first;
                         a SearchedDoc becomes the LLMParamsDoc whose `documents` fill the RAG prompt
    POST /rerank         TEI: {"query", "texts", "raw_scores"?, "return_text"?, "truncate"?}
                         → [{"index", "score", "text"?}] for every text, best first
    GET  /info           TEI's model description (`model_id`, `max_client_batch_size`, ...)

The retrieved documents' metadata (source, chunk index, page) survives reranking: every answer of
`/v1/reranking` carries `reranked_docs`, `[{"text", "score", "metadata"}]` best first (OPEA's
RerankingResponse has that field; the LLMParamsDoc gets it besides `documents`, which stay the plain
texts OPEA's LLM service reads; both LLM services ignore it, a megaservice cites sources from it).
Ties keep the retriever's order. A request has at most `RERANK_MAX_TEXTS` documents (more is a
413). On TEI's routes a refusal has TEI's body, `{"error", "error_type"}`.
"""

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from megaservice.components.reranker.backend import RerankerBackend, RerankerSettings, load_backend
from megaservice.components.reranker.inputs import (
    Document,
    RerankRequest,
    Shape,
    read_reranking_request,
    read_tei_request,
)
from megaservice.constants import ServiceType
from megaservice.exceptions import InputError, UpstreamProtocolError
from megaservice.microservice import MicroService
from megaservice.protocol.docs import LLMParamsDoc, SearchedDoc
from megaservice.statistics import BaseStatistics, statistics_dict

__all__ = ["STATISTICS_NAME", "create_service", "ranked"]

STATISTICS_NAME = "opea_service@reranking"
"""The name of the service's latencies in `/v1/statistics` (OPEA's)."""

_JSON = "application/json"


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type=_JSON)


def _tei_error(exc: InputError) -> Response:
    error_type = "Empty" if exc.status_code == 400 else "Validation"
    return _json({"error": str(exc), "error_type": error_type}, exc.status_code)


def ranked(scores: list[float]) -> list[int]:
    """The positions of `scores`, highest score first (equal scores keep their order)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


class _Routes:
    """The handlers, over one backend."""

    def __init__(self, backend: RerankerBackend, settings: RerankerSettings) -> None:
        self.backend = backend
        self.max_texts = settings.max_texts
        self.statistics = statistics_dict.setdefault(STATISTICS_NAME, BaseStatistics())

    async def _score(
        self, query: str, texts: list[str], *, raw: bool = False, truncate: bool | None = None
    ) -> list[float]:
        scores = await self.backend.score(query, texts, raw=raw, truncate=truncate)
        if len(scores) != len(texts):  # a backend's bug, said as the node's
            raise UpstreamProtocolError(
                f"{self.backend.name} gave {len(scores)} scores for {len(texts)} texts", node=self.backend.name, url=""
            )
        return scores

    async def reranking(self, request: Request) -> Response:
        """`POST /v1/reranking`: OPEA's shapes."""
        started = time.perf_counter()
        asked = read_reranking_request(await request.json(), self.max_texts)
        best: list[tuple[Document, float]] = []
        if asked.documents:
            scores = await self._score(asked.query, [doc.text for doc in asked.documents])
            best = [(asked.documents[i], scores[i]) for i in ranked(scores)[: asked.top_n]]
        answer = _answer(asked, best)
        self.statistics.append_latency(time.perf_counter() - started)
        return _json(answer)

    async def tei_rerank(self, request: Request) -> Response:
        """`POST /rerank`: TEI's rerank route."""
        started = time.perf_counter()
        try:
            asked = read_tei_request(await request.json(), self.max_texts)
        except InputError as exc:
            return _tei_error(exc)
        scores = await self._score(asked.query, asked.texts, raw=asked.raw_scores, truncate=asked.truncate)
        ranks: list[dict[str, Any]] = []
        for i in ranked(scores):
            rank: dict[str, Any] = {"index": i, "score": scores[i]}
            if asked.return_text:
                rank["text"] = asked.texts[i]
            ranks.append(rank)
        self.statistics.append_latency(time.perf_counter() - started)
        return _json(ranks)

    async def info(self) -> dict[str, Any]:
        """`GET /info`: TEI's description of a reranker, and this service's limits."""
        from megaservice import __version__

        return {
            "model_id": self.backend.model_id,
            "model_sha": None,
            "model_dtype": "float32",
            "model_type": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
            "max_concurrent_requests": 512,
            "max_input_length": self.backend.max_input_length,
            "max_client_batch_size": self.max_texts,
            "auto_truncate": True,
            "tokenization_workers": 1,
            "version": __version__,
            "sha": None,
            "docker_label": None,
            "backend": self.backend.name,
        }


def _reranked_docs(best: list[tuple[Document, float]]) -> list[dict[str, Any]]:
    return [{"text": doc.text, "score": score, "metadata": doc.metadata} for doc, score in best]


def _answer(asked: RerankRequest, best: list[tuple[Document, float]]) -> dict[str, Any]:
    """The answer in the shape matching the request's."""
    texts = [doc.text for doc, _ in best]
    if asked.shape is Shape.SEARCHED_DOC:
        answer = LLMParamsDoc(query=asked.query, documents=texts).model_dump()
        answer["reranked_docs"] = _reranked_docs(best)
        return answer
    if asked.shape is Shape.RERANKING_REQUEST:
        return {"reranked_docs": _reranked_docs(best)}
    assert asked.chat is not None
    answer = asked.chat.model_dump()
    answer["retrieved_docs"] = asked.sent_docs
    answer["reranked_docs"] = _reranked_docs(best)
    answer["documents"] = texts
    return answer


def create_service(settings: RerankerSettings | None = None, backend: RerankerBackend | None = None) -> MicroService:
    """The reranking service over `backend` (default: the one `settings` name; settings from the environment)."""
    if settings is None:
        settings = RerankerSettings.from_env()
    if backend is None:
        backend = load_backend(settings)
    service = MicroService(
        "reranking",
        service_type=ServiceType.RERANK,
        host=settings.host,
        port=settings.port,
        endpoint="/v1/reranking",
        input_datatype=SearchedDoc,
        output_datatype=LLMParamsDoc,
        description=f"Reranking ({backend.name} backend): OPEA's /v1/reranking and TEI's /rerank and /info",
    )
    routes = _Routes(backend, settings)
    service.add_route("/v1/reranking", routes.reranking, methods=["POST"], body_model=SearchedDoc)
    service.add_route("/rerank", routes.tei_rerank, methods=["POST"])
    service.add_route("/info", routes.info, methods=["GET"])
    service.add_startup_event(backend.start)
    service.add_readiness_check(backend.ready)
    service.on_shutdown(backend.aclose)
    return service
