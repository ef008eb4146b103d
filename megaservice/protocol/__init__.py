"""Wire models: OPEA's docarray-shaped documents and its OpenAI-style API models, on plain pydantic v2."""

from megaservice.protocol import docs, openai
from megaservice.protocol.base import BaseDoc, TopologyInfo
from megaservice.protocol.docs import *  # noqa: F403
from megaservice.protocol.guardrails import LLMGuardInputGuardrailParams, LLMGuardOutputGuardrailParams
from megaservice.protocol.openai import *  # noqa: F403

__all__ = [
    "BaseDoc",
    "LLMGuardInputGuardrailParams",
    "LLMGuardOutputGuardrailParams",
    "TopologyInfo",
    *docs.__all__,
    *openai.__all__,
]
