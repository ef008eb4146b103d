"""An LLM's stream on its way to the client: one loop reads, splits, hooks, times and writes it.

    RelayedStream   the response a streaming LLM node's result is; built *before* the LLM is called,
                    so what is left once its headers arrive is to attach the answer
    Relay           the steps a batch of events goes through: the `align_generator` hook (a sync
                    generator through a greenlet bridge), the token clock, the error event
    pump()          the one loop: read → split into events → relay → write, events that arrived
                    together in one write, the last ones with the end of the body

A token passes through no async-generator layer between the upstream's socket and the client's.
When OPEA code takes `body_iterator` over (it may iterate or wrap it), the same loop runs in a task
and hands its output over one chunk at a time.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from starlette.types import Send

from megaservice import _compat
from megaservice._transport.base import StreamedAnswer
from megaservice.exceptions import UpstreamError, UpstreamProtocolError
from megaservice.metrics import OrchestratorMetrics
from megaservice.responses import StreamingResponse, aclose, join
from megaservice.sse import EventSplitter

__all__ = [
    "MAX_EVENT_BYTES",
    "EventReader",
    "Relay",
    "RelayedStream",
    "StreamGuard",
    "pump",
    "read_batches",
    "singletons",
]

logger = logging.getLogger("megaservice.orchestrator")

MAX_EVENT_BYTES = 1024 * 1024
"""Largest SSE event accepted from a streaming node; a longer one ends the stream with an error event."""

Write = Callable[[list[Any], bool], Awaitable[None]]
"""Write a batch of chunks (`str`/`bytes`) of the body; `False` as the second argument: it is the last one."""


class StreamGuard:
    """Releases a stream's upstream answer and its pending-gauge count exactly once, however it ends."""

    __slots__ = ("_answers", "_metrics", "done", "owns_pending")

    def __init__(self, metrics: OrchestratorMetrics) -> None:
        self._metrics = metrics
        self._answers: list[StreamedAnswer] = []
        self.done = False
        self.owns_pending = False

    def track(self, answer: StreamedAnswer) -> None:
        self._answers.append(answer)

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        for answer in self._answers:
            answer.close()
        if self.owns_pending:
            self._metrics.pending_update(False)


class _TokenClock:
    """Times a stream's tokens for the first-token and inter-token latency histograms."""

    __slots__ = ("_first", "_first_token", "_inter_token", "_last")

    def __init__(self, metrics: OrchestratorMetrics, req_start: float) -> None:
        self._first_token = metrics.first_token_latency.labels()
        self._inter_token = metrics.inter_token_latency.labels()
        self._last = req_start
        self._first = True

    def tick(self, tokens: int) -> None:
        """`tokens` went out together now: the first waited since the last write, the others not at all."""
        now = time.monotonic()
        gap = now - self._last
        self._last = now
        if self._first:
            self._first = False
            self._first_token.observe(gap)
            tokens -= 1
            gap = 0.0
        if tokens:
            self._inter_token.observe(gap)
            for _ in range(tokens - 1):
                self._inter_token.observe(0.0)


