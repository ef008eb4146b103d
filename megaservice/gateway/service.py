"""`create_gateway(pipeline)`: the megaservice of a pipeline, its routes over the orchestrator its flow builds.

    POST /v1/chatqna              OPEA's ChatQnA: its request, `data: b'…'` stream framing   (route `chatqna`)
    POST /v1/chat/completions     OpenAI's chat API, streamed or not, with the answer's sources (route `openai`)
    GET  /v1/models               the one model this megaservice answers as: the pipeline's name
    GET  /                        the chat page, and its /static/app.js, /static/style.css   (route `ui`)
    POST /v1/dataprep/ingest|get|delete   passed to the pipeline's dataprep (`megaservice.dataprep`)

Plus every service's probes (`/v1/health_check`, `/v1/ready`, `/metrics`, ...). What the requests
and answers hold: `megaservice.gateway.request` and `megaservice.gateway.answers`.

Failures: a request that is wrong or over a limit, a 4xx saying which (`request`); a node that
fails, the core's 502/503/504 naming it (`megaservice.exceptions`); a request the LLM refuses
(its 4xx: the context is too long, a parameter it does not take), that 4xx as the LLM service
answered it, with OpenAI's `error` object added when it has none. Every 4xx of the chat routes
has `detail` and OpenAI's `error` (a body that is not JSON, too large, ... too).
"""

import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from megaservice._pipeline.plan import node_label
from megaservice.client import UpstreamClient
from megaservice.constants import ServiceRoleType, ServiceType
from megaservice.exceptions import ConfigurationError, InputError, UpstreamStatusError
from megaservice.gateway import answers
from megaservice.gateway.dataprep import DATAPREP_ROUTES, DataprepProxy
from megaservice.gateway.flow import GatewayOrchestrator
from megaservice.gateway.page import ASSETS, Page
from megaservice.gateway.request import read_turn
from megaservice.gateway.settings import GatewaySettings
from megaservice.gateway.turn import Framing, Turn
from megaservice.microservice import MicroService
from megaservice.pipeline.builder import build_orchestrator
from megaservice.pipeline.model import Pipeline
from megaservice.protocol.docs import LLMParams
from megaservice.responses import StreamingResponse
from megaservice.settings import Settings

