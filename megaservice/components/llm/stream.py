"""The model server's stream, relayed to the client event by event as it arrives.

One loop, no buffering and no thread: each read of the upstream socket is cut where its last
complete SSE event ends (`EventCutter`), and those events go out in one write, untouched; an event
cut in half by the network waits for its other half. When the upstream answer is complete after a
read, its last events go out with the end of the body, in one write.

    upstream fails after the first byte   its error as one `event: error` event (the orchestrator's frame,
                                          plus OpenAI's `error` object), then the end of the stream
    upstream stalls                       the same, once `LLM_READ_TIMEOUT` passed without a byte
    client leaves                         the request's task is cancelled: the upstream connection is
                                          closed, so the model server stops generating for nobody
"""

import logging
import time
from collections.abc import Callable

from starlette.types import Send

from megaservice._compat import error_frame
from megaservice.client import StreamedAnswer
from megaservice.components.llm.cutter import EventCutter
from megaservice.components.llm.metrics import TokenClock
from megaservice.exceptions import UpstreamError
from megaservice.responses import StreamingResponse

__all__ = ["UpstreamStream"]

logger = logging.getLogger(__name__)

_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}  # no proxy buffering either


class _NoBody:
    """The `body_iterator` of an `UpstreamStream`: it writes its body itself."""

    def __aiter__(self) -> "_NoBody":
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


_NO_BODY = _NoBody()


class UpstreamStream(StreamingResponse):
    """A `text/event-stream` response relaying `answer`, a model server's open stream.

    `on_end(seconds, first_event_seconds)` is called once the stream ended, however it ended. Its
    events are timed from `started` (`megaservice.components.llm.metrics`).
    """

    def __init__(
        self,
        answer: StreamedAnswer,
        node: str,
        url: str,
        *,
        started: float,
        on_end: Callable[[float, float | None], None] | None = None,
    ) -> None:
        super().__init__(_NO_BODY, headers=_HEADERS)
        self._answer = answer
        self._node = node
        self._url = url
        self._started = started
        self._first: float | None = None
        self._on_end = on_end
        self._open = True

    async def _stream(self, send: Send, chunks: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        answer = self._answer
        cutter = EventCutter(self._node, self._url)
        finished = getattr(answer, "finished", None)  # the pooled client's answer can tell
        clock = TokenClock(self._started)
        last = b""
        try:
            async for data in answer.content.iter_any():
                events = cutter.feed(data)
                if not events:
                    continue
                if self._first is None:
                    self._first = time.monotonic()
                clock.tick(events.count(b"\n\n") or 1)
                if finished is not None and finished():
                    last = events  # the upstream is done: these go out with the end of the body
                else:
                    await chunks({"type": "http.response.body", "body": events, "more_body": True})
            rest = cutter.flush()
            if rest:
                clock.tick(1)
                last += rest
            self._finish(release=True)
        except Exception as exc:  # noqa: BLE001  # the response has started: a failure is told in-band
            self._finish(release=False)
            last += _failure(exc)
        await send({"type": "http.response.body", "body": last, "more_body": False})

    def _finish(self, *, release: bool) -> None:
        """The upstream answer is over: its connection pooled again (`release`) or dropped; `on_end` told."""
        if not self._open:
            return
        self._open = False
        if release:
            self._answer.release()
        else:
            self._answer.close()  # which is how the model server learns nobody reads any more
        if self._on_end is not None:
            now = time.monotonic()
            first = None if self._first is None else self._first - self._started
            self._on_end(now - self._started, first)

    async def _close_source(self) -> None:
        self._finish(release=False)  # a no-op unless the stream was cut short (the client left, or never read)


def _failure(exc: Exception) -> bytes:
    """The `event: error` event telling the client the stream failed (logged here).

    Its body is the orchestrator's (`UpstreamError.to_dict()`) plus OpenAI's `error` object, which
    is what makes the openai client (and LangChain over it) raise instead of reading on.
    """
    if isinstance(exc, UpstreamError):
        logger.warning("stream from %s failed after it started: %s", exc.node, exc)
        body = exc.to_dict()
    else:
        logger.error("stream failed after it started", exc_info=exc)
        body = {"object": "error", "type": "internal_error", "message": type(exc).__name__, "code": 500}
    body["error"] = {"message": body["message"], "type": body["type"], "code": body["code"]}
    return error_frame(body)
