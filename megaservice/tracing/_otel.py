"""The tracer while tracing is on: OpenTelemetry's SDK, spans exported by a `BatchSpanProcessor` over OTLP/HTTP.

Imported by `megaservice.tracing.start()` only, and only when tracing is on. One `Tracer` per
process makes every span of it (`service.name`: the first service that started it):

    server(scope)            a request being served: continues the trace of its `traceparent` header
    node(work, name, body)   one node of a pipeline (retries and fallback included), around `work`
    node_stream(...)         a streaming node: the span lasts until its stream is released or closed
    client(...)              one upstream call (any transport): `traceparent` goes into its headers
    work(name, attributes)   a component's own work (`megaservice.tracing.span`)

A span's status is `ERROR` when what it stands for failed (a node's `UpstreamError`, a 5xx answer);
a request cancelled because its client went away is marked `megaservice.cancelled`, not an error.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
from opentelemetry import context as otel_context, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import Scope

from megaservice._transport.base import StreamedAnswer
from megaservice._version import __version__
from megaservice.exceptions import UpstreamError, UpstreamStatusError
from megaservice.tracing import CONTENT_LIMIT, NoSpan, TracingSettings

__all__ = ["ServerSpan", "TracedStream", "Tracer", "WorkSpan"]

_T = TypeVar("_T")
_CARRIED = (b"traceparent", b"tracestate")
_ATTRIBUTE_TYPES = (str, bool, int, float)


class Tracer:
    """The process's spans: made by one SDK `TracerProvider`, exported in batches from a thread."""

    def __init__(self, settings: TracingSettings, service_name: str) -> None:
        self.service_name = service_name
        self.content = settings.content
        """Whether texts (prompts, answers) are recorded."""
        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.traces_url)))
        self.otel = self._provider.get_tracer("megaservice", __version__)
        """The OpenTelemetry tracer (spans made with it join the process's traces)."""
        self._propagator = TraceContextTextMapPropagator()
        self._calls: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {}

    def shutdown(self) -> None:
        """Export what is left and stop the exporter's thread (blocks up to the exporter's timeout)."""
        self._provider.shutdown()

    # -- the request path ---------------------------------------------------------------------------

    def server(self, scope: Scope) -> "ServerSpan":
        """Start the span of a request being served (current until `ServerSpan.end()`)."""
        carrier = {}
        for name, value in scope["headers"]:
            if name in _CARRIED:
                carrier[name.decode("latin-1")] = value.decode("latin-1")
        parent = self._propagator.extract(carrier) if carrier else None
        method = scope["method"]
        span = self.otel.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"], "url.scheme": scope["scheme"]},
        )
        return ServerSpan(span, otel_context.attach(trace.set_span_in_context(span, parent)))

    async def node(self, work: Awaitable[_T], node: str, body: bytes) -> _T:
        """Await `work`, the call of pipeline node `node` (its JSON `body`), in the node's span."""
        span = self.otel.start_span(f"node {node}", attributes={"megaservice.node": node})
        if self.content:
            span.set_attribute("megaservice.input", text(body))
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            result = await work
        except BaseException as exc:
            failed(span, exc)
            span.end()
            raise
        finally:
            otel_context.detach(token)
        span.set_attribute("megaservice.status", "ok")
        answer_attributes(span, result, self.content)
        span.end()
        return result

    async def node_stream(
        self, opening: Awaitable[tuple[StreamedAnswer, Any, str]], node: str, body: bytes
    ) -> tuple[StreamedAnswer, Any, str]:
        """Await `opening`, a streaming node's call; its span lasts until the answer is released or closed."""
        span = self.otel.start_span(f"node {node}", attributes={"megaservice.node": node, "megaservice.stream": True})
        if self.content:
            span.set_attribute("megaservice.input", text(body))
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            answer, answering, url = await opening
        except BaseException as exc:
            failed(span, exc)
            span.end()
            raise
        finally:
            otel_context.detach(token)
        return TracedStream(answer, span, self.content), answering, url

    def client(
        self,
        method: str,
        node: str,
        url: str,
        headers: Mapping[str, str],
        send: Callable[[Mapping[str, str]], Awaitable[_T]],
    ) -> Awaitable[_T]:
        """`send(headers)` in a client span, `traceparent` added to the headers; as is outside a trace."""
        if not trace.get_current_span().get_span_context().is_valid:
            return send(headers)  # background work (a readiness poll): no trace to continue
        return self._client(method, node, url, headers, send)

    async def _client(
        self,
        method: str,
        node: str,
        url: str,
        headers: Mapping[str, str],
        send: Callable[[Mapping[str, str]], Awaitable[_T]],
    ) -> _T:
        key = (method, node, url)
        named = self._calls.get(key)
        if named is None:
            named = self._calls[key] = _call_attributes(method, node, url)
            if len(self._calls) > 4096:
                self._calls.clear()
        span = self.otel.start_span(named[0], kind=SpanKind.CLIENT, attributes=named[1])
        sent = {**headers, "traceparent": traceparent(span.get_span_context())}
        state = span.get_span_context().trace_state
        if state:
            sent["tracestate"] = state.to_header()
        try:  # not made current: nothing under a transport makes spans
            result = await send(sent)
        except BaseException as exc:
            failed(span, exc)
            span.end()
            raise
        status = getattr(result, "status", None)
        if isinstance(status, int):
            span.set_attribute("http.response.status_code", status)
        span.end()
        return result

    # -- a component's own work -------------------------------------------------------------------

    def work(self, name: str, attributes: Mapping[str, Any] | None, attrs: Mapping[str, Any]) -> "WorkSpan":
        """A span of a component's work, as a `with` block (`megaservice.tracing.span`)."""
        merged = {**attributes, **attrs} if attributes else attrs
        return WorkSpan(self.otel, name, {key: value_of(value) for key, value in merged.items()}, self.content)


