"""`python -m megaservice.observe`: receive spans over OTLP/HTTP and show the traces in a browser.

One process, one app, two listening sockets: spans are POSTed to `--port` (4318) and the viewer
is at `--ui-port` (16686), as with Jaeger; each port also answers what the other does.
"""

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Sequence

from megaservice.observe import OTLP_PORT, UI_PORT
from megaservice.observe.store import TraceStore
from megaservice.observe.viewer import TraceViewer

__all__ = ["main"]


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"cannot listen on {host}:{port}: {exc.strerror} (is Jaeger or another receiver running?)"
        ) from None
    sock.set_inheritable(True)
    return sock


async def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    store = TraceStore(max_traces=args.max_traces, max_spans=args.max_spans)
    sockets = [_bind(args.host, args.port)]
    if args.ui_port != args.port or args.port == 0:
        sockets.append(_bind(args.host, args.ui_port))
    ports = [int(sock.getsockname()[1]) for sock in sockets]
    config = uvicorn.Config(TraceViewer(store), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=sockets))
    while not server.started:
        if serving.done():
            break
        await asyncio.sleep(0.01)
    if server.started:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):  # ours, not uvicorn's: it re-raises them when it stops
            loop.add_signal_handler(signum, setattr, server, "should_exit", True)
        shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        sys.stdout.write(f"OTLP/HTTP receiver: http://{shown}:{ports[0]}/v1/traces\n")
        sys.stdout.write(f"trace viewer: http://{shown}:{ports[-1]}/\n")
        sys.stdout.write(f"keeping the last {store.max_traces} traces, {store.max_spans} spans at most, in memory\n")
        sys.stdout.flush()
    try:
        await serving
    finally:
        for sock in sockets:
            sock.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Receive spans over OTLP/HTTP (protobuf or JSON) and show recent traces in a browser."""
    parser = argparse.ArgumentParser(prog="python -m megaservice.observe", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=OTLP_PORT, help=f"where spans are received (default: {OTLP_PORT}; 0: a free port)"
    )
    parser.add_argument(
        "--ui-port", type=int, default=UI_PORT, help=f"where the viewer is served (default: {UI_PORT}; 0: a free port)"
    )
    parser.add_argument("--max-traces", type=int, default=500, help="traces kept, the latest (default: 500)")
    parser.add_argument("--max-spans", type=int, default=20_000, help="spans kept in all (default: 20000)")
    args = parser.parse_args(argv)
    if args.max_traces < 1 or args.max_spans < 1:
        parser.error("--max-traces and --max-spans must be at least 1")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
