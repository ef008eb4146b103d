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
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import greenlet
import orjson

from megaservice.sse import parse_event

__all__ = [
    "DONE_FRAME",
    "GeneratorBridge",
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


def _one_line_chunk(raw: bytes) -> str | None:
    """The text of the usual event, an OpenAI chunk on one line, without SSE parsing; `None` for any other."""
    if not (raw.startswith(b"data: {") and raw.endswith(b"\n\n") and raw.count(b"\n") == 2):
        return None
    try:
        return _delta_text(orjson.loads(raw[6:]))
    except orjson.JSONDecodeError:
        return None


def event_text(raw: bytes) -> tuple[str, bool]:
    """Return `(text, is_done)` of one upstream event, whatever its framing.

    Understands OpenAI/vLLM/TGI JSON chunks, OPEA's `b'…'` frames, `[DONE]`, and bare text
    (servers that stream plain text as `text/event-stream`).
    """
    text = _one_line_chunk(raw)
    if text is not None:
        return text, False
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
_FINISHED = object()


class GeneratorBridge:
    """Drive a sync generator hook, `hook(iterator, **kwargs)`, one batch of input at a time.

    The hook runs in a child greenlet. `feed(batch)` hands it the batch and runs it until it asks
    for more input than there is; what it yielded meanwhile is returned. So a batch costs two
    greenlet switches and no event-loop round trip, whatever the hook does with it, and the caller
    stays an ordinary loop over its source (no extra async-generator layer).

    A hook that raises after yielding something for the batch: `feed` returns what it yielded and
    keeps the exception in `error` (the caller raises it once that output has gone out).
    """

    __slots__ = ("_caller", "_child", "_ended", "_inbox", "error", "finished", "outbox")

    def __init__(self, hook: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        self._inbox: deque[Any] = deque()
        self.outbox: list[Any] = []
        self._ended = False
        self.finished = False
        """The hook has returned: it wants no more input."""
        self.error: Exception | None = None
        self._caller = greenlet.getcurrent()

        def run(*_: object) -> object:
            for item in hook(_PullIterator(self), **kwargs):
                self.outbox.append(item)
            return _FINISHED

        self._child = greenlet.greenlet(run)
        self._child.gr_context = contextvars.copy_context()

    def feed(self, batch: list[Any]) -> list[Any]:
        """Give the hook `batch`; return what it yielded until it needed more."""
        if self.finished:
            return []
        self._inbox.extend(batch)
        return self._resume()

    def end(self) -> list[Any]:
        """Tell the hook its input is over; return what it yields until it returns."""
        self._ended = True
        if self.finished:
            return []
        return self._resume()

    def close(self) -> None:
        """Stop a hook that has not finished; its `finally` blocks run."""
        if not self._child.dead:
            self._child.throw(greenlet.GreenletExit)

    def _resume(self) -> list[Any]:
        caller = greenlet.getcurrent()
        if caller is not self._caller:  # fed from another greenlet than the one that made the bridge
            self._caller = self._child.parent = caller
        try:
            signal = self._child.switch()
        except Exception as exc:
            self.finished = True
            if not self.outbox:
                raise
            self.error = exc
        else:
            self.finished = signal is _FINISHED
        out = self.outbox
        self.outbox = []
        return out


class _PullIterator(Iterator[Any]):
    """The sync iterator handed to the user's hook; it goes back to the caller only when its batch is used up."""

    __slots__ = ("_bridge",)

    def __init__(self, bridge: GeneratorBridge) -> None:
        self._bridge = bridge

    def __next__(self) -> Any:
        bridge = self._bridge
        inbox = bridge._inbox
        while not inbox:
            if bridge._ended:
                raise StopIteration
            bridge._caller.switch(_NEED)
        return inbox.popleft()
