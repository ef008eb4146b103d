"""Distributed tracing: one trace per user request, across every service it reaches (OpenTelemetry, optional).

Tracing is off unless an OTLP/HTTP endpoint is set (`TracingSettings`: OPEA's `TELEMETRY_ENDPOINT`,
or the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`). Then each
service's lifespan calls `start()`, and every request it serves is a span that continues the trace
of the caller's W3C `traceparent`; every node an orchestrator calls is a span, every upstream call
a client span that sends `traceparent` on. Spans are exported in batches, from a thread, by
OpenTelemetry's SDK (the `tracing` extra: `pip install 'megaservice[tracing]'`).

    start(settings, service_name)       a service's lifespan: on if `settings` say so (imports the SDK then)
    stop()                              ... and at its end: the last one flushes and shuts the exporter down
    span("embedding.batch", texts=4)    a span of a component's own work (a no-op while tracing is off)

Off, nothing of OpenTelemetry is imported, no span or buffer exists and nothing is logged. The
hooks on the request path (`_serving.app`, `_pipeline.call`, `client`) check one module attribute,
`tracer`, which is `None` then; the SDK-backed `Tracer` lives in `megaservice.tracing._otel`.
"""

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from megaservice.exceptions import ConfigurationError, MissingDependencyError
from megaservice.settings import EnvSettings, variable

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

    from megaservice.tracing._otel import Tracer

__all__ = ["CONTENT_LIMIT", "NO_SPAN", "NoSpan", "TracingSettings", "span", "start", "stop", "tracer"]

logger = logging.getLogger("megaservice.tracing")

CONTENT_LIMIT = 4096
"""Most characters of a text (a prompt, an answer) recorded as a span attribute when content tracing is on."""

tracer: "Tracer | None" = None
"""The process's tracer while tracing is on; `None` while it is off (the one check on the request path)."""

_users = 0


def _traces_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError("an http:// or https:// URL (megaservice exports OTLP over HTTP, port 4318, not gRPC)")
    return text


@dataclass(frozen=True, slots=True)
class TracingSettings(EnvSettings):
    """Whether and where a service exports its spans (read once, by the service's `Settings.from_env()`)."""

    env_prefix: ClassVar[str] = ""

    endpoint: str | None = variable(
        "TELEMETRY_ENDPOINT",
        None,
        aliases=("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",),
        parse=_traces_url,
        expected="an http:// or https:// URL (OTLP over HTTP, e.g. http://jaeger:4318/v1/traces; gRPC is not spoken)",
        shown_default="unset (tracing off)",
        help="The full OTLP/HTTP traces URL every service exports its spans to (OPEA's variable), e.g. "
        "`http://jaeger:4318/v1/traces`; set (here or in an `OTEL_EXPORTER_OTLP_*ENDPOINT`), tracing is on. "
        "docs/observability.md.",
    )
    """The OTLP/HTTP traces URL (`None`: see `base_endpoint`)."""
    base_endpoint: str | None = variable(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        None,
        parse=_traces_url,
        expected="an http:// or https:// URL (OTLP over HTTP, e.g. http://collector:4318; gRPC is not spoken)",
        shown_default="unset",
        help="The standard base URL of an OTLP/HTTP collector: spans go to `<it>/v1/traces` (when "
        "`TELEMETRY_ENDPOINT` is unset).",
    )
    """A collector's base URL: spans go to `<base>/v1/traces`."""
    service_name: str | None = variable(
        "OTEL_SERVICE_NAME",
        None,
        shown_default="the service's name",
        help="The `service.name` of this process's spans (default: the name of the service it runs, e.g. "
        "`embedding`, `llm`, a megaservice's).",
    )
    """`service.name` of the spans (`None`: the service's own name)."""
    content: bool = variable(
        "MEGASERVICE_TRACING_CONTENT",
        False,
        aliases=("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",),
        help="Record prompts, answers and other texts as span attributes (at most 4096 characters each); "
        "off, spans carry only names, counts, statuses and timings.",
    )
    """Whether texts (prompts, answers, inputs) go into spans."""
    disabled: bool = variable(
        "OTEL_SDK_DISABLED",
        False,
        help="`true` turns tracing off whatever endpoint is set (OpenTelemetry's switch).",
    )
    """Off whatever endpoint is set."""

    @property
    def traces_url(self) -> str | None:
        """Where spans go, or `None`: tracing is off."""
        if self.disabled:
            return None
        if self.endpoint is not None:
            return self.endpoint
        if self.base_endpoint is not None:
            return self.base_endpoint.rstrip("/") + "/v1/traces"
        return None

    @property
    def enabled(self) -> bool:
        """Whether spans are exported."""
        return self.traces_url is not None


def start(settings: TracingSettings, service_name: str) -> bool:
    """Turn tracing on for this process if `settings` say so; return whether it is on for the caller.

    Every call that returned `True` must be matched by a `stop()`. The first one builds the tracer
    (its `service.name` is `settings.service_name`, else `service_name`); later ones share it.

    Raises:
        MissingDependencyError: the `tracing` extra is not installed.
    """
    global tracer, _users
    if not settings.enabled:
        return False
    if tracer is None:
        try:
            from megaservice.tracing._otel import Tracer
        except ImportError as exc:
            if not (exc.name or "").startswith(("opentelemetry", "google.protobuf", "requests")):
                raise
            raise MissingDependencyError("opentelemetry-sdk", "tracing") from exc

        tracer = Tracer(settings, settings.service_name or service_name)
        logger.info("tracing: spans of %s go to %s", tracer.service_name, settings.traces_url)
    _users += 1
    return True


def stop() -> None:
    """End one `start()`; the last one flushes the spans not yet exported and shuts the exporter down (blocks)."""
    global tracer, _users
    if _users <= 0:
        raise ConfigurationError("tracing.stop() without a start() that turned tracing on")
    _users -= 1
    if _users == 0 and tracer is not None:
        ending, tracer = tracer, None
        ending.shutdown()


class NoSpan:
    """What `span()` gives while tracing is off: a context manager that records nothing."""

    __slots__ = ()

    recording: ClassVar[bool] = False
    """Whether the span records anything (skip work that only feeds a span when it does not)."""

    def __enter__(self) -> "NoSpan":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: "TracebackType | None") -> None:
        return None

    def set(self, key: str, value: Any) -> None:
        """Set an attribute (a string, a number, a boolean or a list of them)."""

    def set_attribute(self, key: str, value: Any) -> None:
        """`set()`, under OpenTelemetry's name (for OPEA code using `comps...opea_telemetry.tracer`)."""
        self.set(key, value)

    def content(self, key: str, text: Any) -> None:
        """Set a text attribute only when content tracing is on (prompts, answers, documents)."""


NO_SPAN = NoSpan()
"""The span of all work while tracing is off."""


def span(name: str, attributes: "Mapping[str, Any] | None" = None, /, **attrs: Any) -> NoSpan:
    """A span of a component's own work, as a `with` block, child of the request being served.

        with tracing.span("embedding.batch", texts=len(texts)) as work:
            vectors = await model(texts)
            work.set("gen_ai.usage.input_tokens", tokens)
            work.content("input", texts[0])      # recorded only when content tracing is on

    `attributes` takes names that are not Python identifiers (`{"gen_ai.request.model": m}`).
    While tracing is off this returns `NO_SPAN` and costs one attribute check.
    """
    active = tracer
    if active is None:
        return NO_SPAN
    return active.work(name, attributes, attrs)
