"""`ServiceApp`: the FastAPI app of a service, with a direct path for routes that need no FastAPI machinery.

A route whose handler is `async def handler(request: Request)` (or takes nothing) and returns a
dict, a model or a `Response` needs no dependency solving, no body validation and no response
model: FastAPI would only wrap it in its middleware stack (errors, telemetry, body limit, CORS,
exception handlers), each layer wrapping every `send` of a stream. For those routes the app calls
the handler itself and writes the answer straight to the server, and keeps the behaviour a client
sees: the same JSON, the app's exception handlers, 500 on a bug.

FastAPI keeps serving everything else, and everything whenever the direct path could differ:
a request with an `Origin` header (CORS), a middleware the user added, a body size limit, a path
under a `root_path`. The route is registered with FastAPI too, so it is in the OpenAPI schema.
"""

import asyncio
import importlib
import inspect
import logging
import time
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, params
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from megaservice.exceptions import InputError
from megaservice.limits import Limits
from megaservice.metrics import get_http_metrics

__all__ = ["InvalidJSONBodyError", "ServiceApp"]

logger = logging.getLogger("megaservice.app")

_JSON_HEADER = (b"content-type", b"application/json")
_ORIGIN = b"origin"


class InvalidJSONBodyError(orjson.JSONDecodeError):
    """The request body is not JSON (a `json.JSONDecodeError`, so handlers that catch that still do)."""


class _Request(Request):
    """Starlette's `Request`, reading the body without a generator per request and parsing JSON with orjson.

    A body that is not JSON raises `InvalidJSONBodyError`.
    """

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            if self._stream_consumed:
                raise RuntimeError("Stream consumed")
            self._stream_consumed = True
            chunks = []
            while True:
                message = await self._receive()
                if message["type"] == "http.request":
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
                elif message["type"] == "http.disconnect":
                    self._is_disconnected = True
                    raise ClientDisconnect
            self._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InvalidJSONBodyError(exc.msg, exc.doc, exc.pos) from None
        return self._json


class _DirectRoute:
    __slots__ = ("app", "endpoint", "takes_request")

    def __init__(self, app: "ServiceApp", endpoint: Callable[..., Awaitable[Any]], takes_request: bool) -> None:
        self.app = app
        self.endpoint = endpoint
        self.takes_request = takes_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.app
        request = _Request(scope, receive, send)
        try:
            result = await (self.endpoint(request) if self.takes_request else self.endpoint())
            if not isinstance(result, Response):
                body = _dumps(result)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-length", str(len(body)).encode()), _JSON_HEADER],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        except Exception as exc:  # noqa: BLE001  # the app's handlers decide; an unhandled one is a 500
            result = await self.app.error_response(request, exc)
        await result(scope, receive, send)


_DISCONNECT: Message = {"type": "http.disconnect"}
WATCHED = "megaservice.disconnect_watch"
"""Scope key set while the app watches for the client's disconnect (responses need not watch themselves)."""
SERVER_SEND = "megaservice.server_send"
"""Scope key of the server's own `send`, set when only the service stands between the server and the response.

A stream may write the chunks in the middle of its body with it, one coroutine less per chunk; its
start and its last chunk still go through the `send` it was given, which records the status and the end.
"""


class _Exchange:
    """One request's `send` (recording the status and length for the `http_*` metrics) and `receive`.

    Once armed with the request's task (`watch`), it also cancels that task when the client goes
    away before the answer is complete: after the request body is in, a watcher task owns the
    server's `receive` and waits for `http.disconnect`; if that comes before the last byte of the
    answer was sent, the request's task is cancelled, and with it every upstream call it is making
    (their connections are closed, which is how the nodes learn the work is no longer wanted).
    Whoever else calls `receive` after the body (a streaming response's own watcher,
    `Request.is_disconnected`) gets the disconnect from the watcher.
    """

    __slots__ = (
        "_receive",
        "_send",
        "_task",
        "_watcher",
        "cancelled",
        "complete",
        "request_bytes",
        "response_bytes",
        "status",
    )

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._task: asyncio.Task[Any] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.complete = False
        self.cancelled = False
        self.status = 0
        self.request_bytes = 0
        self.response_bytes = 0

    def watch(self, task: "asyncio.Task[Any]", receive: Receive) -> None:
        """Cancel `task` on a disconnect; read the request through `receive` (the body-limited one) from now on."""
        self._task = task
        self._receive = receive

    async def receive(self) -> Message:
        watcher = self._watcher
        if watcher is not None:
            await asyncio.shield(watcher)
            return _DISCONNECT
        message = await self._receive()
        if self._task is not None and message["type"] == "http.request" and not message.get("more_body", False):
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not message.get("more_body", False):
                self.complete = True
        elif kind == "http.response.start":
            self.status = message["status"]
            for name, value in message.get("headers", ()):
                if name == b"content-length":
                    self.response_bytes = int(value) if value.isdigit() else 0
                    break
        await self._send(message)

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if not self.complete and self._task is not None:
            self.cancelled = True
            self._task.cancel()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            # The cancelled watcher's traceback keeps its frame, which refers to this exchange: drop
            # the exchange's references to the tasks so that no reference cycle is left for the
            # garbage collector (one per request otherwise, freed only by full collections).
            self._watcher = None
        if self.cancelled and self._task is not None:
            self._task.uncancel()
        self._task = None


