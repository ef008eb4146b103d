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

A text's vector depends on the text alone, and a RAG pipeline reranks the same stored chunks over
and over: in process, the vectors of the last `RERANK_CACHE_TEXTS` texts are kept (`TextVectors`),
and only the question and the texts not seen lately are embedded. Hits and misses are counted on
`/metrics` (`rerank_cache_texts_total{result}`).
"""

import hashlib
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from megaservice.components.embedding.backend import EmbeddingBackend
from megaservice.metrics import per_process

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from megaservice.client import UpstreamClient
    from megaservice.components.embedding.minilm import MiniLM
    from megaservice.components.reranker.backend import RerankerSettings

__all__ = ["EmbeddingReranker", "TextVectors", "cache_counter", "embedding_backend"]

LOCAL_MAX_BATCH = 4
"""Texts per model call of the in-process MiniLM by default (the embedding service's measured best)."""


@per_process
def cache_counter() -> Counter:
    """The process's `rerank_cache_texts_total{result}`, made on first use.

    Every document scored counts once: `hit` when its kept vector was used, `miss` when it was embedded for
    the request (a document that stands twice in one request and was not kept counts as two misses).
    """
    return Counter(
        "rerank_cache_texts", "Documents the reranker scored with a kept vector (hit) or embedded (miss).", ["result"]
    )


class TextVectors:
    """The unit vectors of the last `size` texts scored, least recently used dropped first.

    A text is kept by a 128-bit BLAKE2b digest of it, not the text itself: an entry costs the same
    (~1.8 KB for 384 dimensions) however long the text. Read and written from the event loop only (no
    lock). The vectors are read-only arrays.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._vectors: OrderedDict[bytes, npt.NDArray[np.float32]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, text: str) -> "npt.NDArray[np.float32] | None":
        """The vector of `text`, now the most recently used; `None` when it is not kept."""
        key = _key(text)
        vector = self._vectors.get(key)
        if vector is not None:
            self._vectors.move_to_end(key)
        return vector

    def put(self, text: str, vector: "npt.NDArray[np.float32]") -> None:
        """Keep `vector` for `text`, dropping the least recently used beyond `size`."""
        if self.size <= 0:
            return
        key = _key(text)
        self._vectors[key] = vector
        self._vectors.move_to_end(key)
        while len(self._vectors) > self.size:
            self._vectors.popitem(last=False)


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class EmbeddingReranker:
    """A `RerankerBackend` over an embedding backend (the embedding component's `EmbeddingBackend`).

    **Parameters:**

    * **embedder** - what embeds: the in-process `BatchedBackend` over `MiniLM`, or a remote `OpenAIBackend`.
    * **cache_texts** - how many texts' vectors to keep (`TextVectors`); 0 keeps none. Keep none in front
      of a remote embedder: its model may change under the reranker.
    """

    name = "embedding"

    def __init__(self, embedder: EmbeddingBackend, *, cache_texts: int = 0) -> None:
        self.embedder = embedder
        self.cache = TextVectors(cache_texts)
        counter = cache_counter() if cache_texts > 0 else None
        self._counted = (counter.labels("hit"), counter.labels("miss")) if counter is not None else None

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
        """The cosine of each text's vector with the query's (the query embedded with the unkept texts, in one go)."""
        import numpy as np

        found: dict[str, npt.NDArray[np.float32]] = {}
        keeping = self.cache.size > 0
        if keeping:
            for text in texts:
                if text not in found and (vector := self.cache.get(text)) is not None:
                    found[text] = vector
        hits = sum(text in found for text in texts) if keeping else 0  # before the new vectors join `found`
        missing = [text for text in dict.fromkeys(texts) if text not in found]
        embedded = await self.embedder.embed([query, *missing])
        vectors = np.asarray(embedded.vectors, dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        for text, row in zip(missing, vectors[1:], strict=True):
            if keeping:
                row = row.copy()  # not a view: a kept row would keep its whole batch alive
                row.flags.writeable = False
                self.cache.put(text, row)
            found[text] = row
        if self._counted is not None:
            self._counted[0].inc(hits)
            self._counted[1].inc(len(texts) - hits)
        scores = np.stack([found[text] for text in texts]) @ vectors[0]
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
    return EmbeddingReranker(local, cache_texts=settings.cache_texts)
