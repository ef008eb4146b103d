"""The routes every service answers: the probes (`megaservice.limits.PROBE_PATHS`) and `/v1/statistics`.

    GET /v1/health_check   200 {"Service Title", "Version", "Service Description"}: OPEA's liveness probe
    GET /v1/health         the same
    GET /health            200, empty
    GET /v1/ready          200 {"status": "ready"}; 503 {"status": "starting"}, or "not ready" with a "reason"
    GET /metrics           Prometheus text (`megaservice.metrics`)
    GET /v1/statistics     latency percentiles per registered name (`megaservice.statistics`)

The probes need no key, are not counted in flight (`megaservice._serving.admission`, through
`Limits.public_paths`) and stay out of the access log (`megaservice._serving.server`); all three
read the one list, `PROBE_PATHS`. `/v1/statistics` is not a probe: an ordinary route.
"""

from collections.abc import Callable
from typing import Any, Protocol

from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from megaservice._serving.app import ServiceApp
from megaservice._serving.lifespan import Lifecycle
from megaservice._version import __version__
from megaservice.limits import PROBE_PATHS
from megaservice.statistics import collect_all_statistics

__all__ = ["add_probes"]


class _Described(Protocol):
    title: str
    description: str


def add_probes(app: ServiceApp, service: _Described, lifecycle: Lifecycle) -> None:
    """Add the probes and `/v1/statistics` to `app`: `service`'s health, `lifecycle`'s readiness."""

    async def health_check() -> dict[str, str]:
        return {"Service Title": service.title, "Version": __version__, "Service Description": service.description}

    async def ready() -> Response:
        status = await lifecycle.status()
        return JSONResponse(status, status_code=200 if status["status"] == "ready" else 503)

    # The answers are documented as JSON schemas, not response models: a response model makes
    # FastAPI import `pydantic.v1` (0.9 MiB in every service) to check it is not one.
    answers: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
        "/v1/health_check": (health_check, _json_answer(_STRINGS)),
        "/v1/health": (health_check, _json_answer(_STRINGS)),
        "/health": (_empty_ok, {}),
        "/v1/ready": (ready, {}),
        "/metrics": (_metrics, {"include_in_schema": False}),
    }
    for path in sorted(PROBE_PATHS):
        endpoint, documented = answers[path]
        app.add_route_fast(path, endpoint, methods=["GET"], tags=["health"], **documented)
    app.add_route_fast("/v1/statistics", _statistics, methods=["GET"], tags=["health"], **_json_answer(_OBJECT))


_STRINGS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT: dict[str, Any] = {"type": "object"}


def _json_answer(schema: dict[str, Any]) -> dict[str, Any]:
    """`add_route_fast` arguments documenting a 200 JSON answer of `schema` without a response model."""
    content = {"application/json": {"schema": schema}}
    return {"response_model": None, "responses": {200: {"description": "Successful Response", "content": content}}}


async def _empty_ok() -> Response:
    return Response(status_code=200)


async def _statistics() -> dict[str, Any]:
    return collect_all_statistics()


async def _metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
