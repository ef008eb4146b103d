"""The bias-detection service: OPEA's `POST /v1/bias` (port 9092), `TextDoc` in and out.

    {"text": "..."}                  → {"id", "text": the same text, "downstream_black_list": []}
    {"text": "<biased text>"}        → {"id", "text": "Violated policies: bias, please check your input.",
                                         "downstream_black_list": [".*"]}

`text` may also be a list of strings (biased if any is; passed on unchanged otherwise). An empty
text, or one of another type, is a 422 naming `text`. The model loads in the background when the
service starts; `/v1/ready` answers 503 until it is loaded, and requests that come earlier wait
for it. A model that cannot be loaded makes every request a 503 saying why. A refusal is counted
(`guardrail_refusals_total{service="bias",check="bias"}`, `components._shared.refusals`).
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request

from megaservice.components._shared.refusals import count_refusal
from megaservice.components.bias.backend import BiasBackend, BiasSettings, load_backend
from megaservice.constants import ServiceType
from megaservice.exceptions import InputError
from megaservice.microservice import MicroService
from megaservice.protocol import TextDoc

__all__ = ["REFUSAL", "ModelLoading", "create_service", "read_text"]

logger = logging.getLogger(__name__)

REFUSAL = "Violated policies: bias, please check your input."
"""OPEA's answer text for a biased input."""


def read_text(body: Any, field: str = "text") -> str | list[str]:
    """The non-empty `field` of a JSON body: a string or a list of strings (`InputError` 422 naming it)."""
    if not isinstance(body, dict):
        raise InputError(f"the body must be a JSON object with a `{field}`, not {type(body).__name__}", status_code=422)
    value = body.get(field)
    if isinstance(value, str):
        if not value.strip():
            raise InputError(f"`{field}` is empty", status_code=422)
        return value
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        for index, item in enumerate(value):
            if not item.strip():
                raise InputError(f"`{field}[{index}]` is empty", status_code=422)
        return value
    if value is None or value == []:
        raise InputError(f"`{field}` is missing or empty", status_code=422)
    raise InputError(f"`{field}` must be a string or a list of strings, not {type(value).__name__}", status_code=422)


class ModelLoading:
    """Loads a model once (at startup, or for the first request if that comes first); a failure is a 503 saying why."""

    def __init__(self, what: str, load: Callable[[], Awaitable[None]]) -> None:
        self.what = what
        self._load = load
        self._lock: asyncio.Lock | None = None
        self.done = False
        self.error: BaseException | None = None

    async def __call__(self) -> None:
        """Load (the service's startup event); a failure is logged and kept for `ensure()`."""
        with contextlib.suppress(InputError):
            await self.ensure()

    async def ensure(self) -> None:
        """Load unless it was tried already; raise `InputError` 503 saying why it failed, if it did."""
        if not self.done:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if not self.done:
                    try:
                        await self._load()
                    except Exception as exc:
                        logger.exception("%s could not be loaded", self.what)
                        self.error = exc
                    self.done = True
        if self.error is not None:
            raise InputError(f"{self.what} could not be loaded: {self.error}", status_code=503)


def create_service(settings: BiasSettings | None = None, backend: BiasBackend | None = None) -> MicroService:
    """The bias service over `backend` (default: the one `settings.backend` names)."""
    settings = settings or BiasSettings.from_env()
    detector = backend or load_backend(settings)
    service = MicroService(
        "bias",
        service_type=ServiceType.GUARDRAIL,
        host=settings.host,
        port=settings.port,
        endpoint="/v1/bias",
    )
    loading = ModelLoading(f"the {detector.name} bias detector", detector.load)

    async def detect_bias(request: Request) -> dict[str, Any]:
        text = read_text(await request.json())
        if not detector.ready:
            await loading.ensure()
        verdicts = await detector.detect([text] if isinstance(text, str) else text)
        if any(verdict.biased for verdict in verdicts):
            count_refusal("bias", ("bias",))
            return TextDoc(text=REFUSAL, downstream_black_list=[".*"]).model_dump()
        return TextDoc(text=text).model_dump()

    service.add_route("/v1/bias", detect_bias, methods=["POST"], body_model=TextDoc)
    service.add_startup_event(loading)
    service.add_readiness_check(lambda: detector.ready)
    service.on_shutdown(detector.aclose)
    return service
