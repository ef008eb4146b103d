"""A stream checked unit by unit: each unit's check starts when the unit closes, results come out in order.

    units = CheckedUnits(source, ItemCutter(text_of), check, max_pending=8)
    try:
        async for unit, verdict in units:   # in the source's order, each once its own check is done
            if refused(verdict):
                break
            await send(unit.items)
    finally:
        await units.aclose()                # checks not consumed cancelled, the source closed

What an output guard needs, whoever does the checking (the guardrails component in process,
`StreamGuard`; a guardrail node after the LLM of a pipeline, `_pipeline/guard.py`):

* A *cutter* groups the source's items into units as they are read: `ItemCutter` keeps items whole
  (a unit ends with the item whose text ends a sentence, or once it is `max_chars` long), for a
  guard that passes the items on unchanged; `TextCutter` cuts the text itself, one unit per
  sentence, for a guard that sends something else in its place (a node's answer).
* When a unit closes its check starts at once, as a task, while the source keeps being read: the
  checks of later units overlap the source's production and each other. At most `max_pending`
  units are read ahead of the consumer (their checks running or done); then the reader waits,
  which is back-pressure on the source.
* The consumer gets each unit with its verdict in the source's order, as soon as that unit's check
  and all earlier ones are done: nothing waits for later units, nothing comes out of order.
* Closing (`aclose()`; the iteration does it itself at its end and when it raises) stops the
  reader, cancels the checks not consumed yet and closes the source (`aclose()`): for an LLM's stream,
  that drops its connection, which cancels the generation.
* A source that fails raises its error to the consumer after the units read before it; a check that
  raises raises from the iteration when its unit's turn comes.

All of it runs on the event loop: per item, only the cutter's string handling; per unit, one task.
"""

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["CheckedUnits", "Cutter", "ItemCutter", "TextCutter", "Unit", "sentence_ends"]

T = TypeVar("T")
R = TypeVar("R")

_MARKS = re.compile(r"[.?!。，！？；\n]")  # noqa: RUF001  # CJK sentence marks on purpose
_LATIN = frozenset(".?!")


def sentence_ends(text: str, start: int = 0) -> list[int]:
    """Where sentences end in `text`, from `start`.

    After `. ? !` before a space or the end of what has arrived (so "3.14" in one piece stays
    whole), after OPEA's CJK marks, after a newline. One plain character class is scanned and the
    rare mark then looked at in Python: a lookahead in the pattern costs at every character.
    """
    ends = []
    size = len(text)
    for match in _MARKS.finditer(text, start):
        end = match.end()
        if end < size and text[end - 1] in _LATIN and not text[end].isspace():
            continue
        ends.append(end)
    return ends


CARRY_CHARS = 200
"""Context kept from a unit cut for length (`ItemCutter`): so a term split across units is still seen."""


@dataclass(slots=True)
class Unit(Generic[T]):
    """A piece of the stream checked as one."""

    items: list[T]
    """The source's items it holds (`ItemCutter`), or its text as one item (`TextCutter`)."""
    text: str
    """Its text; a unit whose text is blank is not checked (its verdict is `None`)."""
    context: str = ""
    """Text before it that a check may look at with it (`ItemCutter`: the unfinished sentence the unit before
    ended with, at most `CARRY_CHARS`)."""


class Cutter(Protocol[T]):
    """Groups a stream's items into units."""

    def feed(self, item: T) -> list[Unit[T]]:
        """The units `item` closed (often none)."""
        ...

    def flush(self) -> list[Unit[T]]:
        """The units left when the source is over."""
        ...


def last_sentence_end(text: str, start: int = 0) -> int | None:
    """Where the text after the last sentence end (at or after `start`) starts, or `None` if none ended."""
    ends = sentence_ends(text, start)
    return ends[-1] if ends else None


class ItemCutter(Generic[T]):
    """Units of whole items: one ends with the item whose text ends a sentence, or makes it `max_chars` long.

    Items without text (a role chunk, `[DONE]`) ride with the unit they arrive in.
    """

    __slots__ = ("_carry", "_items", "_max_chars", "_text", "_text_of")

    def __init__(self, text_of: Callable[[T], str], max_chars: int = 400) -> None:
        self._text_of = text_of
        self._max_chars = max_chars
        self._items: list[T] = []
        self._text = ""
        self._carry = ""

    def feed(self, item: T) -> list[Unit[T]]:  # noqa: D102
        self._items.append(item)
        piece = self._text_of(item)
        if not piece:
            return []
        seen = len(self._text)  # no sentence ended in it, or the unit would have closed: only the new text is scanned
        text = self._text = self._text + piece
        cut = last_sentence_end(text, seen) if _MARKS.search(piece) is not None else None
        if cut is None and len(text) < self._max_chars:
            return []
        unit = Unit(self._items, text, self._carry)
        self._carry = (text[cut:] if cut is not None else text)[-CARRY_CHARS:]
        self._items, self._text = [], ""
        return [unit]

    def flush(self) -> list[Unit[T]]:  # noqa: D102
        if not self._items:
            return []
        unit = Unit(self._items, self._text, self._carry if self._text else "")
        self._items, self._text = [], ""
        return [unit]


