"""OTLP/HTTP trace export requests: decoded into `ReceivedSpan`s, answered as a collector answers.

OpenTelemetry's OTLP/HTTP exporters send `POST /v1/traces` with an `ExportTraceServiceRequest`
in protobuf (`application/x-protobuf`) or OTLP's JSON (`application/json`), compressed (gzip,
deflate) or not. The messages are decoded with `opentelemetry-proto` (installed by the `tracing`
extra), imported on the first export, not before.
"""

import base64
import binascii
import gzip
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

__all__ = ["TRACES_PATH", "ReceivedSpan", "answer", "decode", "read_body", "receive_export"]

TRACES_PATH = "/v1/traces"
"""Where OTLP/HTTP exporters send spans."""

_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUSES = ("unset", "ok", "error")
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """One span as a service exported it."""

    trace_id: str
    """32 hex digits."""
    span_id: str
    """16 hex digits."""
    parent_id: str | None
    """The parent span's id (16 hex digits), `None` for a trace's root."""
    name: str
    kind: str
    """`server`, `client`, `internal`, `producer`, `consumer` (or `unspecified`)."""
    service: str
    """The exporting process's `service.name`."""
    start_ns: int
    end_ns: int
    status: str = "unset"
    """`unset`, `ok` or `error`."""
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    scope: str = ""
    """The instrumentation scope (the tracer's name, e.g. `megaservice`)."""

    @property
    def duration_ms(self) -> float:
        """How long the span lasted, in milliseconds."""
        return (self.end_ns - self.start_ns) / 1e6


def decode(body: bytes, *, as_json: bool = False) -> list[ReceivedSpan]:
    """The spans of an `ExportTraceServiceRequest` (protobuf, or OTLP's JSON); `ValueError` if it is not one."""
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    try:
        if as_json:
            json_format.ParseDict(_hex_ids_as_base64(json.loads(body)), request, ignore_unknown_fields=True)
        else:
            request.ParseFromString(body)
    except (DecodeError, json_format.ParseError, binascii.Error, TypeError, AttributeError) as exc:
        raise ValueError(str(exc)) from exc
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        service = str(resource.get("service.name", "unknown_service"))
        for scope_spans in resource_spans.scope_spans:
            spans.extend(_span(span, service, scope_spans.scope.name) for span in scope_spans.spans)
    return spans


async def receive_export(
    scope: Scope, receive: Receive, send: Send, on_spans: Callable[[list[ReceivedSpan]], None]
) -> bool:
    """Read one `POST /v1/traces`, hand its spans to `on_spans`, then answer; `False` if it was no export (400)."""
    body = await read_body(receive)
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
    as_json = headers.get("content-type", "").split(";")[0].strip() == "application/json"
    try:
        spans = decode(_inflate(body, headers.get("content-encoding", "")), as_json=as_json)
    except (ValueError, OSError, zlib.error) as exc:
        await answer(send, 400, f'{{"error": "not an OTLP trace export: {type(exc).__name__}"}}'.encode())
        return False
    on_spans(spans)  # before the answer: an exporter that got it may count on its spans being there
    if as_json:
        await answer(send, 200, b"{}")
    else:  # an empty ExportTraceServiceResponse
        await answer(send, 200, b"", "application/x-protobuf")
    return True


def _span(span: Any, service: str, scope: str) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex() or None,
        name=span.name,
        kind=_KINDS[span.kind] if span.kind < len(_KINDS) else str(span.kind),
        service=service,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        status=_STATUSES[span.status.code] if span.status.code < len(_STATUSES) else "unset",
        status_message=span.status.message,
        attributes={kv.key: _value(kv.value) for kv in span.attributes},
        scope=scope,
    )


def _hex_ids_as_base64(message: Any) -> Any:
    """OTLP's JSON writes span and trace ids in hex, where protobuf's JSON mapping expects base64."""
    for resource_spans in message.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                for item in (span, *span.get("links", ())):
                    for key in _ID_FIELDS:
                        if item.get(key):
                            item[key] = base64.b64encode(bytes.fromhex(item[key])).decode()
    return message


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def _inflate(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def answer(
    send: Send, status: int, body: bytes, media_type: str = "application/json", headers: dict[str, str] | None = None
) -> None:
    """Send a whole response."""
    pairs = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
    pairs += [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": pairs})
    await send({"type": "http.response.body", "body": body})