class Relay:
    """What a batch of upstream events goes through on its way to the client.

    Events that arrived together stay together: the hook gets them as one batch, and what it
    yields for them goes out in one write and counts as tokens with no time between them, which
    is what the client sees.
    """

    __slots__ = ("_bridge", "_clock", "_metrics", "_req_start", "guard")

    def __init__(
        self,
        metrics: OrchestratorMetrics,
        req_start: float,
        guard: StreamGuard,
        bridge: "_compat.GeneratorBridge | None",
    ) -> None:
        self._bridge = bridge
        self._clock = _TokenClock(metrics, req_start)
        self.guard = guard
        self._metrics = metrics
        self._req_start = req_start

    @property
    def done(self) -> bool:
        """The hook wants no more input (it returned, or failed)."""
        return self._bridge is not None and self._bridge.finished

    def feed(self, batch: list[Any]) -> list[Any]:
        """What goes to the client for the upstream events `batch`."""
        bridge = self._bridge
        if bridge is not None:
            batch = bridge.feed(batch)
        if batch:
            self._clock.tick(len(batch))
        return batch

    def finish(self, rest: list[Any]) -> list[Any]:
        """What goes to the client once the upstream stream is over (`rest`: its unterminated last event).

        If the hook failed, its error event comes last, after what it yielded before failing.
        """
        out = self.feed(rest) if rest else []
        bridge = self._bridge
        if bridge is None:
            return out
        try:
            tail = bridge.end()  # nothing once the hook has returned or failed
        except Exception as exc:  # noqa: BLE001  # told in-band: the response has started
            return [*out, self.failure(exc)]
        if tail:
            self._clock.tick(len(tail))
            out += tail
        if bridge.error is not None:
            out.append(self.failure(bridge.error))
        return out

    def failure(self, exc: Exception) -> bytes:
        """The SSE event that tells the client the stream failed (logged here).

        Its body is the error body (`UpstreamError.to_dict()`, which names the node) plus OpenAI's
        `error` object (`message`, `type`, `code`), which makes OpenAI's clients raise `APIError`.
        """
        if isinstance(exc, UpstreamError):
            logger.warning("stream from %s failed after it started: %s", exc.node, exc)
            body = exc.to_dict()
            code: object = exc.status_code
        else:
            logger.error("stream failed after it started", exc_info=exc)
            body = {"object": "error", "type": "internal_error", "message": type(exc).__name__}
            code = 500
        body["error"] = {"message": body["message"], "type": body["type"], "code": code}
        return _compat.error_frame(body)

    def close(self) -> None:
        self.guard.finish()
        self._metrics.request_update(self._req_start)
        if self._bridge is not None:
            self._bridge.close()


class EventReader:
    """An upstream's SSE byte stream cut into complete raw events (framing included), with the event size limit."""

    __slots__ = ("_node", "_splitter", "_url")

    def __init__(self, node: str, url: str) -> None:
        self._splitter = EventSplitter()
        self._node = node
        self._url = url

    def feed(self, data: bytes) -> list[bytes]:
        """The events `data` completed."""
        splitter = self._splitter
        events = splitter.feed(data)
        if splitter.pending > MAX_EVENT_BYTES:
            raise UpstreamProtocolError(
                f"{self._node} sent an SSE event longer than {MAX_EVENT_BYTES} bytes", node=self._node, url=self._url
            )
        return events

    def flush(self) -> list[bytes]:
        """What is left once the stream is over (an unterminated last event)."""
        rest = self._splitter.flush()
        return [rest] if rest else []


async def pump(
    relay: Relay,
    source: AsyncIterator[Any],
    write: Write,
    reader: EventReader | None = None,
    answer: StreamedAnswer | None = None,
) -> None:
    """Relay `source` to `write` until it ends, the hook is done, or something fails (told in-band).

    `source` yields raw bytes cut into events by `reader`, or (without one) batches of events.
    `answer` is the upstream answer read: released to its pool if read to the end, else closed.
    """
    completed = False
    finished = getattr(answer, "finished", None)
    held: list[Any] = []
    try:
        try:
            async for data in source:
                events = reader.feed(data) if reader is not None else data
                if events:
                    out = relay.feed(events)
                    if out:
                        if finished is not None and finished():  # the upstream is over: one write with the end
                            held = out
                        else:
                            await write(out, True)
                    if relay.done:
                        break
            else:
                completed = True
            last = held + relay.finish(reader.flush() if completed and reader is not None else [])
        except Exception as exc:  # noqa: BLE001  # after the first byte a failure can only be told in-band
            last = [*held, relay.failure(exc)]
    finally:
        if answer is not None:
            if completed:
                answer.release()  # read to the end: the connection goes back to the pool
            else:
                answer.close()  # abandoned or failed: drop the connection, which stops the upstream
        relay.close()
        await aclose(source)
    await write(last, False)