async def _refuse(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps({"detail": detail})
    raw = [(b"content-length", str(len(body)).encode()), _JSON_HEADER, *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _import_model(path: str) -> type[BaseModel]:
    module, _, name = path.partition(":")
    model: type[BaseModel] = getattr(importlib.import_module(module), name)
    return model


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive`, raising `InputError` (413) once the body passes `limit` bytes (bodies without a length)."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise InputError(f"request body larger than {limit} bytes", status_code=413)
        return message

    return limited


async def _input_error_response(request: Request, exc: InputError) -> Response:
    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)


async def _validation_error_response(request: Request, exc: ValidationError) -> Response:
    """A handler that validated the request itself (`ChatCompletionRequest.model_validate(data)`): 422, as FastAPI."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def _dumps(content: Any) -> bytes:
    """What FastAPI answers for a handler without a response model (`jsonable_encoder`, then JSON), faster."""
    try:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return orjson.dumps(jsonable_encoder(content), option=orjson.OPT_NON_STR_KEYS)


def _direct_form(endpoint: Callable[..., Any]) -> bool | None:
    """`True`/`False` (takes the request or nothing) if `endpoint` can take the direct path, else `None`."""
    if not inspect.iscoroutinefunction(endpoint):
        return None
    try:
        signature = inspect.signature(endpoint)
        hints = typing.get_type_hints(endpoint)
    except (TypeError, ValueError, NameError):
        return None
    if not _plain_return(hints.get("return", inspect.Signature.empty)):
        return None
    params = list(signature.parameters.values())
    if not params:
        return False
    if len(params) > 1 or params[0].default is not inspect.Parameter.empty:
        return None
    annotation = hints.get(params[0].name)
    if not (inspect.isclass(annotation) and issubclass(annotation, Request)):
        return None
    if issubclass(annotation, WebSocket) or not issubclass(_Request, annotation):
        return None
    return True


def _plain_return(annotation: Any) -> bool:
    """Whether FastAPI would infer no response model from this return annotation (or one that changes nothing)."""
    if annotation in (inspect.Signature.empty, Any, None, type(None), dict):
        return True
    if typing.get_origin(annotation) is dict:
        return True
    return inspect.isclass(annotation) and issubclass(annotation, Response)


def _build_models(*annotations: Any) -> None:
    """Build the deferred pydantic models in `annotations` (and in their type arguments).

    megaservice's documents defer building their validators to first use (`defer_build`), so a
    service holds only those of the documents it uses. FastAPI must get them built: it wraps a
    body's model in `Annotated[Model, Body(...)]`, and pydantic, building a deferred model there,
    warns that the body's alias has no effect.
    """
    pending = list(annotations)
    seen: set[int] = set()
    while pending:
        annotation = pending.pop()
        if id(annotation) in seen:
            continue
        seen.add(id(annotation))
        if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            if annotation.model_config.get("defer_build"):
                annotation.model_rebuild()
                annotation.model_config["defer_build"] = False  # or FastAPI's adapters of it defer too
            continue
        pending.extend(typing.get_args(annotation))


def _endpoint_models(endpoint: Callable[..., Any]) -> list[Any]:
    """The annotations of `endpoint` and of its dependencies (`Depends`), as far as they resolve."""
    found: list[Any] = []
    pending = [endpoint]
    while pending:
        function = pending.pop()
        try:
            found.extend(typing.get_type_hints(function, include_extras=True).values())
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError, NameError):
            continue  # FastAPI reports what it cannot resolve itself
        for parameter in parameters:
            default = parameter.default
            if isinstance(default, params.Depends) and default.dependency is not None:
                pending.append(default.dependency)
    return found


class _Route(APIRoute):
    """FastAPI's route, with the deferred documents of its endpoint and response model built first."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        _build_models(kwargs.get("response_model"), *_endpoint_models(endpoint))
        super().__init__(path, endpoint, **kwargs)


class ServiceApp(FastAPI):
    """FastAPI, plus the direct path (module docstring) for the routes added with `add_route_fast`."""

    def __init__(self, limits: Limits | None = None, *, http_metrics: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.router.route_class = _Route
        self.limits = limits if limits is not None else Limits()
        self.inflight = 0
        self._direct: dict[tuple[str, str], _DirectRoute] = {}
        self._own_middleware = 0
        self._body_models: dict[str, type[BaseModel] | str] = {}
        self.http_metrics = get_http_metrics(http_metrics)
        """Where requests are counted (`megaservice.metrics.HTTPMetrics`); `None` counts nothing."""
        self.unwatched: tuple[str, ...] = ()
        """Path prefixes served without the disconnect watcher (apps that handle disconnects themselves)."""
        self.add_exception_handler(InputError, _input_error_response)  # type: ignore[arg-type]
        self.add_exception_handler(ValidationError, _validation_error_response)  # type: ignore[arg-type]

    def seal_middleware(self) -> None:
        """Mark the middleware added so far as the service's own; any added later turns the direct path off."""
        self._own_middleware = len(self.user_middleware)

    def add_route_fast(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: Sequence[str],
        body_model: type[BaseModel] | str | None = None,
        **kwargs: Any,
    ) -> None:
        """Add a FastAPI route; serve it directly too when its handler allows (module docstring).

        `body_model` documents the JSON body of a handler that reads the `Request` itself, so the
        OpenAPI schema (and the tools generating requests from it) know what it accepts: a model,
        or `"module:Name"`, imported only when the schema is built.
        """
        if body_model is not None:
            name = body_model.rpartition(":")[2] if isinstance(body_model, str) else body_model.__name__
            self._body_models[name] = body_model
            ref = {"$ref": f"#/components/schemas/{name}"}
            body = {"required": True, "content": {"application/json": {"schema": ref}}}
            self.add_api_route(path, endpoint, methods=list(methods), openapi_extra={"requestBody": body}, **kwargs)
        else:
            self.add_api_route(path, endpoint, methods=list(methods), **kwargs)
        if set(kwargs) - {"tags", "include_in_schema", "responses", "response_model"} or kwargs.get("response_model"):
            return  # FastAPI has work to do for this route (dependencies, a response model, ...)
        form = _direct_form(endpoint)
        if form is None:
            return
        route = _DirectRoute(self, endpoint, form)
        for method in methods:
            self._direct.setdefault((method.upper(), path), route)

    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema, plus the body models of routes that read their `Request` themselves."""
        if self.openapi_schema is None and self._body_models:
            schema = super().openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, model_or_path in self._body_models.items():
                model = _import_model(model_or_path) if isinstance(model_or_path, str) else model_or_path
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for def_name, definition in model_schema.pop("$defs", {}).items():
                    components.setdefault(def_name, definition)
                components.setdefault(name, model_schema)
            return schema
        return super().openapi()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the limits; serve a direct route if the request allows it, everything else through FastAPI.

        One coroutine on purpose: each await of a handler resumes through every coroutine above it,
        so the request path keeps the layers between the server and the handler to this one.
        """
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        exchange = _Exchange(receive, send)
        started = time.perf_counter()
        target: ASGIApp | None = None
        counted = False
        try:
            admitted = await self._admit(scope, receive, exchange)
            if admitted is None:
                return
            receive, origin, public = admitted
            if not public:
                limits = self.limits
                if limits.max_inflight is not None and self.inflight >= limits.max_inflight:
                    retry = [(b"retry-after", str(limits.retry_after).encode())]
                    await _refuse(
                        exchange.send, 503, f"busy: {self.inflight} requests in flight, try again later", retry
                    )
                    return
                self.inflight += 1
                counted = True
            target = self._target(scope, origin)
            if public or (self.unwatched and scope["path"].startswith(self.unwatched)):
                await target(scope, receive, exchange.send)
            else:
                task = asyncio.current_task()
                assert task is not None
                exchange.watch(task, receive)
                scope[WATCHED] = True
                if target.__class__ is _DirectRoute:  # no middleware: nothing else needs to see the body
                    scope[SERVER_SEND] = send
                await target(scope, exchange.receive, exchange.send)
        except asyncio.CancelledError:
            if not exchange.cancelled:
                raise
            logger.info("%s %s: the client disconnected; its request was cancelled", scope["method"], scope["path"])
        except Exception:
            exchange.status = exchange.status or 500
            raise
        finally:
            if counted:
                self.inflight -= 1
            exchange.close()
            scope.pop(SERVER_SEND, None)  # the scope must not keep the server's connection (a reference cycle)
            self._count(scope, exchange, target, started)

    def _target(self, scope: Scope, origin: bool) -> ASGIApp:
        """The direct route of the request, if it can take it (module docstring); FastAPI otherwise."""
        if self._direct and not origin:
            route = self._direct.get((scope["method"], scope["path"]))
            if (
                route is not None
                and len(self.user_middleware) == self._own_middleware
                and self.max_body_size is None
                and not scope.get("root_path")
            ):
                return route
        return super().__call__

    def _count(self, scope: Scope, exchange: _Exchange, target: ASGIApp | None, started: float) -> None:
        """Record a finished request in the `http_*` series (handler: the route template, or `none`)."""
        meter = self.http_metrics
        if meter is None or not exchange.status:
            return
        if target is None or isinstance(target, _DirectRoute):
            handler = scope["path"] if (scope["method"], scope["path"]) in self._direct else "none"
        else:
            route = scope.get("route")
            handler = getattr(route, "path", "none") if route is not None else "none"
        seconds = time.perf_counter() - started
        meter.observe(
            scope["method"], exchange.status, handler, exchange.request_bytes, exchange.response_bytes, seconds
        )

    async def _admit(self, scope: Scope, receive: Receive, exchange: _Exchange) -> tuple[Receive, bool, bool] | None:
        """Check the key and the body size; `(receive, has Origin, is public)`, or `None` once refused.

        The declared body length is kept on the exchange, for the metrics.
        """
        send = exchange.send
        limits = self.limits
        origin = False
        length = credential = None
        for name, value in scope["headers"]:
            if name == _ORIGIN:
                origin = True
            elif name == b"content-length":
                length = value
                exchange.request_bytes = int(value) if value.isdigit() else 0
            elif name in (b"authorization", b"x-api-key"):
                credential = value
        public = scope["path"] in limits.public_paths or scope["method"] == "OPTIONS"
        if limits.api_keys and not public and not limits.authorized(credential):
            await _refuse(send, 401, "missing or invalid API key", [(b"www-authenticate", b"Bearer")])
            return None
        if limits.max_body_bytes is not None:
            if length is None:
                if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
                    receive = _limited(receive, limits.max_body_bytes)
            elif not length.isdigit():
                await _refuse(send, 400, "invalid Content-Length")
                return None
            elif int(length) > limits.max_body_bytes:
                await _refuse(send, 413, f"request body larger than {limits.max_body_bytes} bytes")
                return None
        return receive, origin, public

    async def error_response(self, request: Request, exc: Exception) -> Response:
        """The answer FastAPI's middleware would give for `exc` (its exception handlers, or a 500)."""
        if isinstance(exc, InvalidJSONBodyError):
            return JSONResponse({"detail": f"request body is not valid JSON: {exc}"}, status_code=400)
        handler = None
        if isinstance(exc, HTTPException):
            handler = self.exception_handlers.get(exc.status_code)
        if handler is None:
            for cls in type(exc).__mro__:
                if cls in self.exception_handlers:
                    handler = self.exception_handlers[cls]
                    break
        if handler is None:
            handler = self.exception_handlers.get(500)
        if handler is None:
            logger.error("Exception in %s %s", request.scope["method"], request.url.path, exc_info=exc)
            return PlainTextResponse("Internal Server Error", status_code=500)
        response = handler(request, exc)
        if inspect.isawaitable(response):
            response = await response
        return response