class ServerSpan:
    """The span of one request being served; current until `end()`."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span, token: object) -> None:
        self._span = span
        self._token = token

    def end(self, scope: Scope, status: int, cancelled: bool) -> None:
        """The request is over: name the span after its route, record its status, make it no longer current."""
        span = self._span
        route = getattr(scope.get("route"), "path", None) or scope["path"]
        span.update_name(f"{scope['method']} {route}")
        span.set_attribute("http.route", route)
        if status:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        if cancelled:
            span.set_attribute("megaservice.cancelled", True)
        span.end()
        otel_context.detach(self._token)  # type: ignore[arg-type]  # the token attach() gave


class TracedStream:
    """A streaming node's answer whose span ends when it is released or closed (events counted on the way)."""

    __slots__ = ("_answer", "_events", "_kept", "_span", "status")

    def __init__(self, answer: StreamedAnswer, span: Span, content: bool) -> None:
        self._answer = answer
        self._span: Span | None = span
        self._events = 0
        self._kept: bytearray | None = bytearray() if content else None
        self.status = answer.status

    @property
    def content(self) -> "TracedStream":
        """The body reader (this answer)."""
        return self

    def iter_any(self) -> AsyncIterator[bytes]:
        """The body as it arrives (the answer's own reads, counted)."""
        return self._read()

    async def _read(self) -> AsyncIterator[bytes]:
        kept = self._kept
        async for chunk in self._answer.content.iter_any():
            self._events += chunk.count(b"data:")
            if kept is not None and len(kept) < CONTENT_LIMIT:
                kept += chunk
            yield chunk

    def finished(self) -> bool:
        """Whether the whole answer is in (when the answer can tell)."""
        finished = getattr(self._answer, "finished", None)
        return bool(finished is not None and finished())

    def release(self) -> None:
        """Read to its end: the connection may carry another request; the node's span ends."""
        self._answer.release()
        self._end()

    def close(self) -> None:
        """Drop the connection; the node's span ends."""
        self._answer.close()
        self._end()

    def _end(self) -> None:
        span = self._span
        if span is None:
            return
        self._span = None
        span.set_attribute("megaservice.stream.events", self._events)
        span.set_attribute("megaservice.status", "ok")
        if self._kept is not None:
            span.set_attribute("megaservice.output", text(bytes(self._kept)))
        span.end()


