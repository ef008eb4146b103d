"""The LLM microservice (OPEA's `opea_service@llm`, port 9000): OpenAI's chat API over an OpenAI-compatible server.

    POST /v1/chat/completions   OpenAI's chat request, or OPEA's LLMParamsDoc / SearchedDoc
                                (`megaservice.components.llm.request`); the model server's answer as it
                                is: a chat completion, or its SSE stream relayed event by event (`.stream`)
    GET  /v1/models             the model server's model list (cached 30 s)
    GET  /v1/ready              503 until the model server answers its model list (cached: see `.models`)

Failures:

    a request that is wrong                    422 saying what is wrong (before the model server is called)
    the model server refuses it (4xx)          its status and body as it answered them (an unknown
                                               model's 404, a 429, a context-length 400, ...); a 401/403
                                               is this service's key being wrong: 502
    the model server is down / too slow        502 / 504 naming it (`"node": "model-server"`)
    ... after the stream started               an `event: error` event with that body, then the end
"""

import logging
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from megaservice import tracing
from megaservice.client import dumps
from megaservice.components.llm.backend import LLMBackend, LLMSettings, load_backend
from megaservice.components.llm.request import build_request
from megaservice.components.llm.stream import UpstreamStream
from megaservice.constants import ServiceType
from megaservice.exceptions import UpstreamStatusError
from megaservice.microservice import MicroService
from megaservice.statistics import BaseStatistics, statistics_dict

__all__ = ["STATISTICS", "create_service"]

logger = logging.getLogger(__name__)

STATISTICS = "opea_service@llm"
"""The name the service's latencies are kept under in `/v1/statistics` (OPEA's)."""

_NOT_RELAYED = frozenset({401, 403, 407})
"""Upstream 4xx statuses that say this service's own credentials are wrong: a 502, not the client's fault."""


def create_service(settings: LLMSettings | None = None, backend: LLMBackend | None = None) -> MicroService:
    """The LLM service over `backend` (default: `load_backend(settings)`); nothing is called until it runs."""
    settings = settings if settings is not None else LLMSettings.from_env()
    backend = backend if backend is not None else load_backend(settings)
    service = MicroService(
        "llm",
        service_type=ServiceType.LLM,
        host=settings.host,
        port=settings.port,
        endpoint="/v1/chat/completions",
        description="OpenAI chat completions from an OpenAI-compatible model server",
    )
    statistics = statistics_dict.setdefault(STATISTICS, BaseStatistics())  # one per process, as OPEA's
    model = settings.model_id

    async def chat_completions(request: Request) -> Response:
        started = time.monotonic()
        upstream = build_request(await request.json(), model)
        body = dumps(upstream.body)
        try:
            if upstream.stream:
                answer = await backend.stream(body)
                return UpstreamStream(
                    answer, backend.node, backend.url, started=started, on_end=statistics.append_latency
                )
            with tracing.span("llm.generate", {"gen_ai.request.model": upstream.body.get("model") or ""}) as work:
                content_type, answer_body = await backend.complete(body)
                if work.recording:
                    work.content("gen_ai.prompt", upstream.body.get("messages"))
                    _usage(work, answer_body)
        except UpstreamStatusError as exc:
            if 400 <= exc.upstream_status < 500 and exc.upstream_status not in _NOT_RELAYED:
                return _relayed(exc)
            raise
        statistics.append_latency(time.monotonic() - started)
        return Response(answer_body, media_type=content_type or "application/json")

    async def list_models(request: Request) -> Response:
        return Response(await backend.models(), media_type="application/json")

    service.add_route("/v1/chat/completions", chat_completions, methods=["POST"], body_model=_BODY_MODEL)
    service.add_route("/v1/models", list_models, methods=["GET"])
    service.add_readiness_check(backend.ready)
    service.on_shutdown(backend.aclose)
    return service


_BODY_MODEL = "megaservice.protocol.openai:ChatCompletionRequest"


def _usage(work: tracing.NoSpan, answer_body: bytes) -> None:
    """Token counts (and, content tracing on, the answer) of a chat completion, on its span."""
    try:
        answer = orjson.loads(answer_body)
    except orjson.JSONDecodeError:
        return
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if isinstance(usage, dict):
        work.set("gen_ai.usage.input_tokens", usage.get("prompt_tokens", 0))
        work.set("gen_ai.usage.output_tokens", usage.get("completion_tokens", 0))
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        work.content("gen_ai.completion", (choices[0].get("message") or {}).get("content", ""))


def _relayed(exc: UpstreamStatusError) -> Response:
    """The model server's 4xx answer, passed on: the request was wrong, not the server."""
    logger.info("%s refused the request with %d: %s", exc.node, exc.upstream_status, exc.body[:200])
    try:
        body: Any = orjson.loads(exc.body)
    except orjson.JSONDecodeError:
        body = {"object": "error", "message": exc.body, "code": exc.upstream_status, "node": exc.node}
    return Response(orjson.dumps(body), status_code=exc.upstream_status, media_type="application/json")
