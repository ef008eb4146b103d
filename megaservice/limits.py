"""What a service accepts: per HTTP request (`Limits`) and per chat request (`InputLimits`).

`Limits` are checked by every service before a handler runs (keys, body size, requests in
flight); `InputLimits` by the wire models when they validate (`megaservice.protocol.limits`), so
an oversized chat request is refused with a 4xx naming the limit before any node is called.
Both are settings (`megaservice.settings`): their fields come from the environment.
"""

import hmac
from dataclasses import dataclass
from typing import ClassVar

from megaservice.settings import EnvSettings, variable

__all__ = ["PROBE_PATHS", "InputLimits", "Limits"]

PROBE_PATHS = frozenset({"/v1/health_check", "/v1/health", "/health", "/v1/ready", "/metrics"})
"""The probes every service answers; the one list of them.

Every service serves these paths (`megaservice._serving.probes`), admits them without a key and
without counting them in flight (the default of `Limits.public_paths`), and keeps them out of its
access log (`megaservice._serving.server`).
"""


@dataclass(frozen=True, slots=True)
class Limits(EnvSettings):
    """What a service accepts before it runs a handler (checked for every HTTP request)."""

    env_prefix: ClassVar[str] = "MEGASERVICE_"

    max_inflight: int | None = variable(
        "MAX_INFLIGHT",
        1024,
        zero_off=True,
        minimum=0,
        help="Requests a service serves at once; one more is answered 503 with `Retry-After` at once (no queue). "
        "`0`: no limit.",
    )
    """Requests served at once; one more is answered 503 with `Retry-After` at once (no queue)."""
    max_body_bytes: int | None = variable(
        "MAX_BODY_BYTES",
        16 * 1024 * 1024,
        zero_off=True,
        minimum=0,
        help="Largest request body in bytes; a larger one is answered 413. `0`: no limit.",
    )
    """Largest request body; a larger one is answered 413 (from `Content-Length`, or while it arrives)."""
    api_keys: tuple[str, ...] = variable(
        "API_KEYS",
        (),
        secret=True,
        help="Comma-separated keys clients must send as `Authorization: Bearer <key>` or `X-API-Key: <key>`; "
        "unset: no authentication.",
    )
    """Keys accepted as `Authorization: Bearer <key>` or `X-API-Key: <key>`; none means no authentication."""
    public_paths: frozenset[str] = variable(
        "PUBLIC_PATHS",
        PROBE_PATHS,
        shown_default="the probes",
        help="Comma-separated paths that need no key and do not count as in flight (default: the health, "
        "readiness and metrics probes).",
    )
    """Paths that need no key and do not count as in flight: health, readiness and metrics probes."""
    retry_after: int = 1
    """Seconds a client is told to wait after a 503."""

    def authorized(self, credential: bytes | None) -> bool:
        """Whether `credential` (an `Authorization` or `X-API-Key` header value) holds an accepted key."""
        if credential is None:
            return False
        if credential[:7].lower() == b"bearer ":
            credential = credential[7:]
        credential = credential.strip()
        accepted = False
        for key in self.api_keys:  # every key is compared, in constant time each
            accepted |= hmac.compare_digest(credential, key.encode())
        return accepted


@dataclass(frozen=True, slots=True)
class InputLimits(EnvSettings):
    """Upper bounds on what one chat request may ask for (`None`: no bound)."""

    env_prefix: ClassVar[str] = "MEGASERVICE_"

    max_messages: int | None = variable(
        "MAX_MESSAGES", 1000, zero_off=True, minimum=0, help="Messages in one chat request (422 beyond). `0`: no limit."
    )
    """Messages in one chat request."""
    max_tokens: int | None = variable(
        "MAX_TOKENS",
        32768,
        zero_off=True,
        minimum=0,
        help="Tokens one request may ask the LLM to generate (`max_tokens`, `max_new_tokens`; 422 beyond). "
        "`0`: no limit.",
    )
    """Tokens one request may ask the LLM to generate (`max_tokens`, `max_new_tokens`)."""
    max_question_chars: int | None = variable(
        "MAX_QUESTION_CHARS",
        4000,
        zero_off=True,
        minimum=0,
        help="Characters of the question (the last user message) a megaservice's chat routes accept (422 beyond). "
        "`0`: no limit.",
    )
    """Characters of the question a megaservice's chat routes accept (`megaservice.gateway`)."""