__all__ = ["create_gateway"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

_NOT_RELAYED = frozenset({401, 403, 407})
"""LLM 4xx statuses that mean the pipeline's own credentials are wrong: a 502, not the client's fault."""


def create_gateway(
    pipeline: Pipeline,
    settings: Settings | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    gateway_settings: GatewaySettings | None = None,
    client: UpstreamClient | None = None,
) -> MicroService:
    """The megaservice of `pipeline`: a `MicroService` on its port (or `port`) with the routes it enables.

    `settings` (default: the environment's) are the service's and its orchestrator's; `client`
    the one its nodes are called with (default: the process's pooled client). Nothing is called
    until it serves.

    Raises:
        ConfigurationError: the pipeline enables the chat page without the OpenAI route the page uses.
    """
    settings = settings if settings is not None else Settings.from_env()
    options = gateway_settings if gateway_settings is not None else GatewaySettings.from_env()
    spec = pipeline.megaservice
    routes = set(spec.routes)
    if "ui" in routes and "openai" not in routes:
        raise ConfigurationError("megaservice.routes: the chat page (`ui`) needs the OpenAI route (`openai`)")
    orchestrator = GatewayOrchestrator(settings=settings, client=client)
    build_orchestrator(pipeline, orchestrator)
    service = MicroService(
        pipeline.name,
        service_role=ServiceRoleType.MEGASERVICE,
        service_type=ServiceType.GATEWAY,
        host=host if host is not None else spec.host,
        port=port if port is not None else spec.port,
        endpoint="/v1/chatqna",
        description=pipeline.description or f"The {pipeline.name} megaservice",
        settings=settings,
    )
    chat = _Chat(pipeline, settings, orchestrator)
    if "chatqna" in routes:
        service.add_route("/v1/chatqna", chat.handler("opea"), methods=["POST"], body_model=_BODY_MODEL)
    if "openai" in routes:
        service.add_route("/v1/chat/completions", chat.handler("openai"), methods=["POST"], body_model=_BODY_MODEL)
        service.add_route("/v1/models", _models(pipeline.name), methods=["GET"])
    proxy = None
    if spec.dataprep is not None:
        proxy = DataprepProxy(
            pipeline.services[spec.dataprep].base_url(),
            node=spec.dataprep,
            timeout=options.dataprep_timeout,
            max_answer=settings.client.max_response_bytes,
        )
        for route in DATAPREP_ROUTES:
            service.add_route(f"/v1/dataprep/{route}", _forward(proxy, route), methods=["POST"])
        service.on_shutdown(proxy.aclose)
    if "ui" in routes:
        page = Page({"name": pipeline.name, "description": pipeline.description, "dataprep": proxy is not None})
        service.add_route("/", page.serve_index, methods=["GET"])
        for name in ASSETS:
            service.add_route(f"/static/{name}", page.asset_handler(name), methods=["GET"])
    return service


_BODY_MODEL = "megaservice.protocol.openai:ChatCompletionRequest"


class _Chat:
    """The chat routes: a request read into a `Turn`, run through the orchestrator, answered in its framing."""

    def __init__(self, pipeline: Pipeline, settings: Settings, orchestrator: GatewayOrchestrator) -> None:
        self.name = pipeline.name
        self.limits = settings.input_limits
        self.orchestrator = orchestrator
        self.llm_nodes = frozenset(  # as errors name them (`UpstreamError.node`)
            node_label(node) for node in orchestrator.services.values() if node.service_type == ServiceType.LLM
        )
        model = pipeline.megaservice.model
        self.params = {stream: LLMParams(stream=stream, model=model) for stream in (True, False)}

    def handler(self, framing: Framing) -> Handler:
        async def chat(request: Request) -> Response:
            try:
                turn = read_turn(await request.json(), framing, self.limits, self.name)
            except InputError as exc:
                return _refused(exc)
            except ValueError as exc:  # not JSON, not UTF-8: the core's 400, with OpenAI's `error` as well
                return _refused(InputError(f"request body is not valid JSON: {exc}", status_code=400))
            return await self.answer(turn)

        return chat

    async def answer(self, turn: Turn) -> Response:
        """Run the pipeline for `turn`; its answer (a stream, or JSON)."""
        try:
            results, graph = await self.orchestrator.schedule(
                {"text": turn.question}, llm_parameters=self.params[turn.stream], turn=turn
            )
        except UpstreamStatusError as exc:
            status = exc.upstream_status
            if exc.node in self.llm_nodes and 400 <= status < 500 and status not in _NOT_RELAYED:
                return _relayed(exc.body, status)
            raise
        if turn.refusal is not None:
            if turn.stream:
                return StreamingResponse(_iterate(answers.refusal_stream(turn)))
            return _json(answers.refusal(turn))
        if turn.stream:
            for result in results.values():
                if isinstance(result, StreamingResponse):
                    return result
        last = next((results[leaf] for leaf in reversed(graph.all_leaves()) if leaf in results), None)
        if turn.stream:  # a flow without an LLM: its last answer's text, as a stream
            return StreamingResponse(_iterate(answers.text_stream(turn, answers.completion_text(last))))
        return _json(answers.answer(turn, last))


def _models(name: str) -> Handler:
    body = orjson.dumps(
        {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": int(time.time()), "owned_by": "megaservice"}],
        }
    )

    async def models(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return models


def _forward(proxy: DataprepProxy, route: str) -> Handler:
    async def forward(request: Request) -> Response:
        return await proxy.forward(request, route)

    return forward


def _refused(exc: InputError) -> Response:
    """A refused request's answer: every megaservice error's `detail`, and OpenAI's `error` (its clients show it)."""
    message = str(exc)
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return _json({"detail": message, "error": error}, exc.status_code)


def _relayed(body: str | bytes, status: int) -> Response:
    """The LLM's 4xx as it answered it, with OpenAI's `error` added when it has none (a pydantic `detail`)."""
    try:
        content = orjson.loads(body)
    except orjson.JSONDecodeError:
        content = None
    if not isinstance(content, dict) or "error" in content or "detail" not in content:
        return Response(body, status_code=status, media_type="application/json")
    detail = content["detail"]
    if isinstance(detail, list):  # FastAPI's validation errors: `stop: Input should be a valid string`
        message = "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', ()) if p != 'body')}: {item.get('msg')}"
            if isinstance(item, dict)
            else str(item)
            for item in detail
        )
    else:
        message = str(detail)
    content["error"] = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return _json(content, status)


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


async def _iterate(items: Iterable[bytes | str]) -> AsyncIterator[bytes | str]:
    for item in items:
        yield item
