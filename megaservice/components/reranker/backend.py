"""What the reranking service runs: its settings, the backend protocol, and `load_backend()`.

    embedding       rescoring by the embedding model: the cosine of the query's and each text's vectors, from
                    the packaged all-MiniLM-L6-v2 in process, or from an embedding service (`EMBEDDING_ENDPOINT`)
                    (the default: no cross-encoder weights ship offline; docs/components/reranker.md says what
                    it is worth)
    tei             a remote Text Embeddings Inference reranker: `TEI_RERANKING_ENDPOINT`/rerank
    cross-encoder   a sentence-transformers `CrossEncoder` the user names (`RERANK_MODEL`: a folder or a
                    name in the Hugging Face cache), on torch in process

OPEA's component name (`RERANK_COMPONENT_NAME=OPEA_TEI_RERANKING`) selects the same backend.
A backend answers one score per text, in the texts' order; the service sorts and cuts.
"""

from dataclasses import dataclass
from typing import Any, Protocol

from megaservice.exceptions import ConfigurationError
from megaservice.settings import EnvSettings, variable

__all__ = ["BACKENDS", "RerankerBackend", "RerankerSettings", "backend_name", "load_backend"]

BACKENDS = ("embedding", "tei", "cross-encoder")
"""The backends `RERANK_BACKEND` may name."""

_OPEA_NAMES = {
    "OPEA_TEI_RERANKING": "tei",
    "crossencoder": "cross-encoder",
    "cross_encoder": "cross-encoder",
    "sentence-transformers": "cross-encoder",
    "local": "embedding",
}


@dataclass(frozen=True, slots=True)
class RerankerSettings(EnvSettings):
    """What the reranking service runs (OPEA's variable names where OPEA has one)."""

    host: str = variable("RERANK_HOST", "0.0.0.0", help="The address the reranking service listens on.")
    port: int = variable(
        "RERANK_PORT", 8000, minimum=1, help="The port of the reranking service (OPEA's reranking microservice's)."
    )
    backend: str = variable(
        "RERANK_BACKEND",
        "embedding",
        aliases=("RERANK_COMPONENT_NAME",),
        help="What scores the texts: `embedding` (the cosine of the embedding model's vectors; no cross-encoder "
        "ships offline), `tei` (a TEI reranker) or `cross-encoder` (a sentence-transformers CrossEncoder named "
        "by `RERANK_MODEL`); OPEA's `OPEA_TEI_RERANKING` is accepted.",
    )
    model: str | None = variable(
        "RERANK_MODEL",
        None,
        aliases=("RERANK_MODEL_ID",),
        help="The model: for `cross-encoder` a local folder or a name in the Hugging Face cache (required); for "
        "`tei` the name `/info` reports (unset: the TEI server's own); for `embedding` with `EMBEDDING_ENDPOINT`, "
        "the model name sent (unset: the server's).",
    )
    tei_endpoint: str = variable(
        "TEI_RERANKING_ENDPOINT",
        "http://localhost:8808",
        help="The base URL of the Text Embeddings Inference reranker of the `tei` backend (its `/rerank` is called).",
    )
    hf_token: str | None = variable(
        "HF_TOKEN",
        None,
        aliases=("HUGGINGFACEHUB_API_TOKEN",),
        secret=True,
        help="Bearer token sent to the TEI server (a TEI behind Hugging Face's inference endpoints).",
    )
    embedding_endpoint: str | None = variable(
        "EMBEDDING_ENDPOINT",
        None,
        help="An OpenAI-compatible `POST /v1/embeddings` to embed with (`megaservice serve embedding`, TEI, Ollama, "
        "vLLM) instead of the packaged all-MiniLM-L6-v2 in process: the reranker's `embedding` backend (and "
        "dataprep, when `TEI_EMBEDDING_ENDPOINT` is unset).",
    )
    max_texts: int = variable(
        "RERANK_MAX_TEXTS",
        256,
        minimum=1,
        help="Most texts (retrieved documents) in one request; more is refused with 413.",
    )
    threads: int = variable(
        "RERANK_THREADS", 2, minimum=1, help="Threads of the in-process model (onnxruntime or torch)."
    )
    max_batch: int | None = variable(
        "RERANK_MAX_BATCH",
        None,
        minimum=1,
        shown_default="4 (`embedding`), 16 (`cross-encoder`)",
        help="Most texts (or query/text pairs) the in-process model reads at once; the texts of concurrent "
        "requests share batches.",
    )
    cache_texts: int = variable(
        "RERANK_CACHE_TEXTS",
        8192,
        minimum=0,
        help="`embedding` in process: how many texts' vectors are kept, so a document reranked again is not "
        "embedded again (least recently used dropped first; ~1.8 KB each: a digest of the text is kept, not the "
        "text); 0 keeps none.",
    )
    remote_batch: int = variable(
        "RERANK_REMOTE_BATCH",
        32,
        minimum=1,
        help="Most texts sent to a remote server in one call (TEI's default `max_client_batch_size`; lowered to "
        "the TEI server's own when its `/info` says less); a larger request is split into concurrent calls.",
    )
    remote_timeout: float = variable(
        "RERANK_REMOTE_TIMEOUT",
        60.0,
        minimum=0.001,
        help="Seconds a remote server (TEI, the embedding service) may take to answer one call; longer is a 504.",
    )


