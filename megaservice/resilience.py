"""How an orchestrator calls a node: time limits, retries, a circuit breaker, a fallback node.

    Timeout         connect / first byte / between reads / total, per call
    Retry           tries again after a failure that may be transient (pre-LLM nodes only)
    CircuitBreaker  after N failures in a row, refuse calls at once for a while (503, not a wait)
    fallback        MicroService(fallback=...): the node to call when this one fails

Each can be set in code, on the orchestrator (`ServiceOrchestrator(timeout=, retry=, breaker=)`) or
on a node (`MicroService(timeout=, retry=, breaker=, fallback=)`), and from the environment, for a
deployed megaservice whose code nobody wants to edit. For one node the first that is set wins:

    1. the node's argument in code
    2. MEGASERVICE_NODE_<NAME>_*  (NAME: the node's name without `/MicroService`, upper case,
       other characters as `_`; e.g. MEGASERVICE_NODE_EMBEDDING_TOTAL_TIMEOUT=5)
    3. the orchestrator's argument in code
    4. MEGASERVICE_*              (e.g. MEGASERVICE_TOTAL_TIMEOUT=5, MEGASERVICE_RETRIES=2)
    5. the defaults below

Variables (each also per node): `CONNECT_TIMEOUT`, `FIRST_BYTE_TIMEOUT`, `READ_TIMEOUT`,
`TOTAL_TIMEOUT` (seconds, 0 = no limit); `RETRIES` (tries after the first), `RETRY_BACKOFF`,
`RETRY_MAX_BACKOFF` (seconds); `BREAKER_FAILURES` (0 = off), `BREAKER_RESET` (seconds); and per
node only `FALLBACK_URL` (the full URL of a node speaking the same protocol).
"""

import os
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

