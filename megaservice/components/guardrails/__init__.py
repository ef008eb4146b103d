"""Guardrails, OPEA's `opea_service@guardrails`: `POST /v1/guardrails` on port 9090 (`megaservice serve guardrails`).

Configurable checks (banned substrings and regexes, PII masking or refusal, toxicity, bias, an LLM
judge), and OPEA's single-purpose `/v1/toxicity` and `/v1/pii` on the same service.
`StreamGuard` checks an LLM's streamed answer as it is written (for the orchestrator).
"""

from megaservice.components.guardrails.backend import GuardrailsBackend, GuardrailsSettings, load_backend
from megaservice.components.guardrails.service import create_service
from megaservice.components.guardrails.stream_guard import GuardedStream, GuardStop, StreamGuard

__all__ = [
    "SETTINGS",
    "GuardStop",
    "GuardedStream",
    "GuardrailsBackend",
    "GuardrailsSettings",
    "StreamGuard",
    "create_service",
    "load_backend",
]

SETTINGS = GuardrailsSettings
"""The settings class the runner reads from the environment."""
