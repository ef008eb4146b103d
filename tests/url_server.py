"""A small blocking web server on 127.0.0.1 for tests of URL fetches: what it serves, the requests it saw."""

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["serve_files"]


@contextmanager
def serve_files(files: dict[str, bytes]) -> Iterator[tuple[int, list[dict[str, str]]]]:
    """Serve `files` by path (anything else: 404); yield the port and the list of requests' headers."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("content-length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