class RelayedStream(StreamingResponse):
    """A streaming LLM node's result: the upstream's stream through `Relay` to the client, by `pump()`.

    Built before the LLM is called; `attach()` gives it the answer once the headers are in.
    """

    def __init__(self, relay: Relay) -> None:
        self._pulled = _Pulled(relay)
        super().__init__(self._pulled)

    def attach(
        self, source: AsyncIterator[Any], reader: EventReader | None = None, answer: StreamedAnswer | None = None
    ) -> None:
        """Stream from `source` (raw bytes cut by `reader`, or batches), reading the upstream `answer`."""
        pulled = self._pulled
        pulled.source = source
        pulled.reader = reader
        pulled.answer = answer

    async def _stream(self, send: Send, chunks: Send) -> None:
        pulled = self._pulled
        if self.body_iterator is not pulled or pulled.started:
            await super()._stream(send, chunks)  # OPEA code took the body over
            return
        pulled.started = True
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        except BaseException:
            await pulled.abandon()
            raise

        async def write(batch: list[Any], more: bool) -> None:
            body = join(batch) if batch else b""
            await (chunks if more else send)({"type": "http.response.body", "body": body, "more_body": more})

        await pulled.run(write)

    async def _close_source(self) -> None:
        pulled = self._pulled
        if self.body_iterator is not pulled:
            await super()._close_source()  # the iterator OPEA code put in its place
        if pulled.started:
            await pulled.aclose()
        else:  # never streamed: release what was built for it
            pulled.started = True
            await pulled.abandon()


class _Pulled:
    """What a `RelayedStream` relays, and its `body_iterator`: `pump()` run in a task, its writes handed out one by one.

    Iterated only when OPEA code takes the body over; otherwise the response calls `run()` itself.
    """

    __slots__ = ("_items", "_relay", "_task", "_wake", "answer", "reader", "source", "started")
    # One chunk at a time, as OPEA code iterating a stream expects (events, or OPEA frames after a guardrail).

    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        self.source: AsyncIterator[Any] | None = None
        self.reader: EventReader | None = None
        self.answer: StreamedAnswer | None = None
        self._task: asyncio.Task[None] | None = None
        self._items: deque[Any] = deque()
        self._wake = asyncio.Event()
        self.started = False

    def run(self, write: Write) -> Coroutine[Any, Any, None]:
        assert self.source is not None, "RelayedStream.attach() was not called"
        return pump(self._relay, self.source, write, self.reader, self.answer)

    async def abandon(self) -> None:
        """The stream will not be relayed: drop the upstream answer, count the request out."""
        if self.answer is not None:
            self.answer.close()
        self._relay.close()
        if self.source is not None:
            await aclose(self.source)

    def __aiter__(self) -> "_Pulled":
        return self

    async def __anext__(self) -> Any:
        if self._task is None:
            self.started = True
            self._task = asyncio.get_running_loop().create_task(self.run(self._write))
        while not self._items:
            if self._task.done():
                self._task.result()  # raise what the loop raised
                raise StopAsyncIteration
            self._wake.clear()
            waiter = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait((waiter, self._task), return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        return self._items.popleft()

    async def _write(self, batch: list[Any], more: bool) -> None:
        if batch:
            self._items.extend(batch)
            self._wake.set()

    async def aclose(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def read_batches(answer: StreamedAnswer, node: str, url: str) -> AsyncIterator[list[bytes]]:
    """The upstream's SSE events as they complete, a batch per network read (raw bytes, framing included).

    For the streams that go through another step before `pump()` (a node after the LLM, an async
    `align_generator` hook). The answer is released when read to the end, else closed.
    """
    reader = EventReader(node, url)
    completed = False
    try:
        async for data in answer.content.iter_any():  # everything received so far, in one piece
            events = reader.feed(data)
            if events:
                yield events
        completed = True
        rest = reader.flush()
        if rest:
            yield rest
    finally:
        if completed:
            answer.release()
        else:
            answer.close()


async def singletons(items: AsyncIterator[Any]) -> AsyncIterator[list[Any]]:
    """Each item of `items` as a batch of its own (the output of an async hook)."""
    try:
        async for item in items:
            yield [item]
    finally:
        await aclose(items)
