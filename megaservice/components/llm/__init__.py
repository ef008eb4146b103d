"""The LLM service: OpenAI's chat API (and OPEA's LLM inputs) over any OpenAI-compatible model server.

    megaservice serve llm          or   python -m megaservice.components.llm

`LLM_ENDPOINT` (the model server's base URL, with or without `/v1`), `LLM_MODEL_ID`, `OPENAI_API_KEY`
as in OPEA; see docs/components/llm.md.
"""

from megaservice.components.llm.backend import LLMBackend, LLMSettings, load_backend
from megaservice.components.llm.service import create_service

__all__ = ["SETTINGS", "LLMBackend", "LLMSettings", "create_service", "load_backend"]

SETTINGS = LLMSettings
"""The settings class the runner reads from the environment."""
