"""OPEA quirks reproduced on purpose, in one place.

* The `data: b'<token>'` stream framing of ChatQnA (its UIs parse Python bytes reprs).
* The sync `align_generator(gen)` hook: OPEA users write it as a plain generator over a *sync*
  iterator of chunks. We drive it from the async side with a greenlet: the user's generator runs
  in a child greenlet; each time it asks for the next upstream event, it switches back to the event
  loop's greenlet, which awaits the event and switches in again. No thread, no blocking; events
  that arrived together are handed over together, so it is two greenlet switches per network
  read, not per event (SQLAlchemy's asyncio layer bridges sync code the same way).
"""

import ast
import contextvars
import re
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any

import greenlet
import orjson

from megaservice.sse import parse_event

__all__ = [
    "DONE_FRAME",
    "drive_sync_generator",
    "error_frame",
    "event_text",
    "extract_chunk_str",
    "fake_stream",
    "opea_token_frame",
    "split_tokens",
]

DONE_FRAME = "data: [DONE]\n\n"
_TOKEN = re.compile(r"\s?\S+\s?", re.UNICODE)


def opea_token_frame(text: str) -> str:
    """Frame one token as ChatQnA does: `data: b'<utf-8 bytes repr>'` (UIs depend on it)."""
    return "data: " + repr(text.encode("utf-8")) + "\n\n"


def split_tokens(sentence: str) -> list[str]:
    """Split text into the word-ish tokens OPEA re-streams after a post-LLM node."""
    return _TOKEN.findall(sentence)


def extract_chunk_str(chunk_str: str) -> str:
    """Strip OPEA's `data: b'…'` framing from one frame; `""` for `[DONE]`."""
    if chunk_str == DONE_FRAME:
        return ""
    if chunk_str.startswith(("data: b'", 'data: b"')):
        chunk_str = chunk_str[len("data: b'") :]
    if chunk_str.endswith(("'\n\n", '"\n\n')):
        chunk_str = chunk_str[: -len("'\n\n")]
    return chunk_str


async def fake_stream(text: str) -> AsyncIterator[str]:
    """Answer a short-circuited request as a stream (a guardrail's refusal still reaches the UI as SSE)."""
    yield opea_token_frame(text)
    yield DONE_FRAME


def error_frame(body: dict[str, Any]) -> bytes:
    """The SSE event that ends a stream which failed after it started."""
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


def _delta_text(payload: Any) -> str | None:
    """Text of an OpenAI chat/completion chunk or a TGI token event."""
    if not isinstance(payload, dict):
        return None
    choices = payload.get("choices")
    if choices and isinstance(choices, list) and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            return delta.get("content") or ""
        text = choice.get("text")
        return text if isinstance(text, str) else ""
    token = payload.get("token")
    if isinstance(token, dict) and isinstance(token.get("text"), str):
        return str(token["text"])
    return None


def event_text(raw: bytes) -> tuple[str, bool]:
    """Return `(text, is_done)` of one upstream event, whatever its framing.

    Understands OpenAI/vLLM/TGI JSON chunks, OPEA's `b'…'` frames, `[DONE]`, and bare text
    (servers that stream plain text as `text/event-stream`).
    """
    event = parse_event(raw)
    if event is None:
        if raw.lstrip().startswith((b"data:", b":", b"event:", b"id:", b"retry:")):
            return "", False  # a comment or an event without data
        return raw.decode("utf-8", errors="replace"), False
    data = event.data
    if data.strip() == "[DONE]":
        return "", True
    if data.startswith(("b'", 'b"')):
        try:
            value = ast.literal_eval(data)
        except (ValueError, SyntaxError):
            return data, False
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace"), False
    if data.startswith("{"):
        try:
            text = _delta_text(orjson.loads(data))
        except orjson.JSONDecodeError:
            return data, False
        if text is not None:
            return text, False
    return data, False


_NEED = object()
_END = object()
_FINISHED = object()


class _Feed:
    """What the hook's greenlet and the event loop share: input not yet pulled, output not yet sent."""

    __slots__ = ("ended", "inbox", "outbox")

    def __init__(self) -> None:
        self.inbox: deque[Any] = deque()
        self.outbox: list[Any] = []
        self.ended = False


class _PullIterator(Iterator[Any]):
    """The sync iterator handed to the user's hook; it asks the event loop only when its batch is used up."""

    __slots__ = ("_feed",)

    def __init__(self, feed: _Feed) -> None:
        self._feed = feed

    def __next__(self) -> Any:
        feed = self._feed
        while not feed.inbox:
            if feed.ended or greenlet.getcurrent().parent.switch(_NEED) is _END:
                feed.ended = True
                raise StopIteration
        return feed.inbox.popleft()


async def drive_sync_generator(
    hook: Callable[..., Any], source: AsyncIterator[list[Any]], kwargs: dict[str, Any]
) -> AsyncGenerator[list[Any], None]:
    """Run `hook(sync_iterator_over(source), **kwargs)` (a sync generator) without blocking the loop.

    `source` yields batches (lists of items that arrived together). The hook runs in a child
    greenlet and pulls one item at a time; while its batch lasts it runs on without leaving the
    greenlet, collecting what it yields. When it needs more input, what it yielded so far is
    yielded here as one batch, and the next batch is awaited from `source` in the event loop's own
    task. No thread is involved. If the stream is abandoned, the hook gets `GreenletExit` at its
    current `next()`, so its `finally` blocks run.
    """
    feed = _Feed()

    def run(*_: object) -> object:
        outbox = feed.outbox
        for item in hook(_PullIterator(feed), **kwargs):
            outbox.append(item)
        return _FINISHED

    child = greenlet.greenlet(run)
    child.gr_context = contextvars.copy_context()
    value: object = None
    try:
        while True:
            try:
                signal = child.switch(value)
            except Exception:
                if feed.outbox:  # what the hook yielded before it failed still goes out
                    yield feed.outbox[:]
                    feed.outbox.clear()
                raise
            if feed.outbox:
                yield feed.outbox[:]
                feed.outbox.clear()
            if signal is _FINISHED:
                return
            try:
                batch = await anext(source)
            except StopAsyncIteration:
                value = _END
            else:
                feed.inbox.extend(batch)
                value = None
    finally:
        if not child.dead:
            child.throw(greenlet.GreenletExit)
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
