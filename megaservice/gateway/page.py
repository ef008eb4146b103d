"""The chat page at `/`: plain HTML, JS and CSS shipped in the package (`static/`), nothing fetched from elsewhere.

The files are read once when the megaservice is built. The page learns what this megaservice
offers (its name, whether it has dataprep) from a JSON block in the HTML, so it needs no request
for that; everything else it does goes through the megaservice's own API:

    POST /v1/chat/completions (stream)   the answer token by token, then the sources chunk
    POST /v1/dataprep/ingest|get|delete  upload a document (with progress), list, delete
"""

from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["ASSETS", "Page"]

ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
"""The files served under `/static/`, with their types."""

_CONFIG_MARK = "__MEGASERVICE_CONFIG__"
_HEADERS = {
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}


@dataclass(slots=True)
class _File:
    body: bytes
    media_type: str


class Page:
    """The chat page and its assets, read from the package, with this megaservice's `config` in the HTML."""

    def __init__(self, config: dict[str, Any]) -> None:
        folder = resources.files("megaservice.gateway") / "static"
        html = (folder / "index.html").read_text(encoding="utf-8")
        # JSON in a <script type="application/json"> block: `<` escaped so no text can close the block.
        data = orjson.dumps(config).decode().replace("<", "\\u003c")
        self.index = _File(html.replace(_CONFIG_MARK, data).encode(), "text/html; charset=utf-8")
        self.assets = {name: _File((folder / name).read_bytes(), kind) for name, kind in ASSETS.items()}

    async def serve_index(self, request: Request) -> Response:
        """`GET /`: the page."""
        return Response(self.index.body, media_type=self.index.media_type, headers=_HEADERS)

    def asset_handler(self, name: str) -> Any:
        """The handler of `GET /static/<name>`."""
        file = self.assets[name]

        async def serve_asset(request: Request) -> Response:
            return Response(file.body, media_type=file.media_type, headers=_HEADERS)

        return serve_asset
