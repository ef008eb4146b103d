"""The model server (port 8008): OpenAI's chat API over a model in process, standing in for the seeds' Ollama.

    POST /v1/chat/completions   OpenAI's chat request (`request`): a chat completion, or (stream: true)
                                server-sent events, one per token, as they are generated
    GET  /v1/models             the model served (id, context length, file); 503 until it is loaded, so
                                the readiness of an LLM service in front (which asks for this list) follows
    GET  /v1/models/{model}     the same, for one model (OpenAI's retrieve; 404 for another name)
    GET  /v1/ready              503 until the model is loaded (it loads in a worker thread at startup)

Errors have OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`, plus `detail` as
every megaservice service answers):

    a request that is wrong, or that cannot fit the context      400 saying what is wrong
    a request naming another model (LLM_SERVER_REFUSE_OTHER_MODELS) 404 model_not_found
    the model is still loading, or too many requests wait          503
    the generation fails after the stream started                 an `event: error` event, then the end

A client that leaves (closes the connection) stops its generation at the next token.
"""

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from megaservice._compat import error_frame
from megaservice.components.llm_server.backend import Generation, LLMServerBackend, LLMServerSettings, load_backend
from megaservice.components.llm_server.request import ChatRequest, read_chat_request
from megaservice.constants import ServiceType
from megaservice.exceptions import InputError
from megaservice.microservice import MicroService
from megaservice.responses import StreamingResponse
from megaservice.statistics import BaseStatistics, statistics_dict

__all__ = ["STATISTICS", "create_service"]

logger = logging.getLogger(__name__)

STATISTICS = "opea_service@llm_server"
"""The name the server's latencies are kept under in `/v1/statistics`."""

_JSON = "application/json"
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_DONE = b"data: [DONE]\n\n"
_ERROR_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 503: "server_busy"}


def create_service(settings: LLMServerSettings | None = None, backend: LLMServerBackend | None = None) -> MicroService:
    """The model server over `backend` (default: `load_backend(settings)`); the model loads when it starts."""
    settings = settings if settings is not None else LLMServerSettings.from_env()
    backend = backend if backend is not None else load_backend(settings)
    service = MicroService(
        "llm-server",
        service_type=ServiceType.LLM,
        host=settings.host,
        port=settings.port,
        endpoint="/v1/chat/completions",
        description="OpenAI chat completions from a GGUF model run in process by llama.cpp",
    )
    routes = _Routes(backend, refuse_other_models=settings.refuse_other_models)
    service.add_route("/v1/chat/completions", routes.chat_completions, methods=["POST"], body_model=_BODY_MODEL)
    service.add_route("/v1/models", routes.models, methods=["GET"])
    service.add_route("/v1/models/{model:path}", routes.model, methods=["GET"])
    service.add_startup_event(backend.start)
    service.add_readiness_check(backend.ready)
    service.on_shutdown(backend.aclose)
    return service


_BODY_MODEL = "megaservice.protocol.openai:ChatCompletionRequest"