class TextCutter:
    """Units of text: one per sentence, or a window of at most `max_chars` cut at a space when none ends.

    The items are text pieces (`str`); each unit's `items` is `[its text]`.
    """

    __slots__ = ("_max_chars", "_text")

    def __init__(self, max_chars: int = 400) -> None:
        self._max_chars = max_chars
        self._text = ""

    def feed(self, item: str) -> list[Unit[str]]:  # noqa: D102
        if not item:
            return []
        text = self._text + item
        if _MARKS.search(item) is None and len(text) < self._max_chars:  # most tokens
            self._text = text
            return []
        seen = len(self._text)  # no sentence ended in what was kept: only the new text is scanned
        units = []
        start = 0
        for end in sentence_ends(text, seen):
            if text[start:end].strip():  # a blank piece (a newline after a sentence) starts the next one
                units.append(text[start:end])
                start = end
        rest = text[start:]
        while len(rest) >= self._max_chars:
            window = rest[: self._max_chars]
            space = max(window.rfind(" "), window.rfind("\t"))
            cut = space if space > 0 else self._max_chars  # a word is not split unless it is the whole window
            units.append(rest[:cut])
            rest = rest[cut:]
        self._text = rest
        return [Unit([unit], unit) for unit in units]

    def flush(self) -> list[Unit[str]]:  # noqa: D102
        text, self._text = self._text, ""
        return [Unit([text], text)] if text else []


_END = object()


@dataclass(slots=True)
class _Pending(Generic[T, R]):
    unit: Unit[T]
    check: "asyncio.Task[R] | None" = field(default=None)


class CheckedUnits(Generic[T, R]):
    """`source` cut into units by `cutter`, each checked by `check(unit)`; iterate it for `(unit, verdict)` in order.

    **Parameters:**

    * **source** - the stream (an LLM's events, text pieces); closed with `aclose()` when this is closed.
    * **cutter** - groups its items into units (`ItemCutter`, `TextCutter`).
    * **check** - a coroutine function deciding on one unit; called for units with text only.
    * **max_pending** - units read ahead of the consumer at most (then the source waits).
    """

    def __init__(
        self,
        source: AsyncIterator[T],
        cutter: Cutter[T],
        check: Callable[[Unit[T]], Coroutine[Any, Any, R]],
        *,
        max_pending: int,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self._source = source
        self._cutter = cutter
        self._check = check
        self._slots = asyncio.Semaphore(max_pending)
        self._pending: deque[_Pending[T, R] | BaseException | object] = deque()
        self._ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    def __aiter__(self) -> "CheckedUnits[T, R]":
        return self

    async def __anext__(self) -> tuple[Unit[T], R | None]:
        if self._closed:
            raise StopAsyncIteration
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())
        try:
            while not self._pending:
                self._ready.clear()
                await self._ready.wait()
            entry = self._pending.popleft()
            if isinstance(entry, _Pending):
                verdict = await entry.check if entry.check is not None else None
                self._slots.release()
                return entry.unit, verdict
        except BaseException:
            await self.aclose()
            raise
        await self.aclose()
        if isinstance(entry, BaseException):
            raise entry
        raise StopAsyncIteration

    async def _read(self) -> None:
        """Read the source into units, starting each unit's check as it closes."""
        cutter = self._cutter
        try:
            async for item in self._source:
                for unit in cutter.feed(item):
                    await self._start(unit)
            for unit in cutter.flush():
                await self._start(unit)
            self._put(_END)
        except Exception as exc:  # noqa: BLE001  # the consumer raises it after the units before
            self._put(exc)

    async def _start(self, unit: Unit[T]) -> None:
        await self._slots.acquire()
        pending: _Pending[T, R] = _Pending(unit)
        if unit.text.strip():
            pending.check = asyncio.get_running_loop().create_task(self._check(unit))
        self._put(pending)

    def _put(self, entry: "_Pending[T, R] | BaseException | object") -> None:
        self._pending.append(entry)
        self._ready.set()

    async def aclose(self) -> None:
        """Stop reading, cancel the checks not consumed yet, close the source (idempotent)."""
        if self._closed and self._reader is None:
            return
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        while self._pending:
            entry = self._pending.popleft()
            if isinstance(entry, _Pending) and entry.check is not None:
                if entry.check.done() and not entry.check.cancelled():
                    entry.check.exception()  # retrieved: the failed check of a unit never sent is not an error to log
                entry.check.cancel()
        closer = getattr(self._source, "aclose", None)
        if closer is not None:
            await closer()
