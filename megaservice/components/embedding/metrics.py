"""The embedding service's texts counter (on `/metrics`).

    embedding_texts_total{backend}   counter  texts embedded (every route, every backend); texts/s is its rate()

The in-process backends' batches have their own histograms, `embedding_batch_size` and
`embedding_batch_seconds` (`megaservice.components.embedding.batched`).
"""

from prometheus_client import Counter

from megaservice.metrics import per_process

__all__ = ["texts_counter"]


@per_process
def texts_counter() -> Counter:
    """The process's `embedding_texts_total{backend}`, made on first use."""
    return Counter("embedding_texts", "Texts the embedding service embedded, by backend.", ["backend"])
