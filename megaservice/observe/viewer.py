"""The receiver and viewer as one ASGI app: OTLP/HTTP in, a trace list and waterfall page and a JSON API out.

    POST /v1/traces           OTLP/HTTP export requests (protobuf or JSON, compressed or not)
    GET  /                    the viewer: recent traces, and one trace's waterfall (`#trace=<id>`)
    GET  /api/traces          recent traces, most recently updated first (`?limit=`, `?service=`, `?errors=1`)
    GET  /api/traces/{id}     one trace: its summary and its spans in waterfall order
    GET  /v1/ready            200 once it listens (also `/v1/health_check`)

The page is plain HTML, JS and CSS shipped in the package (`static/`); it fetches nothing from
elsewhere and reads only the JSON API above.
"""

import json
import re
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from megaservice.observe.otlp import TRACES_PATH, answer, read_body, receive_export
from megaservice.observe.store import TraceStore

__all__ = ["TraceViewer"]

_ASSETS = {
    "/": ("viewer.html", "text/html; charset=utf-8"),
    "/static/viewer.js": ("viewer.js", "text/javascript; charset=utf-8"),
    "/static/viewer.css": ("viewer.css", "text/css; charset=utf-8"),
}
_PAGE_HEADERS = {
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}
_TRACE_ID = re.compile(r"^/api/traces/([0-9a-fA-F]{32})$")
_MAX_LIMIT = 1000


class TraceViewer:
    """An ASGI app receiving spans into a `TraceStore` and showing them (module docstring)."""

    def __init__(self, store: TraceStore | None = None) -> None:
        self.store = store if store is not None else TraceStore()
        self.requests = 0
        """HTTP requests received (exports, page and API requests, anything)."""
        folder = resources.files("megaservice.observe") / "static"
        self._assets = {path: ((folder / name).read_bytes(), kind) for path, (name, kind) in _ASSETS.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request (or run the lifespan: there is nothing to start)."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.requests += 1
        path, method = scope["path"], scope["method"]
        if path == TRACES_PATH and method == "POST":
            await receive_export(scope, receive, send, self.store.add)
            return
        await read_body(receive)
        if method not in ("GET", "HEAD"):
            await _json(send, 405, {"error": f"{method} {path}: spans are received at POST {TRACES_PATH}"})
        elif path in self._assets:
            body, kind = self._assets[path]
            await answer(send, 200, body, kind, _PAGE_HEADERS)
        elif path in ("/v1/ready", "/v1/health_check"):
            await _json(send, 200, {"status": "ok"})
        elif path == "/api/traces":
            await self._list(scope, send)
        elif match := _TRACE_ID.match(path):
            trace = self.store.trace(match.group(1).lower())
            if trace is None:
                await _json(send, 404, {"error": f"no trace {match.group(1)} here (it may have been let go)"})
            else:
                await _json(send, 200, trace)
        else:
            await _json(send, 404, {"error": f"nothing at {path}; the viewer is at /, the API at /api/traces"})

    async def _list(self, scope: Scope, send: Send) -> None:
        query = {key: values[-1] for key, values in parse_qs(scope["query_string"].decode("latin-1")).items()}
        try:
            limit = min(max(int(query.get("limit", "100")), 1), _MAX_LIMIT)
        except ValueError:
            await _json(send, 400, {"error": f"limit must be a whole number, got {query['limit']!r}"})
            return
        errors = query.get("errors", "").lower() in ("1", "true", "yes")
        store = self.store
        await _json(
            send,
            200,
            {
                "traces": store.summaries(limit=limit, service=query.get("service") or None, errors=errors),
                "held": {"traces": len(store), "spans": store.span_count},
                "limits": {"max_traces": store.max_traces, "max_spans": store.max_spans},
                "received_spans": store.received,
                "evicted_traces": store.evicted,
            },
        )


async def _json(send: Send, status: int, content: Any) -> None:
    await answer(send, status, json.dumps(content, default=str).encode(), headers={"cache-control": "no-store"})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
