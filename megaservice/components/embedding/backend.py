"""What the embedding service runs: its settings, the backend protocol, and `load_backend()`.

    local                   the packaged all-MiniLM-L6-v2 (int8 ONNX) in process, batched (default)
    tei                     a remote Text Embeddings Inference server: `TEI_EMBEDDING_ENDPOINT`/embed
    openai                  any OpenAI-compatible `/v1/embeddings` (Ollama, vLLM, llama.cpp, OpenAI)
    sentence-transformers   a model path or name (`EMBEDDING_MODEL`) loaded with sentence-transformers on torch
    clip                    the CLIP embedding server (`megaservice serve clip`) at `CLIP_EMBEDDING_ENDPOINT`

OPEA's component names (`EMBEDDING_COMPONENT_NAME=OPEA_TEI_EMBEDDING`, ...) select the same backends.
A backend answers raw vectors; the service normalises, truncates (`dimensions`) and encodes them.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from megaservice.exceptions import ConfigurationError
from megaservice.settings import EnvSettings, variable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["BACKENDS", "Embedded", "EmbeddingBackend", "EmbeddingSettings", "backend_name", "load_backend"]

BACKENDS = ("local", "tei", "openai", "sentence-transformers", "clip")
"""The backends `EMBEDDING_BACKEND` may name."""

_OPEA_NAMES = {
    "OPEA_TEI_EMBEDDING": "tei",
    "OPEA_CLIP_EMBEDDING": "clip",
    "OPEA_OVMS_EMBEDDING": "openai",  # OpenVINO Model Server's /v3/embeddings is OpenAI's API
    "OPEA_LOCAL_EMBEDDING": "local",
    "sentence_transformers": "sentence-transformers",
    "st": "sentence-transformers",
}


@dataclass(frozen=True, slots=True)
class EmbeddingSettings(EnvSettings):
    """What the embedding service runs (OPEA's variable names where OPEA has one)."""

    host: str = variable("EMBEDDING_HOST", "0.0.0.0", help="The address the embedding service listens on.")
    port: int = variable(
        "EMBEDDING_PORT", 6000, minimum=1, help="The port of the embedding service (OPEA's embedding microservice's)."
    )
    backend: str = variable(
        "EMBEDDING_BACKEND",
        "local",
        aliases=("EMBEDDING_COMPONENT_NAME",),
        help="What computes the embeddings: `local` (the packaged all-MiniLM-L6-v2, int8 ONNX), `tei`, `openai`, "
        "`sentence-transformers` or `clip`; OPEA's names (`OPEA_TEI_EMBEDDING`, `OPEA_CLIP_EMBEDDING`, "
        "`OPEA_OVMS_EMBEDDING`) are accepted.",
    )
    model: str | None = variable(
        "EMBEDDING_MODEL",
        None,
        aliases=("EMBED_MODEL", "EMBEDDING_MODEL_ID"),
        help="The model: for `sentence-transformers` a local path or a name in the Hugging Face cache (unset: the "
        "packaged all-MiniLM-L6-v2 folder); for `openai` the model name sent (unset: the request's `model`); "
        "for `tei` the name `/info` reports.",
    )
    tei_endpoint: str = variable(
        "TEI_EMBEDDING_ENDPOINT",
        "http://localhost:8080",
        help="The base URL of the Text Embeddings Inference server of the `tei` backend (its `/embed` is called).",
    )
    hf_token: str | None = variable(
        "HF_TOKEN",
        None,
        aliases=("HUGGINGFACEHUB_API_TOKEN",),
        secret=True,
        help="Bearer token sent to the TEI server (a TEI behind Hugging Face's inference endpoints).",
    )
    openai_endpoint: str = variable(
        "OPENAI_EMBEDDING_ENDPOINT",
        "http://localhost:11434",
        help="The base URL of the OpenAI-compatible server of the `openai` backend (Ollama's default port; "
        "`/v1/embeddings` is appended unless the URL ends with `/v1`).",
    )
    openai_api_key: str | None = variable(
        "OPENAI_API_KEY", None, secret=True, help="The key sent as `Authorization: Bearer` to the `openai` backend."
    )
    clip_endpoint: str = variable(
        "CLIP_EMBEDDING_ENDPOINT",
        "http://localhost:6990",
        help="The base URL of the CLIP embedding server of the `clip` backend (`megaservice serve clip`).",
    )
    remote_timeout: float = variable(
        "EMBEDDING_REMOTE_TIMEOUT",
        60.0,
        minimum=0.001,
        help="Seconds a remote backend (tei, openai, clip) may take to answer one call; longer is a 504.",
    )
    remote_batch: int = variable(
        "EMBEDDING_REMOTE_BATCH",
        32,
        minimum=1,
        help="Most texts sent to a remote backend in one call (TEI's default `max_client_batch_size`); a larger "
        "request is split into concurrent calls.",
    )
    threads: int = variable(
        "EMBEDDING_THREADS", 2, minimum=1, help="Threads of the in-process model (onnxruntime or torch)."
    )
    max_batch: int | None = variable(
        "EMBEDDING_MAX_BATCH",
        None,
        minimum=1,
        shown_default="4 (`local`), 32 (`sentence-transformers`)",
        help="Most texts the in-process model embeds at once; the texts of concurrent requests share batches "
        "(the int8 MiniLM is fastest per text in batches of 2 to 4 here: docs/components/embedding.md).",
    )
    max_inputs: int = variable(
        "EMBEDDING_MAX_INPUTS",
        2048,
        minimum=1,
        help="Most texts in one request (OpenAI's own limit); more is refused with 413.",
    )


class Embedded(NamedTuple):
    """What a backend answers for a list of texts."""

    vectors: "npt.NDArray[np.float32]"
    """One row per text, as the model gives it (normalised or not: the service normalises)."""
    tokens: int
    """Tokens the model read, for `usage` (0 when the backend does not say)."""
    model: str | None = None
    """The model that answered, when the backend says (a remote one)."""


class EmbeddingBackend(Protocol):
    """What the service needs of a backend. Calls never block the event loop."""

    name: str
    """The backend's name (`local`, `tei`, ...)."""

    @property
    def model_id(self) -> str:
        """The model's name, as `/info` and the OpenAI answers report it."""

    @property
    def dimension(self) -> int | None:
        """The vectors' length (`None` until a remote backend first answered)."""

    @property
    def max_input_length(self) -> int:
        """Most tokens of one text the model reads (the rest is cut off)."""

    @property
    def model_dtype(self) -> str | None:
        """The number type the model runs in, as TEI's `/info` names it (`int8`, `float32`); `None`: not known."""

    async def start(self) -> None:
        """Load the model (in a worker thread), or nothing for a remote backend; run once the service starts."""

    async def ready(self) -> bool:
        """Whether requests can be answered: the model is loaded, or the remote answers."""

    async def embed(self, texts: list[str], model: str | None = None) -> Embedded:
        """The vectors of `texts` (not empty); `model` is the request's, for a backend that serves several."""

    async def aclose(self) -> None:
        """Release what the backend holds (threads, connections)."""


def backend_name(name: str) -> str:
    """Our name of backend `name` (OPEA's names mapped); `ConfigurationError` listing the known ones."""
    found = _OPEA_NAMES.get(name, name.strip().lower())
    if found not in BACKENDS:
        raise ConfigurationError(
            f"EMBEDDING_BACKEND={name!r} is not a backend; choose one of {', '.join(BACKENDS)} "
            f"(or OPEA's {', '.join(n for n in _OPEA_NAMES if n.isupper())})"
        )
    return found


def load_backend(settings: EmbeddingSettings, **kwargs: Any) -> EmbeddingBackend:
    """The backend `settings.backend` names, built (not loaded: `start()` loads it).

    Keyword arguments go to the backend's constructor (e.g. `model=` a loaded `MiniLM` for `local`).
    """
    name = backend_name(settings.backend)
    if name == "local":
        from megaservice.components.embedding.local import local_backend

        return local_backend(settings, **kwargs)
    if name == "sentence-transformers":
        from megaservice.components.embedding.sentence_transformer import sentence_transformer_backend

        return sentence_transformer_backend(settings, **kwargs)
    from megaservice.components.embedding.remote import remote_backend

    return remote_backend(name, settings, **kwargs)