class WorkSpan(NoSpan):
    """A span of a component's work: current inside its `with` block."""

    __slots__ = ("_attributes", "_content", "_name", "_span", "_token", "_tracer")

    recording = True

    def __init__(self, tracer: trace.Tracer, name: str, attributes: dict[str, Any], content: bool) -> None:
        self._tracer = tracer
        self._name = name
        self._attributes = attributes
        self._content = content
        self._span: Span = trace.INVALID_SPAN
        self._token: object = None

    def __enter__(self) -> "WorkSpan":
        self._span = span = self._tracer.start_span(self._name, attributes=self._attributes)
        self._token = otel_context.attach(trace.set_span_in_context(span))
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None:
            failed(self._span, exc)
        self._span.end()
        otel_context.detach(self._token)  # type: ignore[arg-type]  # the token attach() gave

    def set(self, key: str, value: Any) -> None:
        """Set an attribute (a string, a number, a boolean or a list of them; anything else as its `str`)."""
        self._span.set_attribute(key, value_of(value))

    def content(self, key: str, text_: Any) -> None:
        """Set a text attribute, only when content tracing is on (at most `CONTENT_LIMIT` characters)."""
        if self._content:
            self._span.set_attribute(key, text(text_))


# -- attributes -------------------------------------------------------------------------------------


def traceparent(context: trace.SpanContext) -> str:
    """W3C `traceparent` of a span: version 00, trace id, span id, flags."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def _call_attributes(method: str, node: str, url: str) -> tuple[str, dict[str, Any]]:
    """The name and attributes of the client spans of calls to `url` (the same for every call)."""
    parts = urlsplit(url)
    return f"{method} {node}", {
        "http.request.method": method,
        "url.full": url,
        "server.address": parts.hostname or "",
        "server.port": parts.port or (443 if parts.scheme == "https" else 80),
        "megaservice.node": node,
    }


def failed(span: Span, exc: BaseException) -> None:
    """Record why the work of `span` did not complete."""
    if isinstance(exc, asyncio.CancelledError):
        span.set_attribute("megaservice.cancelled", True)
        return
    if isinstance(exc, UpstreamError):
        span.set_attribute("megaservice.status", exc.kind)
        span.set_attribute("error.type", exc.kind)
        if isinstance(exc, UpstreamStatusError):
            span.set_attribute("http.response.status_code", exc.upstream_status)
    else:
        span.set_attribute("error.type", type(exc).__qualname__)
        span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)[:CONTENT_LIMIT]))


def answer_attributes(span: Span, answer: Any, content: bool) -> None:
    """What a node's decoded answer tells: token counts, documents found, and (content on) its text."""
    if isinstance(answer, dict):
        usage = answer.get("usage")
        if isinstance(usage, dict):
            for key, name in (
                ("prompt_tokens", "gen_ai.usage.input_tokens"),
                ("completion_tokens", "gen_ai.usage.output_tokens"),
            ):
                count = usage.get(key)
                if isinstance(count, int):
                    span.set_attribute(name, count)
        for key in ("retrieved_docs", "reranked_docs", "documents", "data"):
            found = answer.get(key)
            if isinstance(found, list):
                span.set_attribute(f"megaservice.{key}", len(found))
    elif isinstance(answer, list):
        span.set_attribute("megaservice.items", len(answer))
    if content:
        span.set_attribute("megaservice.output", text(answer_text(answer)))


def answer_text(answer: Any) -> Any:
    """The generated text of an answer (OpenAI's chat or completion shape, OPEA's `text`), else the answer."""
    if isinstance(answer, dict):
        choices = answer.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            message = choices[0].get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                return message["content"]
            if isinstance(choices[0].get("text"), str):
                return choices[0]["text"]
        if isinstance(answer.get("text"), str):
            return answer["text"]
    return answer


def text(value: Any) -> str:
    """`value` as a text attribute: decoded bytes, a string, or JSON; at most `CONTENT_LIMIT` characters."""
    if isinstance(value, bytes | bytearray):
        found = bytes(value[: CONTENT_LIMIT * 4]).decode("utf-8", "replace")
    elif isinstance(value, str):
        found = value
    else:
        found = orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return found[:CONTENT_LIMIT]


def value_of(value: Any) -> Any:
    """An attribute value OpenTelemetry accepts: scalars and lists of them as they are, anything else as `str`."""
    if isinstance(value, _ATTRIBUTE_TYPES):
        return value
    if isinstance(value, list | tuple) and all(isinstance(item, _ATTRIBUTE_TYPES) for item in value):
        return list(value)
    return str(value)
