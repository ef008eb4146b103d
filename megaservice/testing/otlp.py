"""An OTLP/HTTP trace receiver: the spans services export, collected for tests or shown as traces complete.

    receiver = OTLPReceiver()
    async with serve(receiver) as url:              # megaservice.testing.serve: a real loopback socket
        ...                                         # services run with TELEMETRY_ENDPOINT=f"{url}/v1/traces"
        spans = await receiver.wait_for(lambda spans: len(spans) >= 6)

    python -m megaservice.testing.otlp --port 4318  # one line per trace, once no span of it came for --settle s

It takes what OpenTelemetry's OTLP/HTTP exporters send: `POST /v1/traces` with an
`ExportTraceServiceRequest` in protobuf (`application/x-protobuf`) or OTLP's JSON
(`application/json`), compressed (gzip, deflate) or not; it answers as a collector does. The
messages are decoded with `opentelemetry-proto` (installed by the `tracing` extra). Nothing is
forwarded or stored on disk: the spans stay in `OTLPReceiver.spans`. The decoding is
`megaservice.observe`'s, whose receiver also keeps recent traces (bounded) and shows them in a browser.
"""

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Sequence

from starlette.types import Receive, Scope, Send

from megaservice.observe.otlp import TRACES_PATH, ReceivedSpan, answer, decode, read_body, receive_export
from megaservice.observe.store import root_of

__all__ = ["OTLPReceiver", "ReceivedSpan", "decode", "main", "summary", "tree"]


class OTLPReceiver:
    """An ASGI app collecting the spans POSTed to `/v1/traces` (module docstring).

    `requests` counts every HTTP request that reached it, whatever its path or body, so a test can
    tell that nothing was sent at all. `on_spans` is called with the spans of each export request;
    with `keep=False` they are not kept (a receiver that runs for long).
    """

    def __init__(self, *, on_spans: Callable[[list[ReceivedSpan]], None] | None = None, keep: bool = True) -> None:
        self.spans: list[ReceivedSpan] = []
        """Every span received, in the order received (none with `keep=False`)."""
        self.requests = 0
        """HTTP requests received (export requests, and anything else)."""
        self.received = 0
        """Spans received (kept or not)."""
        self._on_spans = on_spans
        self._keep = keep
        self._arrived: asyncio.Event | None = None

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """The spans received, by trace id, each trace's in order of their start."""
        found: dict[str, list[ReceivedSpan]] = {}
        for span in self.spans:
            found.setdefault(span.trace_id, []).append(span)
        return {trace: sorted(spans, key=lambda s: s.start_ns) for trace, spans in found.items()}

    async def wait_for(
        self, condition: Callable[[list[ReceivedSpan]], bool], timeout: float = 20.0
    ) -> list[ReceivedSpan]:
        """The spans once `condition(spans)` holds (checked as spans arrive); `TimeoutError` after `timeout` s."""
        async with asyncio.timeout(timeout):
            while not condition(self.spans):
                if self._arrived is None:
                    self._arrived = asyncio.Event()
                self._arrived.clear()
                await self._arrived.wait()
        return self.spans

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Receive one export request (or run the lifespan: there is nothing to start)."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.requests += 1
        if scope["path"] != TRACES_PATH or scope["method"] != "POST":
            await read_body(receive)
            await answer(send, 404, b'{"error": "OTLP/HTTP traces are received at POST /v1/traces"}')
            return
        await receive_export(scope, receive, send, self._add)

    def _add(self, spans: list[ReceivedSpan]) -> None:
        self.received += len(spans)
        if self._keep:
            self.spans.extend(spans)
        if self._on_spans is not None:
            self._on_spans(spans)
        if self._arrived is not None:
            self._arrived.set()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# -- showing traces ---------------------------------------------------------------------------------