class _Routes:
    """The handlers, over one backend."""

    def __init__(self, backend: LLMServerBackend, *, refuse_other_models: bool) -> None:
        self.backend = backend
        self.refuse_other_models = refuse_other_models
        self.statistics = statistics_dict.setdefault(STATISTICS, BaseStatistics())

    async def chat_completions(self, request: Request) -> Response:
        """`POST /v1/chat/completions`."""
        started = time.monotonic()
        try:
            chat = read_chat_request(await request.json())
            if chat.model is not None and chat.model != self.backend.model_id and self.refuse_other_models:
                return _error(404, f"The model `{chat.model}` does not exist.", code="model_not_found", param="model")
            generation = await self.backend.generate(chat)
        except InputError as exc:
            return _error(exc.status_code, str(exc))
        except orjson.JSONDecodeError as exc:
            return _error(400, f"request body is not valid JSON: {exc}")
        answer = _Answer(self.backend.model_id)
        if chat.stream:
            return StreamingResponse(self._events(generation, chat, answer, started), headers=_SSE_HEADERS)
        pieces: list[str] = []
        try:
            async for batch in generation:
                pieces.extend(batch)
        finally:
            generation.close()  # a no-op once it ended; stops it if this request was cancelled
        self.statistics.append_latency(time.monotonic() - started)
        return Response(answer.completion("".join(pieces), generation), media_type=_JSON)

    async def _events(
        self, generation: Generation, chat: ChatRequest, answer: "_Answer", started: float
    ) -> AsyncIterator[bytes]:
        """The SSE body: the role, a chunk per piece of text, the finish reason, the usage if asked, `[DONE]`."""
        first: float | None = None
        try:
            yield answer.chunk(b'{"role":"assistant","content":""}')
            async for batch in generation:
                if first is None:
                    first = time.monotonic() - started
                yield b"".join(answer.chunk(b'{"content":' + orjson.dumps(piece) + b"}") for piece in batch)
            end = answer.chunk(b"{}", generation.finish_reason or "stop")
            if chat.include_usage:
                end += answer.usage_chunk(generation)
            yield end + _DONE
            self.statistics.append_latency(time.monotonic() - started, first)
        except Exception as exc:  # the stream has started: the failure is told in-band
            logger.exception("generation failed after the stream started")
            message = f"generation failed: {type(exc).__name__}: {exc}"
            body: dict[str, Any] = {"object": "error", "type": "internal_error", "message": message, "code": 500}
            body["error"] = {"message": message, "type": "server_error", "param": None, "code": None}
            yield error_frame(body)
        finally:
            generation.close()

    async def models(self, request: Request) -> Response:
        """`GET /v1/models`: the one model served (503 until it is loaded: an LLM service's readiness follows)."""
        problem = self._not_loaded()
        if problem is not None:
            return _error(503, problem)
        return Response(orjson.dumps({"object": "list", "data": [self._card()]}), media_type=_JSON)

    async def model(self, request: Request) -> Response:
        """`GET /v1/models/{model}`: the model served, or OpenAI's 404."""
        name = request.path_params["model"]
        if name != self.backend.model_id:
            return _error(404, f"The model `{name}` does not exist.", code="model_not_found", param="model")
        return Response(orjson.dumps(self._card()), media_type=_JSON)

    def _not_loaded(self) -> str | None:
        """Why the model cannot answer yet (`None`: it can)."""
        try:
            if self.backend.ready():
                return None
        except Exception as exc:  # noqa: BLE001  # the load's failure, told to the client
            return f"the model could not be loaded: {exc}"
        return "the model is loading, try again shortly"

    def _card(self) -> dict[str, Any]:
        return {
            "id": self.backend.model_id,
            "object": "model",
            "created": 0,
            "owned_by": "megaservice",
            "meta": self.backend.describe(),
        }


class _Answer:
    """The JSON of one answer's chunks and completion (the stream's chunks built around a fixed prefix)."""

    __slots__ = ("_created", "_id", "_model", "_prefix")

    def __init__(self, model: str) -> None:
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._created = int(time.time())
        self._model = model
        head = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": model}
        self._prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":[{"index":0,"delta":'

    def chunk(self, delta: bytes, finish_reason: str | None = None) -> bytes:
        """One SSE chunk event with `delta` (JSON) and `finish_reason`."""
        reason = b"null" if finish_reason is None else orjson.dumps(finish_reason)
        return self._prefix + delta + b',"logprobs":null,"finish_reason":' + reason + b"}]}\n\n"

    def usage_chunk(self, generation: Generation) -> bytes:
        """The last chunk of a stream with `include_usage`: no choices, the token counts."""
        body = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [],
            "usage": _usage(generation),
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def completion(self, text: str, generation: Generation) -> bytes:
        """The whole chat completion."""
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": generation.finish_reason or "stop"}
        body = {
            "id": self._id,
            "object": "chat.completion",
            "created": self._created,
            "model": self._model,
            "choices": [choice],
            "usage": _usage(generation),
        }
        return orjson.dumps(body)


def _usage(generation: Generation) -> dict[str, int]:
    prompt, completion = generation.prompt_tokens, generation.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _error(status: int, message: str, *, code: str | None = None, param: str | None = None) -> Response:
    """OpenAI's error body (and megaservice's `detail`)."""
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}, "detail": message}
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON)
