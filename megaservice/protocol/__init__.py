"""Wire models: OPEA's docarray-shaped documents and its OpenAI-style API models, on plain pydantic v2."""

from megaservice.protocol.base import BaseDoc, TopologyInfo
from megaservice.protocol.docs import *  # noqa: F403
from megaservice.protocol.docs import __all__ as _docs_all
from megaservice.protocol.guardrails import LLMGuardInputGuardrailParams, LLMGuardOutputGuardrailParams
from megaservice.protocol.openai import *  # noqa: F403
from megaservice.protocol.openai import __all__ as _openai_all

__all__ = sorted(  # noqa: PLE0605
    [*_docs_all, *_openai_all, "BaseDoc", "LLMGuardInputGuardrailParams", "LLMGuardOutputGuardrailParams",
     "TopologyInfo"]
)
