"""Errors megaservice raises on purpose.

    MegaserviceError
    ├── ConfigurationError        the service or the DAG was assembled wrong (raised at build/start time)
    ├── MissingDependencyError    an optional extra is not installed
    ├── InputError                the client sent something unacceptable (.status_code)   → 400/413
    └── UpstreamError             a call to a node of the pipeline failed (.node, .url)   → 502
        ├── UpstreamConnectError  the node could not be reached                            → 502
        ├── UpstreamTimeout       the node did not answer in time                          → 504
        ├── UpstreamStatusError   the node answered a non-2xx status (.status_code, .body) → 502
        ├── UpstreamProtocolError the node answered, but not with valid JSON / SSE         → 502
        └── UpstreamUnavailable   the node's circuit breaker is open: not even tried      → 503

Every `MicroService` app installs exception handlers that turn an `UpstreamError` into that
status with a JSON body naming the node, and an `InputError` into its 4xx with a JSON `detail`;
anything else is a bug and becomes a logged 500.
"""

__all__ = [
    "ConfigurationError",
    "InputError",
    "MegaserviceError",
    "MissingDependencyError",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class MegaserviceError(Exception):
    """Base class of every error megaservice raises on purpose."""


class ConfigurationError(MegaserviceError):
    """The service or the pipeline was assembled wrong; raised when it is built or started."""


class MissingDependencyError(MegaserviceError, ImportError):
    """An optional dependency is missing; the message names the pip extra to install."""

    def __init__(self, package: str, extra: str | None = None, *, hint: str | None = None) -> None:
        if hint is None:
            hint = f"pip install 'megaservice[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{package} is not installed: {hint}")
        self.package = package
        self.extra = extra


class InputError(MegaserviceError, ValueError):
    """The client's input was refused; answered with `status_code` and the message as `detail`."""

    def __init__(self, message: str, *, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class UpstreamError(MegaserviceError):
    """A call to a node of the pipeline failed."""

    status_code: int = 502
    """HTTP status the megaservice answers with when this error reaches its exception handler."""
    kind: str = "upstream_error"
    """Short machine-readable name of the failure, sent in error bodies and SSE error events."""

    def __init__(self, message: str, *, node: str, url: str) -> None:
        super().__init__(message)
        self.node = node
        self.url = url

    def to_dict(self) -> dict[str, object]:
        """Return the JSON error body sent to clients (OpenAI/OPEA `ErrorResponse` shape plus the node)."""
        return {"object": "error", "type": self.kind, "message": str(self), "code": self.status_code, "node": self.node}


class UpstreamConnectError(UpstreamError):
    """The node could not be reached (refused, reset before answering, DNS failure)."""

    kind = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    """The node did not answer, or stopped sending, within its timeout."""

    status_code = 504
    kind = "upstream_timeout"


class UpstreamStatusError(UpstreamError):
    """The node answered with a non-2xx status."""

    kind = "upstream_status"
    body_limit = 64 * 1024
    """Bytes of the node's answer kept in `body` (and read of a streamed answer)."""

    def __init__(self, *, node: str, url: str, status: int, body: str | bytes) -> None:
        if isinstance(body, bytes):
            body = body[: self.body_limit].decode(errors="replace")
        super().__init__(f"{node} answered HTTP {status}: {body[:200]}", node=node, url=url)
        self.upstream_status = status
        self.body = body

    def to_dict(self) -> dict[str, object]:
        """Return the JSON error body, including the status the node answered."""
        return {**super().to_dict(), "upstream_status": self.upstream_status}


class UpstreamProtocolError(UpstreamError):
    """The node answered 2xx, but its body was not what the protocol requires (bad JSON, bad SSE)."""

    kind = "upstream_protocol"


class UpstreamUnavailable(UpstreamError):
    """The node failed too often lately; its circuit breaker refuses calls until it may have recovered."""

    kind = "upstream_unavailable"
    status_code = 503
