"""The access log: one line per request, written once its answer is complete.

uvicorn writes its access line inside `send(http.response.start)`: on the response's critical path,
before the body goes out (0.08 ms of a streamed answer's post-LLM step under load, docs/performance.md).
A service writes the same line, in uvicorn's format, to `megaservice.access` after the last byte was
handed to the server. When a service starts uvicorn itself, the handlers uvicorn's log configuration
gave `uvicorn.access` move to `megaservice.access` (`take_over_uvicorn_access_log`): the line looks
as uvicorn's did, and uvicorn, finding no handler, writes none. The probes are never logged.
`MEGASERVICE_ACCESS_LOG=0`, or `uvicorn_kwargs={"access_log": False}`, turns it off.
"""

import logging

from starlette.types import Scope

from megaservice.limits import PROBE_PATHS

__all__ = ["log_access", "take_over_uvicorn_access_log"]

_logger = logging.getLogger("megaservice.access")


def log_access(scope: Scope, status: int) -> None:
    """Log the finished request `scope` answered `status` (unless it is a probe or INFO is off)."""
    path = scope["path"]
    if path in PROBE_PATHS or not _logger.isEnabledFor(logging.INFO):
        return
    client = scope.get("client")
    address = f"{client[0]}:{client[1]}" if client else "-"
    query = scope.get("query_string")
    if query:
        path = f"{path}?{query.decode('latin-1')}"
    _logger.info('%s - "%s %s HTTP/%s" %d', address, scope["method"], path, scope.get("http_version", "1.1"), status)


def take_over_uvicorn_access_log() -> None:
    """Move the handlers of `uvicorn.access` (set by uvicorn's log configuration) to `megaservice.access`."""
    uvicorn_access = logging.getLogger("uvicorn.access")
    if uvicorn_access.handlers:
        _logger.handlers = list(uvicorn_access.handlers)
        _logger.setLevel(uvicorn_access.level)
        _logger.propagate = False
        uvicorn_access.handlers = []