class RerankerBackend(Protocol):
    """What the service needs of a backend. Calls never block the event loop."""

    name: str
    """The backend's name (`embedding`, `tei`, `cross-encoder`)."""

    @property
    def model_id(self) -> str:
        """The model's name, as `/info` reports it."""

    @property
    def max_input_length(self) -> int:
        """Most tokens of one text (or query/text pair) the model reads (the rest is cut off)."""

    async def start(self) -> None:
        """Load the model (in a worker thread), or nothing for a remote backend; run once the service starts."""

    async def ready(self) -> bool:
        """Whether requests can be answered: the model is loaded, or the remote answers."""

    async def score(
        self, query: str, texts: list[str], *, raw: bool = False, truncate: bool | None = None
    ) -> list[float]:
        """One score per text (`texts` not empty), in the texts' order; higher is more relevant.

        `raw`: the model's raw output instead of a score in 0..1 (TEI's `raw_scores`; a cross-encoder's logits).
        `truncate`: TEI's flag, passed on to a TEI server (the in-process models always cut long texts).
        """

    async def aclose(self) -> None:
        """Release what the backend holds (threads, connections)."""


def backend_name(name: str) -> str:
    """Our name of backend `name` (OPEA's name mapped); `ConfigurationError` listing the known ones."""
    found = _OPEA_NAMES.get(name.strip(), name.strip().lower())
    found = _OPEA_NAMES.get(found, found)
    if found not in BACKENDS:
        raise ConfigurationError(
            f"RERANK_BACKEND={name!r} is not a backend; choose one of {', '.join(BACKENDS)} "
            "(or OPEA's OPEA_TEI_RERANKING)"
        )
    return found


def load_backend(settings: RerankerSettings, **kwargs: Any) -> RerankerBackend:
    """The backend `settings.backend` names, built (not loaded: `start()` loads it).

    Keyword arguments go to the backend's constructor (e.g. `model=` a loaded `MiniLM` for `embedding`,
    `client=` an `UpstreamClient` for `tei`).
    """
    name = backend_name(settings.backend)
    if name == "embedding":
        from megaservice.components.reranker.embedding import embedding_backend

        return embedding_backend(settings, **kwargs)
    if name == "tei":
        from megaservice.components.reranker.tei import TEIReranker

        return TEIReranker.from_settings(settings, **kwargs)
    from megaservice.components.reranker.cross_encoder import cross_encoder_backend

    return cross_encoder_backend(settings, **kwargs)
