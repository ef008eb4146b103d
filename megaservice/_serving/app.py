"""`ServiceApp`: the FastAPI app of a service, and the one coroutine every request goes through.

Each request is admitted or refused (`admission`), counted in flight unless public, traced unless
public when tracing is on (`megaservice.tracing`), watched for its client's disconnect
(`disconnect`), served by its direct route if it has one and nothing could tell the difference
(`direct`), by FastAPI otherwise, and counted in the `http_*` series.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from megaservice import tracing
from megaservice._serving.access import log_access
from megaservice._serving.admission import admit, refuse_busy
from megaservice._serving.direct import DirectRoute, direct_form
from megaservice._serving.disconnect import SERVER_SEND, WATCHED, Exchange
from megaservice._serving.errors import install_exception_handlers
from megaservice._serving.openapi import Route, add_body_models, body_reference
from megaservice.limits import Limits
from megaservice.metrics import get_http_metrics

if TYPE_CHECKING:
    from megaservice.tracing._otel import ServerSpan

__all__ = ["ServiceApp"]

logger = logging.getLogger("megaservice.app")

_DOCUMENTED_ONLY = frozenset({"tags", "include_in_schema", "responses", "response_model"})
"""`add_route_fast` arguments that change only the OpenAPI schema (a `response_model` of `None`)."""


class ServiceApp(FastAPI):
    """FastAPI, plus admission, the disconnect watcher and the direct path for routes added with `add_route_fast`."""

    def __init__(
        self, limits: Limits | None = None, *, http_metrics: bool = True, access_log: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.access_log = access_log
        """Log one line per request once its answer is complete (the probes left out): `log_access`."""
        self.router.route_class = Route
        self.limits = limits if limits is not None else Limits()
        self.inflight = 0
        """Requests being served now, the probes and other public paths left out."""
        self._direct: dict[tuple[str, str], DirectRoute] = {}
        self._own_middleware = 0
        self._body_models: dict[str, type[BaseModel] | str] = {}
        self.http_metrics = get_http_metrics(http_metrics)
        """Where requests are counted (`megaservice.metrics.HTTPMetrics`); `None` counts nothing."""
        self.unwatched: tuple[str, ...] = ()
        """Path prefixes served without the disconnect watcher (apps that handle disconnects themselves)."""
        install_exception_handlers(self)

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
        """Add a FastAPI route; serve it directly too when its handler allows (`megaservice._serving.direct`).

        `body_model` documents the JSON body of a handler that reads the `Request` itself, so the
        OpenAPI schema (and the tools generating requests from it) know what it accepts: a model,
        or `"module:Name"`, imported only when the schema is built.
        """
        if body_model is not None:
            name, openapi_extra = body_reference(body_model)
            self._body_models[name] = body_model
            self.add_api_route(path, endpoint, methods=list(methods), openapi_extra=openapi_extra, **kwargs)
        else:
            self.add_api_route(path, endpoint, methods=list(methods), **kwargs)
        if set(kwargs) - _DOCUMENTED_ONLY or kwargs.get("response_model"):
            return  # FastAPI has work to do for this route (dependencies, a response model, ...)
        form = direct_form(endpoint)
        if form is None:
            return
        route = DirectRoute(self, endpoint, form)
        for method in methods:
            self._direct.setdefault((method.upper(), path), route)

    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema, plus the body models of routes that read their `Request` themselves."""
        if self.openapi_schema is None and self._body_models:
            schema = super().openapi()
            add_body_models(schema, self._body_models)
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
        exchange = Exchange(receive, send)
        started = time.perf_counter()
        target: ASGIApp | None = None
        counted = False
        span = None
        try:
            admitted = await admit(self.limits, scope, receive, exchange)
            if admitted is None:
                return
            receive, origin, public = admitted
            if not public:
                if tracing.tracer is not None:
                    span = tracing.tracer.server(scope)  # current until the answer is sent
                limits = self.limits
                if limits.max_inflight is not None and self.inflight >= limits.max_inflight:
                    await refuse_busy(exchange.send, limits, self.inflight)
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
                if target.__class__ is DirectRoute:  # no middleware: nothing else needs to see the body
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
            self._finish(scope, exchange, target, started, span)

    def _target(self, scope: Scope, origin: bool) -> ASGIApp:
        """The direct route of the request, if it can take it (`megaservice._serving.direct`); FastAPI otherwise."""
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

    def _finish(
        self, scope: Scope, exchange: Exchange, target: ASGIApp | None, started: float, span: "ServerSpan | None"
    ) -> None:
        """A request is over: its `http_*` series (handler: the route template, or `none`), access line, span."""
        status = exchange.status
        meter = self.http_metrics
        if meter is not None and status:
            if target is None or isinstance(target, DirectRoute):
                handler = scope["path"] if (scope["method"], scope["path"]) in self._direct else "none"
            else:
                route = scope.get("route")
                handler = getattr(route, "path", "none") if route is not None else "none"
            seconds = time.perf_counter() - started
            meter.observe(scope["method"], status, handler, exchange.request_bytes, exchange.response_bytes, seconds)
        if self.access_log and status:
            log_access(scope, status)
        if span is not None:
            span.end(scope, status, exchange.cancelled)
