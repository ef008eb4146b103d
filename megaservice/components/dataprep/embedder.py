"""What dataprep embeds chunks with: the embedding service (TEI, any OpenAI-compatible server) or the model in process.

The backends are the embedding service's own (`megaservice.components.embedding`):

    TEI_EMBEDDING_ENDPOINT=http://embedding:6000   TEI's `POST /embed` (a TEI, or `megaservice serve embedding`);
                                                   the model's name from its `GET /info`
    EMBEDDING_ENDPOINT=http://embedding:6000       OpenAI's `POST /v1/embeddings` (`megaservice serve embedding`,
                                                   TEI, Ollama, vLLM); the model's name from its answers
    neither                                        in process: the packaged all-MiniLM-L6-v2 (int8 ONNX, one chunk
                                                   per call), or the sentence-transformers model `EMBED_MODEL` names

Vectors are L2-normalised here, whatever the backend answered. The model's name and the vectors'
length are known once `start()` returned: the collection records them, and refuses another model.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from megaservice.client import Timeout, get_client
from megaservice.components.embedding.backend import EmbeddingBackend, EmbeddingSettings, load_backend
from megaservice.components.embedding.minilm import MODEL_ID, MiniLM
from megaservice.components.embedding.tei import tei_url
from megaservice.components.embedding.vectors import finish
from megaservice.exceptions import ConfigurationError, UpstreamError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from megaservice.components.dataprep.backend import DataprepSettings

__all__ = ["Embedder", "load_embedder"]

logger = logging.getLogger("megaservice.dataprep")

_PROBE = "What is the dimension of this model's vectors?"
_MINILM_NAMES = frozenset({MODEL_ID, "all-MiniLM-L6-v2", MODEL_ID.lower(), "all-minilm-l6-v2"})


class Embedder:
    """Chunks' texts to normalised vectors through one embedding backend, in windows of `window` texts.

    **Parameters:**

    * **backend** - the embedding component's backend (`local`, `tei`, `openai`, `sentence-transformers`).
    * **model** - the model's name when configured (`EMBED_MODEL`); else the backend or the remote says.
    * **info_url** - TEI's `/info`, asked for the model's name first (`model` when it does not answer).
    * **window** - texts per call to the backend (progress is reported after each).
    """

    def __init__(
        self, backend: EmbeddingBackend, *, model: str | None = None, info_url: str | None = None, window: int = 64
    ) -> None:
        self.backend = backend
        self._model = model
        self._info_url = info_url
        self._window = window
        self._dimension: int | None = None
        self._model_id: str | None = None

    @property
    def name(self) -> str:
        """The backend's name (`local`, `tei`, ...)."""
        return self.backend.name

    @property
    def model_id(self) -> str:
        """The model's name (after `start()`)."""
        assert self._model_id is not None, "Embedder.start() first"
        return self._model_id

    @property
    def max_input_length(self) -> int:
        """Most tokens of one text the model reads (a remote's is assumed 512)."""
        return self.backend.max_input_length

    @property
    def dimension(self) -> int:
        """The vectors' length (after `start()`)."""
        assert self._dimension is not None, "Embedder.start() first"
        return self._dimension

    async def start(self) -> None:
        """Load the model, or ask the remote for a vector: the model's name and dimension are then known."""
        await self.backend.start()
        dimension = self.backend.dimension
        if dimension is None:
            dimension = int((await self.backend.embed([_PROBE])).vectors.shape[1])
        model = None
        if self._info_url is not None:  # what the server says it serves, before what it was said to serve
            model = await self._model_from_info(self._info_url, required=self._model is None)
        self._model_id = model or self._model or self.backend.model_id
        self._dimension = dimension

    async def _model_from_info(self, url: str, *, required: bool) -> str | None:
        timeout = Timeout(connect=5.0, read=10.0, total=10.0)
        try:
            _, body = await get_client().get(self.backend.name, url, timeout=timeout)
            model = orjson.loads(body).get("model_id")
        except (UpstreamError, orjson.JSONDecodeError, AttributeError) as exc:
            if not required:
                logger.warning("%s did not say which model it serves (%s); recording %r", url, exc, self._model)
                return None
            raise ConfigurationError(
                f"{url} did not say which model it serves ({exc}); set DATAPREP_EMBEDDING_MODEL to its name"
            ) from exc
        return model if isinstance(model, str) and model else None

    async def ready(self) -> bool:
        """Whether texts can be embedded now (the remote answers, or the model is loaded)."""
        return self._dimension is not None and await self.backend.ready()

    async def embed(
        self, texts: list[str], progress: Callable[[int], Awaitable[None] | None] | None = None
    ) -> "npt.NDArray[np.float32]":
        """One normalised vector per text (`len(texts) x dimension`); `progress(done)` after each window."""
        import numpy as np

        parts = []
        for start in range(0, len(texts), self._window):
            embedded = await self.backend.embed(texts[start : start + self._window])
            vectors = finish(embedded.vectors)
            if vectors.shape[1] != self._dimension:
                raise ConfigurationError(
                    f"the embedding backend answered {vectors.shape[1]}-d vectors, not {self._dimension}-d as when "
                    "dataprep started: was the embedding model changed? Restart dataprep."
                )
            parts.append(vectors)
            if progress is not None:
                waited = progress(start + len(vectors))
                if waited is not None:
                    await waited
        if not parts:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        return np.concatenate(parts)

    async def aclose(self) -> None:
        """Release the backend."""
        await self.backend.aclose()


def load_embedder(settings: "DataprepSettings", *, minilm: MiniLM | None = None) -> Embedder:
    """The embedder `settings` describe (module docstring); `minilm`: an already loaded packaged model to share."""
    common: dict[str, Any] = {
        "model": settings.embedding_model,
        "remote_timeout": settings.embedding_timeout,
        "remote_batch": settings.embedding_batch,
        "threads": settings.threads,
    }
    info_url = None
    kwargs: dict[str, Any] = {}
    if settings.tei_endpoint:
        embedding = EmbeddingSettings(
            backend="tei", tei_endpoint=settings.tei_endpoint, hf_token=settings.hf_token, **common
        )
        info_url = tei_url(settings.tei_endpoint).removesuffix("/embed") + "/info"
    elif settings.embedding_endpoint:
        embedding = EmbeddingSettings(backend="openai", openai_endpoint=settings.embedding_endpoint, **common)
    elif settings.embedding_model and settings.embedding_model not in _MINILM_NAMES:
        embedding = EmbeddingSettings(backend="sentence-transformers", **common)
    else:
        embedding = EmbeddingSettings(backend="local", max_batch=settings.local_batch, **{**common, "model": None})
        if minilm is not None:
            kwargs["model"] = minilm
    window = 4 * settings.embedding_batch if embedding.backend in ("tei", "openai") else 64
    backend = load_backend(embedding, **kwargs)
    return Embedder(backend, model=embedding.model, info_url=info_url, window=window)
