"""The embedding, retrieval and rerank APIs (OpenAI's embeddings, and OPEA's retrieval and reranking requests).

Names and fields as in OPEA's `api_protocol`, where they live next to the chat models.
"""

from typing import Any, Literal

from pydantic import BaseModel, Field, NonNegativeFloat, PositiveInt

from megaservice.protocol.base import UsageInfo

EmbeddingInput = list[int] | list[list[int]] | str | list[str]
"""What OpenAI's embeddings API accepts as `input`: texts, or token ids."""

__all__ = [
    "EmbeddingInput",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingResponseData",
    "RerankingRequest",
    "RerankingResponse",
    "RerankingResponseData",
    "RetrievalRequest",
    "RetrievalRequestArangoDB",
    "RetrievalResponse",
    "RetrievalResponseData",
    "TokenCheckRequest",
    "TokenCheckRequestItem",
    "TokenCheckResponse",
    "TokenCheckResponseItem",
]


class TokenCheckRequestItem(BaseModel):
    """One prompt to measure."""

    model: str
    prompt: str
    max_tokens: int


class TokenCheckRequest(BaseModel):
    """Prompts to measure against their model's context."""

    prompts: list[TokenCheckRequestItem]


class TokenCheckResponseItem(BaseModel):
    """Whether one prompt fits its model's context."""

    fits: bool
    tokenCount: int  # OPEA's field name
    contextLength: int  # OPEA's field name


class TokenCheckResponse(BaseModel):
    """Answers to a `TokenCheckRequest`."""

    prompts: list[TokenCheckResponseItem]


class EmbeddingRequest(BaseModel):
    """OpenAI `/v1/embeddings` request."""

    model: str | None = None
    input: EmbeddingInput
    encoding_format: str | None = Field(default="float", pattern="^(float|base64)$")
    dimensions: int | None = None
    user: str | None = None
    request_type: Literal["embedding"] = "embedding"


class EmbeddingResponseData(BaseModel):
    """One embedding in an `EmbeddingResponse`."""

    index: int
    object: str = "embedding"
    embedding: list[float] | str


class EmbeddingResponse(BaseModel):
    """OpenAI `/v1/embeddings` response."""

    object: str = "list"
    model: str | None = None
    data: list[EmbeddingResponseData]
    usage: UsageInfo | None = None


class RetrievalRequest(BaseModel):
    """Search by embedding (OPEA `/v1/retrieval`)."""

    embedding: EmbeddingResponse | list[float] | None = None
    input: str | None = None
    search_type: str = "similarity"
    k: PositiveInt = 4
    distance_threshold: float | None = None
    fetch_k: PositiveInt = 20
    lambda_mult: NonNegativeFloat = 0.5
    score_threshold: NonNegativeFloat = 0.2
    request_type: Literal["retrieval"] = "retrieval"


class RetrievalRequestArangoDB(RetrievalRequest):
    """`RetrievalRequest`, plus ArangoDB's graph search settings."""

    graph_name: str | None = None
    search_start: str | None = None
    search_mode: str | None = None
    num_centroids: int | None = None
    distance_strategy: str | None = None
    use_approx_search: bool | None = None
    enable_traversal: bool | None = None
    enable_summarizer: bool | None = None
    traversal_max_depth: int | None = None
    traversal_max_returned: int | None = None
    traversal_score_threshold: float | None = None
    traversal_query: str | None = None


class RetrievalResponseData(BaseModel):
    """One retrieved document."""

    text: str
    metadata: dict[str, Any] | None = None


class RetrievalResponse(BaseModel):
    """Documents a retriever found."""

    retrieved_docs: list[RetrievalResponseData]


class RerankingRequest(BaseModel):
    """Rerank documents against a query (OPEA `/v1/reranking`)."""

    input: str
    retrieved_docs: list[RetrievalResponseData] | list[dict[str, Any]] | list[str]
    top_n: PositiveInt = 1
    request_type: Literal["reranking"] = "reranking"


class RerankingResponseData(BaseModel):
    """One reranked document and its score."""

    text: str
    score: float | None = 0.0


class RerankingResponse(BaseModel):
    """Documents in reranked order."""

    reranked_docs: list[RerankingResponseData]
