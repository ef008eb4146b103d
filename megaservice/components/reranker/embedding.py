"""The `embedding` backend (the default): each text scored by the cosine of its vector and the query's.

    RERANK_BACKEND=embedding megaservice serve reranker                                     # in process
    RERANK_BACKEND=embedding EMBEDDING_ENDPOINT=http://127.0.0.1:6000 megaservice serve reranker

The vectors come from the embedding component's own code: the packaged all-MiniLM-L6-v2 (int8 ONNX)
in process, behind the same dynamic batching as the embedding service (the query and the texts of
concurrent requests share model calls), or, when `EMBEDDING_ENDPOINT` is set, from an embedding
service's `/v1/embeddings` (ours, TEI's, or any OpenAI-compatible one) through the pooled client.

This is a bi-encoder, not a cross-encoder: query and text never see each other. Behind a retriever
that searched with the same model, it reproduces the retriever's order; it adds something behind a
lexical or hybrid retriever, or one with another model. docs/components/reranker.md has the numbers.
The score is the cosine itself (-1..1, in practice 0..1); `raw_scores` changes nothing.
"""

from typing import TYPE_CHECKING, Any

from megaservice.components.embedding.backend import EmbeddingBackend

if TYPE_CHECKING:
    from megaservice.client import UpstreamClient
    from megaservice.components.embedding.minilm import MiniLM
    from megaservice.components.reranker.backend import RerankerSettings

__all__ = ["EmbeddingReranker", "embedding_backend"]

LOCAL_MAX_BATCH = 4
"""Texts per model call of the in-process MiniLM by default (the embedding service's measured best)."""


class EmbeddingReranker:
    """A `RerankerBackend` over an embedding backend (the embedding component's `EmbeddingBackend`).

    **Parameters:**

    * **embedder** - what embeds: the in-process `BatchedBackend` over `MiniLM`, or a remote `OpenAIBackend`.
    """

    name = "embedding"

    def __init__(self, embedder: EmbeddingBackend) -> None:
        self.embedder = embedder

    @property
    def model_id(self) -> str:
        """The embedding model's name."""
        return self.embedder.model_id

    @property
    def max_input_length(self) -> int:
        """Most tokens of one text the embedding model reads."""
        return self.embedder.max_input_length

    async def start(self) -> None:
        """Load the in-process model (in its worker thread); nothing for an embedding service."""
        await self.embedder.start()

    async def ready(self) -> bool:
        """Whether the model is loaded, or the embedding service embeds."""
        return await self.embedder.ready()

    async def score(
        self, query: str, texts: list[str], *, raw: bool = False, truncate: bool | None = None
    ) -> list[float]:
        """The cosine of each text's vector with the query's (the query embedded with the texts, in one go)."""
        import numpy as np

        embedded = await self.embedder.embed([query, *texts])
        vectors = np.asarray(embedded.vectors, dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        scores = vectors[1:] @ vectors[0]
        return [float(s) for s in scores]

    async def aclose(self) -> None:
        """Stop batching (in process) or nothing (the pooled client belongs to the loop)."""
        await self.embedder.aclose()


def embedding_backend(
    settings: "RerankerSettings", *, model: "MiniLM | None" = None, client: "UpstreamClient | None" = None
) -> EmbeddingReranker:
    """The `embedding` backend as `settings` configure it (`model`: a loaded MiniLM to share; `client`: for tests)."""
    if settings.embedding_endpoint:
        from megaservice.components.embedding.openai_compatible import OpenAIBackend

        remote = OpenAIBackend(
            settings.embedding_endpoint,
            model=settings.model,
            timeout=settings.remote_timeout,
            batch=settings.remote_batch,
            client=client,
        )
        remote.name = "embedding"  # the node named in errors: the embedding service, not "openai"
        return EmbeddingReranker(remote)
    from megaservice.components.embedding.batched import BatchedBackend
    from megaservice.components.embedding.minilm import MiniLM

    encoder: Any = model if model is not None else MiniLM(threads=settings.threads)
    local = BatchedBackend(
        "reranker",
        encoder,
        max_batch=settings.max_batch or LOCAL_MAX_BATCH,
        max_pending=max(4096, 4 * (settings.max_texts + 1)),
    )
    return EmbeddingReranker(local)
