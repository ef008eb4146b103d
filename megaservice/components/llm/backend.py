"""What the LLM service needs from a model server, its settings, and the choice of backend.

    LLMSettings    host, port, backend; LLM_ENDPOINT, LLM_MODEL_ID, OPENAI_API_KEY (OPEA's names); timeouts
    LLMBackend     the Protocol: a chat completion whole or as a stream, the model list, readiness
    load_backend   the backend named by `settings.backend` (OPEA's `LLM_COMPONENT_NAME` values too)

There is one backend, `openai`: any server speaking OpenAI's chat API (vLLM, TGI's messages API,
Ollama's `/v1`, llama.cpp's server, OpenAI), called through megaservice's pooled client
(`megaservice.components.llm.openai_compat`).
"""

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from megaservice.client import StreamedAnswer
from megaservice.exceptions import ConfigurationError
from megaservice.settings import EnvSettings, variable

__all__ = ["BACKENDS", "LLMBackend", "LLMSettings", "backend_name", "load_backend"]

BACKENDS: dict[str, str] = {
    "openai": "openai",
    "OpeaTextGenService": "openai",  # OPEA's LLM_COMPONENT_NAME for any OpenAI-compatible server
}
"""Backend names `load_backend` accepts (OPEA's included) and the backend each means."""

_NOT_HERE = ("OpeaTextGenNative", "OpeaTextGenNativePhi4Multimodal", "OpeaTextGenBedrock", "OpeaTextGenOVMS")


@dataclass(frozen=True, slots=True)
class LLMSettings(EnvSettings):
    """What the LLM service runs: where it listens and which OpenAI-compatible model server it calls."""

    host: str = variable("LLM_HOST", "0.0.0.0", help="The address the LLM service listens on.")
    """The address the service listens on."""
    port: int = variable("LLM_PORT", 9000, minimum=1, help="The port of the LLM service (OPEA's 9000).")
    """The port the service listens on."""
    backend: str = variable(
        "LLM_BACKEND",
        "openai",
        aliases=("LLM_COMPONENT_NAME",),
        help="The LLM service's backend: `openai`, any OpenAI-compatible server (OPEA: `OpeaTextGenService`).",
    )
    """The backend's name (`BACKENDS`)."""
    endpoint: str = variable(
        "LLM_ENDPOINT",
        "http://localhost:8080",
        help="Base URL of the OpenAI-compatible model server the LLM service calls (vLLM, TGI, Ollama, "
        "llama.cpp, OpenAI), with or without `/v1`.",
    )
    """Base URL of the model server, with or without `/v1`."""
    model_id: str | None = variable(
        "LLM_MODEL_ID",
        None,
        shown_default="unset",
        help="The model the LLM service asks for when a request names none (unset: the request goes without "
        "one, and the model server uses the model it serves).",
    )
    """The model asked for when a request names none (`None`: send none)."""
    api_key: str | None = variable(
        "OPENAI_API_KEY",
        None,
        secret=True,
        shown_default="unset",
        help="Key the LLM service sends to its model server (`Authorization: Bearer`); unset: none is sent.",
    )
    """Key sent to the model server as `Authorization: Bearer <key>` (`None`: no header)."""
    connect_timeout: float | None = variable(
        "LLM_CONNECT_TIMEOUT",
        5.0,
        zero_off=True,
        minimum=0,
        help="Seconds to connect to the model server before the LLM service answers 502. `0`: no limit.",
    )
    """Seconds to open a connection to the model server (`None`: no limit)."""
    read_timeout: float | None = variable(
        "LLM_READ_TIMEOUT",
        600.0,
        zero_off=True,
        minimum=0,
        help="Seconds the LLM service waits for the model server's answer, and then between two reads of a "
        "stream (a stalled stream ends with an error event). `0`: no limit.",
    )
    """Seconds to wait for the answer's headers, and then between two reads of its body (`None`: no limit)."""


class LLMBackend(Protocol):
    """What the LLM service needs from a model server (the bodies are OpenAI's, as JSON bytes).

    Every call raises `UpstreamError` subclasses naming the server (`node`) when it fails; a
    non-2xx answer is an `UpstreamStatusError` carrying the server's status and body.
    """

    node: str
    """The name failures carry (`UpstreamError.node`)."""
    url: str
    """Where chat completions are asked for (failures carry it too)."""

    def complete(self, body: bytes) -> Awaitable[tuple[str, bytes]]:
        """A whole chat completion: the content type and body of the server's answer."""
        ...

    def stream(self, body: bytes) -> Awaitable[StreamedAnswer]:
        """A streamed chat completion, once the server's headers are in (the caller reads and releases it)."""
        ...

    async def models(self) -> bytes:
        """The server's `GET /v1/models` answer (JSON bytes; cached for a while)."""
        ...

    async def ready(self) -> bool:
        """Whether the server answers its model list (cached; raises the failure's `UpstreamError`)."""
        ...

    async def aclose(self) -> None:
        """Release what the backend holds."""
        ...


def backend_name(name: str) -> str:
    """The backend `name` means (OPEA's names mapped); `ConfigurationError` listing the known ones if none."""
    kind = BACKENDS.get(name)
    if kind is None:
        hint = " (an in-process or vendor backend of OPEA; run an OpenAI-compatible server instead)"
        raise ConfigurationError(
            f"LLM_BACKEND/LLM_COMPONENT_NAME {name!r} is not an LLM backend here"
            f"{hint if name in _NOT_HERE else ''}; choose one of: {', '.join(BACKENDS)}"
        )
    return kind


def load_backend(settings: LLMSettings) -> LLMBackend:
    """The backend `settings.backend` names, built (no I/O until its first call).

    Raises:
        ConfigurationError: the name is not a backend of this service, or `LLM_ENDPOINT` is not an http(s) URL.
    """
    backend_name(settings.backend)
    from megaservice.components.llm.openai_compat import OpenAIBackend

    return OpenAIBackend(settings)
