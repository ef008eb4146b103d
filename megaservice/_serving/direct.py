"""The direct path: routes that need no FastAPI machinery, called straight by the app.

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

import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from megaservice._serving.errors import InvalidJSONBodyError, error_response

__all__ = ["DirectRoute", "direct_form"]

_JSON_HEADER = (b"content-type", b"application/json")


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


class DirectRoute:
    """One route's handler, called straight: its answer (JSON, or a `Response`) written to the server."""

    __slots__ = ("app", "endpoint", "takes_request")

    def __init__(self, app: FastAPI, endpoint: Callable[..., Awaitable[Any]], takes_request: bool) -> None:
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
            result = await error_response(self.app, request, exc)
        await result(scope, receive, send)


def _dumps(content: Any) -> bytes:
    """What FastAPI answers for a handler without a response model (`jsonable_encoder`, then JSON), faster."""
    try:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return orjson.dumps(jsonable_encoder(content), option=orjson.OPT_NON_STR_KEYS)


def direct_form(endpoint: Callable[..., Any]) -> bool | None:
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
