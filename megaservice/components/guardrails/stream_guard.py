"""An output guardrail on a stream: an LLM's answer checked sentence by sentence as it is written.

    guard = StreamGuard(backend)                       # a guardrails backend (load_backend(...)), loaded
    stream = guard.watch(events, text_of=text_of)      # events: the LLM's stream (raw SSE events, or str)
    async for batch in stream:                         # lists of the source's own items, in order
        await send(batch)                              # passed: sent as they came, byte for byte
    if stream.stopped is not None:                     # a check failed: the stream ended early
        await send([stream.stopped.sse()])             # event: error, naming the check(s)

How it runs (the unit machinery is `megaservice.checked_stream`, shared with the pipeline's guard of a
remote guardrail node after the LLM):

* The source's items are grouped into units: a unit ends with the item whose text ends a sentence
  (`. ? !` before a space, CJK marks, a newline) or makes the unit `max_chars` long. Items without
  text (a role chunk, `[DONE]`) ride with the unit they arrived in.
* When a unit closes, its check starts at once (`backend.check(text, only=checks)`), while the
  source keeps being read: checks of later units overlap the LLM's generation and each other, and
  the models batch them with other requests' (`Batcher`), so there is no thread hop per token and
  the event loop never waits on a model.
* A unit is released, all its items in one batch, as soon as its check and those of the units
  before it passed: nothing unchecked reaches the client, and nothing that passed waits for more.
* The text checked is the unit's, after the unfinished sentence the previous unit ended with (or
  its last 200 characters, when it was cut for length), so a term split across two units is still seen.
* The first unit that fails ends the stream: `stopped` holds the violations, the later units'
  checks are cancelled and the source is closed (its `aclose()`), which cancels the LLM's request.
  PII that the service would mask also stops a stream: the items pass unchanged, so they cannot be
  rewritten.
* A check that raises (an LLM judge that is down) ends the iteration with that error, after the
  source is closed: the relay's usual error event follows.
"""

from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import orjson

from megaservice.checked_stream import CheckedUnits, ItemCutter, Unit
from megaservice.components.guardrails.checks import Outcome, Violation, refusal_text

__all__ = ["GuardStop", "GuardedStream", "StreamChecker", "StreamGuard"]

_T = TypeVar("_T")


class StreamChecker(Protocol):
    """What a stream guard needs: the guardrails backend's `check()`."""

    async def check(self, text: str, *, prompt: str | None = None, only: Sequence[str] | None = None) -> Outcome:
        """The decision on `text`."""
        ...


@dataclass(frozen=True, slots=True)
class GuardStop:
    """Why a stream was stopped: the checks that failed on the unit that was not sent."""

    violations: tuple[Violation, ...]

    @property
    def message(self) -> str:
        """OPEA's refusal text naming the checks: `Violated policies: toxicity, please check your input.`."""
        return refusal_text(self.violations)

    def to_dict(self) -> dict[str, Any]:
        """The body of the final event (the shape of megaservice's error events, plus the violations)."""
        return {
            "object": "error",
            "type": "guardrail_violation",
            "message": self.message,
            "code": 466,  # OPEA's status for a guardrail refusal (utils/llm_guard_*_guardrail.py)
            "violations": [violation.to_dict() for violation in self.violations],
        }

    def sse(self) -> bytes:
        """The final SSE event: `event: error` with `to_dict()` as data, as a relay ends a failed stream."""
        return b"event: error\ndata: " + orjson.dumps(self.to_dict()) + b"\n\n"


class GuardedStream(Generic[_T]):
    """One guarded stream: iterate it for batches of items that passed; `stopped` says whether it was cut."""

    def __init__(
        self,
        source: AsyncIterator[_T],
        check: Callable[[str], Coroutine[Any, Any, Outcome]],
        text_of: Callable[[_T], str],
        *,
        max_chars: int,
        max_pending: int,
    ) -> None:
        def check_unit(unit: Unit[_T]) -> Coroutine[Any, Any, Outcome]:
            return check(unit.context + unit.text)

        self._units: CheckedUnits[_T, Outcome] = CheckedUnits(
            source, ItemCutter(text_of, max_chars), check_unit, max_pending=max_pending
        )
        self.stopped: GuardStop | None = None
        """The violations that ended the stream early, or `None`."""

    def __aiter__(self) -> "GuardedStream[_T]":
        return self

    async def __anext__(self) -> list[_T]:
        unit, outcome = await self._units.__anext__()
        if outcome is not None and (not outcome.allowed or outcome.masked):
            self.stopped = GuardStop(outcome.violations or (Violation("pii", ", ".join(outcome.masked)),))
            await self._units.aclose()
            raise StopAsyncIteration
        return unit.items

    async def aclose(self) -> None:
        """Stop reading, cancel the checks not awaited yet, close the source (idempotent)."""
        await self._units.aclose()


class StreamGuard:
    """Checks streams with a guardrails backend (its enabled checks, or `checks`).

    **Parameters:**

    * **backend** - anything with the guardrails backend's `check(text, prompt=, only=)`, loaded.
    * **checks** - the checks run on streams (default: the backend's own list).
    * **max_chars** - a unit with no sentence end is checked once it is this long (lists, code).
    * **max_pending** - units read ahead of the consumer at most (then the source waits).
    """

    def __init__(
        self,
        backend: StreamChecker,
        *,
        checks: Sequence[str] | None = None,
        max_chars: int = 400,
        max_pending: int = 64,
    ) -> None:
        self.backend = backend
        self.checks = tuple(checks) if checks is not None else None
        self.max_chars = max_chars
        self.max_pending = max_pending

    def watch(
        self,
        source: AsyncIterator[_T],
        *,
        text_of: Callable[[_T], str] | None = None,
        prompt: str | None = None,
    ) -> GuardedStream[_T]:
        """Guard `source` (an LLM's stream; `text_of(item)` is an item's text, default: the item, a `str`).

        `prompt` is what the LLM answers: checks that look at the conversation (the LLM judge) see it.
        """

        def check(text: str) -> Coroutine[Any, Any, Outcome]:
            return self.backend.check(text, prompt=prompt, only=self.checks)

        extract: Callable[[Any], str] = text_of if text_of is not None else str
        return GuardedStream(source, check, extract, max_chars=self.max_chars, max_pending=self.max_pending)
