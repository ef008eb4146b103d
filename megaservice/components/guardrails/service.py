"""The guardrails service (port 9090): OPEA's `/v1/guardrails`, and its single-purpose `/v1/toxicity` and `/v1/pii`.

    POST /v1/guardrails   TextDoc {"text"}                → TextDoc {"id", "text", "downstream_black_list": []}
                          GeneratedDoc {"text", "prompt"} → GeneratedDoc {"id", "text", "prompt"} (an LLM's answer)
                          refused, either way             → TextDoc {"id", "text": "Violated policies: toxicity,
                                                            pii (email), please check your input.",
                                                            "downstream_black_list": [".*"], "violations": [...]}
    POST /v1/toxicity     TextDoc → TextDoc (OPEA's toxicity service; the check runs whatever GUARDRAILS_CHECKS says)
    POST /v1/pii          PIIRequestDoc {"prompt", "replace", "replace_method"} → PIIResponseDoc
                          {"detected_pii": [{"type", "start", "end"}]} or {"new_prompt"} (replace: true);
                          TextDoc → TextDoc, masked or refused as GUARDRAILS_PII_ACTION says

A text passed on keeps its text, with personal data masked when PII masking is on. `text` may be
a list of strings (each checked; refused if any is). Bad input is a 422 naming the field; a judge
that fails is a 502/504 naming it (`llm-judge`); a model that could not be loaded, a 503. A refusal
is counted under each check that fired (`guardrail_refusals_total`, `components._shared.refusals`).
"""

import asyncio
from typing import Any, get_args

from starlette.requests import Request

from megaservice.components._shared.refusals import count_refusal
from megaservice.components.bias.service import ModelLoading, read_text
from megaservice.components.guardrails.backend import GuardrailsBackend, GuardrailsSettings, load_backend
from megaservice.components.guardrails.checks import Outcome, refusal_text
from megaservice.components.guardrails.pii import ReplaceMethod, mask
from megaservice.constants import ServiceType
from megaservice.exceptions import InputError
from megaservice.microservice import MicroService
from megaservice.protocol import GeneratedDoc, PIIRequestDoc, PIIResponseDoc, TextDoc

__all__ = ["create_service"]

_REPLACE_METHODS = get_args(ReplaceMethod)


def _optional_string(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"`{field}` must be a string, not {type(value).__name__}", status_code=422)
    return value


async def _decide(
    backend: GuardrailsBackend, text: str | list[str], prompt: str | None, only: tuple[str, ...] | None
) -> tuple[list[Outcome], str | list[str]]:
    if isinstance(text, str):
        outcome = await backend.check(text, prompt=prompt, only=only)
        return [outcome], outcome.text
    outcomes = await asyncio.gather(*(backend.check(t, prompt=prompt, only=only) for t in text))
    return list(outcomes), [outcome.text for outcome in outcomes]


def _refusal(outcomes: list[Outcome]) -> dict[str, Any] | None:
    violations = list(dict.fromkeys(v for outcome in outcomes for v in outcome.violations))
    if not violations:
        return None
    count_refusal("guardrails", (violation.check for violation in violations))
    answer = TextDoc(text=refusal_text(violations), downstream_black_list=[".*"]).model_dump()
    answer["violations"] = [violation.to_dict() for violation in violations]
    return answer


def _pii_answer(backend: GuardrailsBackend, body: dict[str, Any]) -> dict[str, Any]:
    prompt = read_text(body, "prompt")
    if not isinstance(prompt, str):
        raise InputError("`prompt` must be a string", status_code=422)
    replace = body.get("replace") or False
    if not isinstance(replace, bool):
        raise InputError(f"`replace` must be a boolean, not {type(replace).__name__}", status_code=422)
    method: ReplaceMethod = body.get("replace_method") or "random"
    if method not in _REPLACE_METHODS:
        raise InputError(f"`replace_method` must be one of {', '.join(_REPLACE_METHODS)}", status_code=422)
    found = backend.find_pii(prompt)
    if replace:
        return PIIResponseDoc(new_prompt=mask(prompt, found, method)).model_dump()
    return PIIResponseDoc(detected_pii=[match.to_dict() for match in found]).model_dump()


def create_service(
    settings: GuardrailsSettings | None = None, backend: GuardrailsBackend | None = None
) -> MicroService:
    """The guardrails service over `backend` (default: the one `settings` describe)."""
    settings = settings or GuardrailsSettings.from_env()
    guard = backend or load_backend(settings)
    service = MicroService(
        "guardrails",
        service_type=ServiceType.GUARDRAIL,
        host=settings.host,
        port=settings.port,
        endpoint="/v1/guardrails",
    )
    loading = ModelLoading(f"the guardrails' models ({', '.join(guard.checks)})", guard.load)

    async def run(body: Any, *, prompt: str | None, only: tuple[str, ...] | None) -> tuple[dict[str, Any] | None, Any]:
        text = read_text(body)
        if not guard.ready:
            await loading.ensure()
        outcomes, passed = await _decide(guard, text, prompt, only)
        return _refusal(outcomes), passed

    async def guardrails(request: Request) -> dict[str, Any]:
        body = await request.json()
        prompt = _optional_string(body, "prompt") if isinstance(body, dict) else None
        refused, passed = await run(body, prompt=prompt, only=None)
        if refused is not None:
            return refused
        if prompt is None:
            return TextDoc(text=passed).model_dump()
        return GeneratedDoc(text=passed, prompt=prompt).model_dump(exclude_none=True)

    async def toxicity(request: Request) -> dict[str, Any]:
        refused, passed = await run(await request.json(), prompt=None, only=("toxicity",))
        return refused if refused is not None else TextDoc(text=passed).model_dump()

    async def pii(request: Request) -> dict[str, Any]:
        body = await request.json()
        if isinstance(body, dict) and "prompt" in body and "text" not in body:
            return _pii_answer(guard, body)
        refused, passed = await run(body, prompt=None, only=("pii",))
        return refused if refused is not None else TextDoc(text=passed).model_dump()

    service.add_route("/v1/guardrails", guardrails, methods=["POST"], body_model=TextDoc)
    service.add_route("/v1/toxicity", toxicity, methods=["POST"], body_model=TextDoc)
    service.add_route("/v1/pii", pii, methods=["POST"], body_model=PIIRequestDoc)
    service.add_startup_event(loading)
    service.add_readiness_check(lambda: guard.ready)
    service.on_shutdown(guard.aclose)
    return service
