"""What a service's OpenAPI schema says, and what FastAPI needs built before it analyses a route.

* megaservice's documents defer building their validators to first use (`defer_build`); a route's
  documents are built when the route is added (`Route`), before FastAPI looks at them.
* A handler that reads the `Request` itself declares no body; the schema can still say which
  model its JSON body is (`body_models`, imported only when the schema is built). A megaservice's
  chat endpoints document OPEA's `ChatCompletionRequest` that way (`chat_body_model`).
"""

import importlib
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import params
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request

from megaservice.constants import MegaServiceEndpoint

__all__ = ["Route", "add_body_models", "body_reference", "build_models", "chat_body_model"]

_CHAT_REQUEST = "megaservice.protocol.openai:ChatCompletionRequest"
_CHAT_ENDPOINTS = frozenset(
    str(e)
    for e in (
        MegaServiceEndpoint.CHAT_QNA,
        MegaServiceEndpoint.CODE_GEN,
        MegaServiceEndpoint.CODE_TRANS,
        MegaServiceEndpoint.DOC_SUMMARY,
        MegaServiceEndpoint.SEARCH_QNA,
        MegaServiceEndpoint.FAQ_GEN,
        MegaServiceEndpoint.GRAPH_RAG,
        MegaServiceEndpoint.HYBRID_RAG,
        MegaServiceEndpoint.CHAT,
    )
)


class Route(APIRoute):
    """FastAPI's route, with the deferred documents of its endpoint and response model built first."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        build_models(kwargs.get("response_model"), *_endpoint_models(endpoint))
        super().__init__(path, endpoint, **kwargs)


def build_models(*annotations: Any) -> None:
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


def chat_body_model(endpoint: str, handler: Callable[..., Any]) -> str | None:
    """OPEA's `ChatCompletionRequest` for a megaservice's chat endpoint whose handler reads the `Request` itself."""
    if endpoint not in _CHAT_ENDPOINTS:
        return None
    try:
        parameters = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return None
    if len(parameters) != 1:
        return None
    annotation = parameters[0].annotation
    takes_request = (
        annotation is inspect.Parameter.empty
        or annotation is Request
        or (inspect.isclass(annotation) and issubclass(annotation, Request))
    )
    return _CHAT_REQUEST if takes_request else None


def body_reference(model: type[BaseModel] | str) -> tuple[str, dict[str, Any]]:
    """The schema name of `model` (a model, or `"module:Name"`) and the `openapi_extra` of a route taking it."""
    name = model.rpartition(":")[2] if isinstance(model, str) else model.__name__
    ref = {"$ref": f"#/components/schemas/{name}"}
    return name, {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def add_body_models(schema: dict[str, Any], models: Mapping[str, type[BaseModel] | str]) -> None:
    """Add the schemas of `models` (by name; models, or `"module:Name"` to import now) to `schema`'s components."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model_or_path in models.items():
        model = _import_model(model_or_path) if isinstance(model_or_path, str) else model_or_path
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for def_name, definition in model_schema.pop("$defs", {}).items():
            components.setdefault(def_name, definition)
        components.setdefault(name, model_schema)


def _import_model(path: str) -> type[BaseModel]:
    module, _, name = path.partition(":")
    model: type[BaseModel] = getattr(importlib.import_module(module), name)
    return model