def summary(spans: Sequence[ReceivedSpan]) -> str:
    """One line for one trace: its id, root span, duration, services, spans and errors."""
    root = root_of(spans)
    duration = (max(s.end_ns for s in spans) - min(s.start_ns for s in spans)) / 1e6
    services = list(dict.fromkeys(span.service for span in spans))
    errors = sum(1 for span in spans if span.status == "error")
    nodes = [span.name.removeprefix("node ") for span in spans if span.name.startswith("node ")]
    line = f"trace {root.trace_id}  {root.name} [{root.service}]  {duration:.1f} ms  {len(spans)} spans"
    line += f"  services: {', '.join(services)}"
    if nodes:
        line += f"  nodes: {' > '.join(nodes)}"
    if errors:
        line += f"  ERRORS: {errors}"
    return line


def tree(spans: Sequence[ReceivedSpan]) -> str:
    """The trace's spans as an indented tree (children under their parent, by start time)."""
    children: dict[str | None, list[ReceivedSpan]] = {}
    ids = {span.span_id for span in spans}
    for span in sorted(spans, key=lambda s: s.start_ns):
        children.setdefault(span.parent_id if span.parent_id in ids else None, []).append(span)
    start = min(span.start_ns for span in spans)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in children.get(parent, ()):
            mark = "  ERROR " + span.status_message if span.status == "error" else ""
            offset = (span.start_ns - start) / 1e6
            lines.append(f"{'  ' * depth}{span.name} [{span.service}] +{offset:.1f} ms {span.duration_ms:.1f} ms{mark}")
            walk(span.span_id, depth + 1)

    walk(None, 1)
    return "\n".join(lines)


class _Board:
    """Traces being received; each shown once no span of it arrived for `settle` seconds."""

    def __init__(self, settle: float, show_tree: bool, quiet: bool) -> None:
        self.settle = settle
        self.show_tree = show_tree
        self.quiet = quiet
        self.pending: dict[str, tuple[float, list[ReceivedSpan]]] = {}

    def add(self, spans: list[ReceivedSpan]) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        for span in spans:
            _, known = self.pending.get(span.trace_id, (now, []))
            known.append(span)
            self.pending[span.trace_id] = (now, known)

    def flush(self, *, everything: bool = False) -> None:
        now = time.monotonic()
        for trace, (last, spans) in list(self.pending.items()):
            if everything or now - last >= self.settle:
                del self.pending[trace]
                text = summary(spans) + ("\n" + tree(spans) if self.show_tree else "")
                sys.stdout.write(text + "\n")
        sys.stdout.flush()


async def _run(args: argparse.Namespace) -> None:
    import uvicorn

    board = _Board(args.settle, args.tree, args.quiet)
    receiver = OTLPReceiver(on_spans=board.add, keep=False)
    config = uvicorn.Config(receiver, host=args.host, port=args.port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if serving.done():
                break
            await asyncio.sleep(0.01)
        if server.started:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):  # ours, not uvicorn's: it re-raises them when it stops
                loop.add_signal_handler(signum, setattr, server, "should_exit", True)
            port = server.servers[0].sockets[0].getsockname()[1] if server.servers else args.port
            sys.stdout.write(f"OTLP/HTTP receiver: http://{args.host}:{port}/v1/traces\n")
            sys.stdout.flush()
        while not serving.done():
            await asyncio.wait([serving], timeout=0.25)
            board.flush()
        serving.result()
    finally:
        board.flush(everything=True)
        if args.quiet:
            sys.stdout.write(f"{receiver.received} spans in {receiver.requests} requests\n")
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m megaservice.testing.otlp`: receive spans over OTLP/HTTP and print a line per trace."""
    parser = argparse.ArgumentParser(prog="python -m megaservice.testing.otlp", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=4318, help="the port to listen on (default: OTLP/HTTP's 4318; 0: a free one)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=6.0,
        help="show a trace once no span of it arrived for this many seconds (default: 6; exporters send "
        "every 5 s unless OTEL_BSP_SCHEDULE_DELAY says otherwise)",
    )
    parser.add_argument("--tree", action="store_true", help="also print each trace's spans as a tree")
    parser.add_argument("--quiet", action="store_true", help="print nothing per trace; the span count at the end")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args))


if __name__ == "__main__":
    main()
