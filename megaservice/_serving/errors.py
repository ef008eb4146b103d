"""Where exceptions become answers: the service's exception handlers, and FastAPI's choice among them.

    InputError             its status (413 body too large, 422 a chat request beyond a limit, ...)
    ValidationError        422, as FastAPI answers (a handler that validated the request itself)
    InvalidJSONBodyError   400 (`Request.json()` on the direct path, a body that is not JSON)
    UpstreamError          502/504 naming the node that failed
    anything else          a logged 500

FastAPI's middleware applies these handlers on its path; `error_response` makes the same choice
for the direct path (`megaservice._serving.direct`), so a client cannot tell the paths apart.
"""

import inspect
import logging

import orjson
from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from megaservice.exceptions import InputError, UpstreamError

__all__ = ["InvalidJSONBodyError", "error_response", "install_exception_handlers"]

logger = logging.getLogger("megaservice.app")


class InvalidJSONBodyError(orjson.JSONDecodeError):
    """The request body is not JSON (a `json.JSONDecodeError`, so handlers that catch that still do)."""


def install_exception_handlers(app: FastAPI) -> None:
    """Give `app` the handlers of the table above."""
    app.add_exception_handler(InputError, _input_error_response)  # type: ignore[arg-type]
    app.add_exception_handler(ValidationError, _validation_error_response)  # type: ignore[arg-type]
    app.add_exception_handler(InvalidJSONBodyError, _invalid_json_response)  # type: ignore[arg-type]
    app.add_exception_handler(UpstreamError, _upstream_error_response)  # type: ignore[arg-type]


async def error_response(app: FastAPI, request: Request, exc: Exception) -> Response:
    """The answer FastAPI's middleware would give for `exc` (the app's exception handlers, or a 500)."""
    handlers = app.exception_handlers
    handler = handlers.get(exc.status_code) if isinstance(exc, HTTPException) else None
    if handler is None:
        for cls in type(exc).__mro__:
            if cls in handlers:
                handler = handlers[cls]
                break
    if handler is None:
        handler = handlers.get(500)
    if handler is None:
        logger.error("Exception in %s %s", request.scope["method"], request.url.path, exc_info=exc)
        return PlainTextResponse("Internal Server Error", status_code=500)
    response = handler(request, exc)
    if inspect.isawaitable(response):
        response = await response
    return response


async def _input_error_response(request: Request, exc: InputError) -> Response:
    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)


async def _validation_error_response(request: Request, exc: ValidationError) -> Response:
    """A handler that validated the request itself (`ChatCompletionRequest.model_validate(data)`): 422, as FastAPI."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


async def _invalid_json_response(request: Request, exc: InvalidJSONBodyError) -> Response:
    return JSONResponse({"detail": f"request body is not valid JSON: {exc}"}, status_code=400)


async def _upstream_error_response(request: Request, exc: UpstreamError) -> Response:
    logger.warning("%s %s failed at node %s: %s", request.method, request.url.path, exc.node, exc)
    return Response(orjson.dumps(exc.to_dict()), status_code=exc.status_code, media_type="application/json")