from megaservice.exceptions import (
    ConfigurationError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = ["CircuitBreaker", "Retry", "Timeout", "env_prefix"]

_T = TypeVar("_T", "Timeout", "Retry", "CircuitBreaker")
_NAME = re.compile(r"[^A-Z0-9]+")


@dataclass(frozen=True, slots=True)
class Timeout:
    """Time limits for one call to a node, in seconds (`None`: no limit).

    Environment: `MEGASERVICE_CONNECT_TIMEOUT`, `…_FIRST_BYTE_TIMEOUT`, `…_READ_TIMEOUT`,
    `…_TOTAL_TIMEOUT` (0 = no limit).
    """

    connect: float | None = 10.0
    """Time to establish the TCP connection."""
    read: float | None = 300.0
    """Time to wait for the response headers, and then between two reads of the body (a stalled stream)."""
    total: float | None = 600.0
    """Time for a whole non-streaming call; a stream is bounded by `read` and `first_byte` only."""
    first_byte: float | None = None
    """Time from sending the request to the response headers (`None`: `read` bounds it)."""

    @classmethod
    def from_env(cls, base: "Timeout | None" = None, prefix: str = "MEGASERVICE_") -> "Timeout":
        """`base` (default: the defaults) with the fields the environment sets under `prefix`."""
        return _from_env(
            base or cls(),
            prefix,
            {
                "connect": "CONNECT_TIMEOUT",
                "first_byte": "FIRST_BYTE_TIMEOUT",
                "read": "READ_TIMEOUT",
                "total": "TOTAL_TIMEOUT",
            },
            _seconds,
        )


@dataclass(frozen=True, slots=True)
class Retry:
    """Try a failed call again, after an exponential backoff with full jitter.

    Only calls that can be repeated safely are retried: the nodes before the pipeline's LLM
    (guardrail, embedding, retriever, rerank); an LLM/LVM node and anything after it never are.
    A call is retried when the node could not be reached, timed out, or answered one of `statuses`;
    never after a 4xx that says the request itself is wrong.

    Environment: `MEGASERVICE_RETRIES` (tries after the first), `MEGASERVICE_RETRY_BACKOFF`,
    `MEGASERVICE_RETRY_MAX_BACKOFF`.
    """

    attempts: int = 1
    """Tries in all, the first included (1: no retry)."""
    backoff: float = 0.05
    """Upper bound of the first wait; it doubles with each further try (full jitter: a random wait up to it)."""
    max_backoff: float = 1.0
    """Upper bound of any one wait."""
    statuses: frozenset[int] = frozenset({429, 502, 503, 504})
    """Node statuses worth another try."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError(f"Retry.attempts must be at least 1, got {self.attempts}")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0-based)."""
        return random.uniform(0.0, min(self.max_backoff, self.backoff * (2**retry)))  # jitter

    def should_retry(self, exc: UpstreamError) -> bool:
        """Whether a call that failed with `exc` may succeed if tried again."""
        if isinstance(exc, UpstreamStatusError):
            return exc.upstream_status in self.statuses
        return isinstance(exc, UpstreamConnectError | UpstreamTimeout)

    @classmethod
    def from_env(cls, base: "Retry | None" = None, prefix: str = "MEGASERVICE_") -> "Retry":
        """`base` (default: no retry) with the fields the environment sets under `prefix`."""
        retry = _from_env(
            base or cls(),
            prefix,
            {"backoff": "RETRY_BACKOFF", "max_backoff": "RETRY_MAX_BACKOFF"},
            _seconds,
        )
        retries = _env_number(prefix + "RETRIES", int)
        return replace(retry, attempts=retries + 1) if retries is not None else retry


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """Stop calling a node that keeps failing; answer 503 at once instead of waiting on it.

    After `failures` failed calls in a row (unreachable, timed out, 5xx, or an answer that breaks
    the protocol; a 4xx is the request's fault and does not count) the circuit *opens*: calls fail
    at once with `UpstreamUnavailable` (503). After `reset_after` seconds one call is let through;
    if it succeeds the circuit closes, if it fails it opens again.

    Environment: `MEGASERVICE_BREAKER_FAILURES` (0 = no breaker), `MEGASERVICE_BREAKER_RESET`.
    """

    failures: int = 5
    """Failed calls in a row that open the circuit."""
    reset_after: float = 10.0
    """Seconds the circuit stays open before a trial call."""

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ConfigurationError(f"CircuitBreaker.failures must be at least 1, got {self.failures}")

    @classmethod
    def from_env(cls, base: "CircuitBreaker | None", prefix: str = "MEGASERVICE_") -> "CircuitBreaker | None":
        """`base` (`None`: no breaker) with the fields the environment sets under `prefix`."""
        failures = _env_number(prefix + "BREAKER_FAILURES", int)
        reset = _env_number(prefix + "BREAKER_RESET", float)
        if failures == 0:
            return None
        if failures is None and reset is None:
            return base
        breaker = base or cls()
        if failures is not None:
            breaker = replace(breaker, failures=failures)
        if reset is not None:
            breaker = replace(breaker, reset_after=reset)
        return breaker


def env_prefix(node_name: str) -> str:
    """The environment prefix of one node: `embedding/MicroService` → `MEGASERVICE_NODE_EMBEDDING_`."""
    base = node_name.rsplit("/", 1)[0] if "/" in node_name else node_name
    return f"MEGASERVICE_NODE_{_NAME.sub('_', base.upper()).strip('_')}_"


def is_node_failure(exc: UpstreamError) -> bool:
    """Whether `exc` says the node is unwell (not that the request was wrong): what breakers and fallbacks act on."""
    if isinstance(exc, UpstreamStatusError):
        return exc.upstream_status >= 500 or exc.upstream_status == 429
    return isinstance(exc, UpstreamConnectError | UpstreamTimeout | UpstreamProtocolError | UpstreamUnavailable)


class Circuit:
    """The state of one node's circuit breaker (one per node and orchestrator, shared by its requests)."""

    __slots__ = ("breaker", "failures", "opened_at", "probing")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    @property
    def is_open(self) -> bool:
        """Whether calls are refused now (open, or half-open with its trial call under way)."""
        if self.opened_at is None:
            return False
        return self.probing or time.monotonic() - self.opened_at < self.breaker.reset_after

    def check(self, node: str, url: str) -> None:
        """Let a call through, or raise `UpstreamUnavailable` while the circuit is open."""
        if self.opened_at is None:
            return
        waited = time.monotonic() - self.opened_at
        if self.probing or waited < self.breaker.reset_after:
            retry_in = max(0.0, self.breaker.reset_after - waited)
            raise UpstreamUnavailable(
                f"{node} failed {self.failures} times in a row; not calling it for another {retry_in:.1f} s",
                node=node,
                url=url,
            )
        self.probing = True  # half-open: this call is the trial

    def record(self, ok: bool) -> bool:
        """Count the outcome of a call; return whether this opened the circuit."""
        self.probing = False
        if ok:
            self.failures = 0
            self.opened_at = None
            return False
        self.failures += 1
        if self.opened_at is not None or self.failures >= self.breaker.failures:
            was_closed = self.opened_at is None
            self.opened_at = time.monotonic()
            return was_closed
        return False


def _seconds(value: str) -> float | None:
    number = float(value)
    return number if number > 0 else None


def _env_number(name: str, kind: type[int] | type[float]) -> Any:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        number = kind(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {value!r}") from None
    if number < 0:
        raise ConfigurationError(f"{name} must not be negative, got {value!r}")
    return number


def _from_env(base: _T, prefix: str, names: Mapping[str, str], parse: Any) -> _T:
    changes: dict[str, Any] = {}
    known = {f.name for f in fields(base)}
    for attribute, suffix in names.items():
        assert attribute in known
        value = os.environ.get(prefix + suffix, "").strip()
        if not value:
            continue
        try:
            changes[attribute] = parse(value)
        except ValueError:
            raise ConfigurationError(f"{prefix + suffix} must be a number of seconds, got {value!r}") from None
    return replace(base, **changes) if changes else base
