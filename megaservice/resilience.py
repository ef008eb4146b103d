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

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from megaservice.exceptions import (
    ConfigurationError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from megaservice.settings import EnvSettings, variable

__all__ = ["Circuit", "CircuitBreaker", "Retry", "Timeout", "breaker_from_env", "is_node_failure"]

logger = logging.getLogger(__name__)


def _seconds(name: str, default: float | None, help: str) -> Any:
    return variable(name, default, zero_off=True, minimum=0, help=help + " `0`: no limit.")


@dataclass(frozen=True, slots=True)
class Timeout(EnvSettings):
    """Time limits for one call to a node, in seconds (`None`: no limit)."""

    env_prefix: ClassVar[str] = "MEGASERVICE_"
    per_node: ClassVar[bool] = True

    connect: float | None = _seconds("CONNECT_TIMEOUT", 10.0, "Seconds to open the TCP connection to a node.")
    """Time to establish the TCP connection."""
    read: float | None = _seconds(
        "READ_TIMEOUT",
        300.0,
        "Seconds to wait for a node's response headers, and then between two reads of its body (a stalled stream).",
    )
    """Time to wait for the response headers, and then between two reads of the body (a stalled stream)."""
    total: float | None = _seconds(
        "TOTAL_TIMEOUT", 600.0, "Seconds for a whole non-streaming node call (a stream is bounded by the others)."
    )
    """Time for a whole non-streaming call; a stream is bounded by `read` and `first_byte` only."""
    first_byte: float | None = variable(
        "FIRST_BYTE_TIMEOUT",
        None,
        zero_off=True,
        minimum=0,
        shown_default="unset",
        help="Seconds from sending a request to a node to its response headers (unset: `READ_TIMEOUT` bounds it).",
    )
    """Time from sending the request to the response headers (`None`: `read` bounds it)."""


def _retries(text: str) -> int:
    retries = int(text)
    if retries < 0:
        raise ValueError(text)
    return retries + 1


@dataclass(frozen=True, slots=True)
class Retry(EnvSettings):
    """Try a failed call again, after an exponential backoff with full jitter.

    Only calls that can be repeated safely are retried: the nodes before the pipeline's LLM
    (guardrail, embedding, retriever, rerank); an LLM/LVM node and anything after it never are.
    A call is retried when the node could not be reached, timed out, or answered one of `statuses`;
    never after a 4xx that says the request itself is wrong.
    """

    env_prefix: ClassVar[str] = "MEGASERVICE_"
    per_node: ClassVar[bool] = True

    attempts: int = variable(
        "RETRIES",
        1,
        parse=_retries,
        expected="a whole number of retries (0 or more)",
        shown_default="0",
        help="Tries after the first for a failed call to a node before the LLM (unreachable, timed out, "
        "429/502/503/504).",
    )
    """Tries in all, the first included (1: no retry)."""
    backoff: float = variable(
        "RETRY_BACKOFF",
        0.05,
        minimum=0,
        help="Seconds: upper bound of the first wait before a retry; it doubles each try.",
    )
    """Upper bound of the first wait; it doubles with each further try (full jitter: a random wait up to it)."""
    max_backoff: float = variable(
        "RETRY_MAX_BACKOFF", 1.0, minimum=0, help="Seconds: upper bound of any wait before a retry."
    )
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


class _BreakerOff(Exception):  # a signal, not an error
    """`BREAKER_FAILURES=0`: no breaker at all."""


def _failures(text: str) -> int:
    failures = int(text)
    if failures == 0:
        raise _BreakerOff
    if failures < 0:
        raise ValueError(text)
    return failures


@dataclass(frozen=True, slots=True)
class CircuitBreaker(EnvSettings):
    """Stop calling a node that keeps failing; answer 503 at once instead of waiting on it.

    After `failures` failed calls in a row (unreachable, timed out, 5xx, or an answer that breaks
    the protocol; a 4xx is the request's fault and does not count) the circuit *opens*: calls fail
    at once with `UpstreamUnavailable` (503). After `reset_after` seconds one call is let through;
    if it succeeds the circuit closes, if it fails it opens again.
    """

    env_prefix: ClassVar[str] = "MEGASERVICE_"
    per_node: ClassVar[bool] = True

    failures: int = variable(
        "BREAKER_FAILURES",
        5,
        parse=_failures,
        expected="a whole number of failures (0 turns the breaker off)",
        shown_default="unset (no breaker)",
        help="Failed calls in a row after which a node's circuit opens (503 at once, no call). Setting it turns "
        "the breaker on with this count; `0` turns it off.",
    )
    """Failed calls in a row that open the circuit."""
    reset_after: float = variable(
        "BREAKER_RESET",
        10.0,
        minimum=0,
        help="Seconds an open circuit refuses calls before it lets a trial call through.",
    )
    """Seconds the circuit stays open before a trial call."""

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ConfigurationError(f"CircuitBreaker.failures must be at least 1, got {self.failures}")


def breaker_from_env(environ: Mapping[str, str], prefix: str, base: CircuitBreaker | None) -> CircuitBreaker | None:
    """`base` (`None`: no breaker) with what `<prefix>BREAKER_*` change; `None` when they turn it off."""
    start = base or CircuitBreaker()
    try:
        breaker = CircuitBreaker.from_env(environ, prefix=prefix, base=start)
    except _BreakerOff:
        return None
    return base if breaker is start else breaker


def is_node_failure(exc: UpstreamError) -> bool:
    """Whether `exc` says the node is unwell (not that the request was wrong): what breakers and fallbacks act on."""
    if isinstance(exc, UpstreamStatusError):
        return exc.upstream_status >= 500 or exc.upstream_status == 429
    return isinstance(exc, UpstreamConnectError | UpstreamTimeout | UpstreamProtocolError | UpstreamUnavailable)


class Circuit:
    """The state of one node's circuit breaker (one per node and orchestrator, shared by its requests).

    `check()` before a call, `record()` after it. `clock` is injectable (tests step it by hand);
    `on_change(is_open)` is told each time the circuit opens or closes (the orchestrator's gauge).
    """

    __slots__ = ("_clock", "_on_change", "breaker", "failures", "node", "opened_at", "probing")

    def __init__(
        self,
        breaker: CircuitBreaker,
        node: str = "",
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.breaker = breaker
        self.node = node
        self._clock = clock
        self._on_change = on_change
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    def check(self, url: str) -> None:
        """Let a call through, or raise `UpstreamUnavailable` while the circuit is open."""
        if self.opened_at is None:
            return
        refused = self.refusal(url)
        if refused is not None:
            raise refused
        self.probing = True  # half-open: this call is the trial

    def refusal(self, url: str) -> UpstreamUnavailable | None:
        """The error `check()` would raise now, else `None`; changes nothing (a trial call stays to be made)."""
        if self.opened_at is None:
            return None
        waited = self._clock() - self.opened_at
        if not self.probing and waited >= self.breaker.reset_after:
            return None
        retry_in = max(0.0, self.breaker.reset_after - waited)
        return UpstreamUnavailable(
            f"{self.node} failed {self.failures} times in a row; not calling it for another {retry_in:.1f} s",
            node=self.node,
            url=url,
        )

    def record(self, ok: bool | None) -> None:
        """Count the outcome of a call (`None`: cancelled, which says nothing about the node)."""
        self.probing = False
        if ok is None:
            return
        was_open = self.opened_at is not None
        if ok:
            self.failures = 0
            self.opened_at = None
        else:
            self.failures += 1
            if was_open or self.failures >= self.breaker.failures:
                self.opened_at = self._clock()
                if not was_open:
                    logger.warning("%s: circuit opened after %d failures in a row", self.node, self.failures)
        if was_open != (self.opened_at is not None) and self._on_change is not None:
            self._on_change(not was_open)
