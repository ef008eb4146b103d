"""OpenAI-style request/response models, with the names and fields of OPEA's `api_protocol`."""

import time
import uuid
from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, NonNegativeFloat, PositiveInt

from megaservice.protocol.base import UsageInfo
from megaservice.protocol.limits import MaxTokens, MessagesLimit
from megaservice.protocol.rag import EmbeddingInput, EmbeddingResponse, RerankingResponseData, RetrievalResponseData

__all__ = [
    "ALLOWED_CHATCOMPLETION_ARGS",
    "ALLOWED_COMPLETION_ARGS",
    "ApiErrorCode",
    "ArbPostHearingAssistantChatCompletionRequest",
    "ChatCompletionNamedFunction",
    "ChatCompletionNamedToolChoiceParam",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatCompletionResponseChoice",
    "ChatCompletionResponseStreamChoice",
    "ChatCompletionStreamResponse",
    "ChatCompletionToolsParam",
    "ChatMessage",
    "CompletionRequest",
    "CompletionResponse",
    "CompletionResponseChoice",
    "CompletionResponseStreamChoice",
    "CompletionStreamResponse",
    "DeltaMessage",
    "DocSumChatCompletionRequest",
    "ErrorResponse",
    "FunctionDefinition",
    "Messages",
    "ResponseFormat",
    "RouteEndpointDoc",
    "ServiceCard",
    "ServiceList",
    "StreamOptions",
    "Text2QueryRequest",
    "Tokens",
    "UsageInfo",
    "check_requests",
    "create_error_response",
]

ALLOWED_CHATCOMPLETION_ARGS = (
    "model", "messages", "frequency_penalty", "max_tokens", "n", "presence_penalty", "response_format", "seed",
    "stop", "stream", "stream_options", "temperature", "top_p", "user",
)  # fmt: skip
ALLOWED_COMPLETION_ARGS = (
    "model", "prompt", "echo", "frequency_penalty", "max_tokens", "n", "presence_penalty", "seed", "stop",
    "stream", "suffix", "temperature", "top_p", "user",
)  # fmt: skip

Messages = Annotated[str | list[dict[str, Any]], MessagesLimit]
Tokens = Annotated[PositiveInt | None, MaxTokens]


def _now() -> int:
    return int(time.time())


def _text_only() -> list[Literal["text", "audio"]]:
    return ["text"]


def _chat_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:22]}"


def _cmpl_id() -> str:
    return f"cmpl-{uuid.uuid4().hex[:22]}"


class ServiceCard(BaseModel):
    """One service in a service listing."""

    object: str = "service"
    service_name: str
    description: str
    created: int = Field(default_factory=_now)
    owner: str = "opea"


class ServiceList(BaseModel):
    """A listing of services."""

    object: str = "list"
    data: list[ServiceCard] = Field(default_factory=list)


class ResponseFormat(BaseModel):
    """Requested output format."""

    type: Literal["text", "json_object"]


class StreamOptions(BaseModel):
    """Streaming options."""

    include_usage: bool | None = False


class FunctionDefinition(BaseModel):
    """A callable tool."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ChatCompletionToolsParam(BaseModel):
    """A tool offered to the model."""

    type: Literal["function"] = "function"
    function: FunctionDefinition


class ChatCompletionNamedFunction(BaseModel):
    """A tool named in `tool_choice`."""

    name: str


class ChatCompletionNamedToolChoiceParam(BaseModel):
    """Force the model to call one tool."""

    function: ChatCompletionNamedFunction
    type: Literal["function"] = "function"


class ChatCompletionRequest(BaseModel):
    """OpenAI chat request, extended (as in OPEA) with the fields every pipeline stage may fill in."""

    messages: Messages
    model: str | None = None
    modalities: list[Literal["text", "audio"]] = Field(default_factory=_text_only)
    frequency_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = 0
    max_tokens: Tokens = 1024
    n: PositiveInt | None = 1
    presence_penalty: float | None = 0.0
    response_format: ResponseFormat | None = None
    seed: PositiveInt | None = None
    service_tier: str | None = None
    stop: str | list[str] | None = Field(default_factory=list)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: NonNegativeFloat | None = 0.01
    top_p: NonNegativeFloat | None = None
    tools: list[ChatCompletionToolsParam] | None = None
    tool_choice: Literal["none"] | ChatCompletionNamedToolChoiceParam | None = "none"
    parallel_tool_calls: bool | None = True
    user: str | None = None
    language: str = "auto"
    image_path: str | None = None
    audio_path: str | None = None
    best_of: PositiveInt | None = 1
    suffix: str | None = None
    repetition_penalty: NonNegativeFloat | None = 1.0
    top_k: PositiveInt | None = None
    typical_p: float | None = None
    timeout: PositiveInt | None = None
    echo: bool | None = False
    add_generation_prompt: bool | None = True
    add_special_tokens: bool | None = False
    documents: list[dict[str, str]] | list[str] | None = None
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    # embedding
    input: EmbeddingInput | None = None
    encoding_format: str | None = Field(default="float", pattern="^(float|base64)$")
    dimensions: int | None = None
    embedding: EmbeddingResponse | list[float] = Field(default_factory=list)
    # retrieval
    search_type: str = "similarity"
    k: PositiveInt = 4
    distance_threshold: float | None = None
    fetch_k: PositiveInt = 20
    lambda_mult: NonNegativeFloat = 0.5
    score_threshold: NonNegativeFloat = 0.2
    retrieved_docs: list[RetrievalResponseData] | list[dict[str, Any]] = Field(default_factory=list)
    index_name: str | None = None
    # reranking
    top_n: PositiveInt = 1
    reranked_docs: list[RerankingResponseData] | list[dict[str, Any]] = Field(default_factory=list)
    request_type: Literal["chat"] = "chat"


class DocSumChatCompletionRequest(ChatCompletionRequest):
    """Chat request for the summarisation service."""

    summary_type: str = "auto"
    chunk_size: int = -1
    chunk_overlap: int = -1
    type: str | None = None


class ArbPostHearingAssistantChatCompletionRequest(DocSumChatCompletionRequest):
    """Chat request for the post-hearing summary service (the summariser's fields)."""


class ChatMessage(BaseModel):
    """One message of a chat completion."""

    role: str
    content: str
    audio: dict[str, Any] | None = None


class ChatCompletionResponseChoice(BaseModel):
    """One choice of a chat completion."""

    index: int
    message: ChatMessage
    finish_reason: Literal["stop", "length"] | None = None
    metadata: dict[str, Any] | None = None


class ChatCompletionResponse(BaseModel):
    """OpenAI chat completion response."""

    id: str = Field(default_factory=_chat_id)
    object: str = "chat.completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[ChatCompletionResponseChoice]
    usage: UsageInfo


class DeltaMessage(BaseModel):
    """The part of a message carried by one stream chunk."""

    role: str | None = None
    content: str | None = None


class ChatCompletionResponseStreamChoice(BaseModel):
    """One choice of a stream chunk."""

    index: int
    delta: DeltaMessage
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionStreamResponse(BaseModel):
    """One chunk of a streamed chat completion."""

    id: str = Field(default_factory=_chat_id)
    object: str = "chat.completion.chunk"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[ChatCompletionResponseStreamChoice]


class CompletionRequest(BaseModel):
    """OpenAI legacy completion request."""

    model: str
    prompt: str | list[Any]
    suffix: str | None = None
    temperature: NonNegativeFloat | None = 0.7
    n: PositiveInt | None = 1
    max_tokens: Tokens = 16
    stop: str | list[str] | None = None
    stream: bool | None = False
    top_p: NonNegativeFloat | None = 1.0
    top_k: int | None = -1
    logprobs: int | None = None
    echo: bool | None = False
    presence_penalty: NonNegativeFloat | None = 0.0
    frequency_penalty: NonNegativeFloat | None = 0.0
    repetition_penalty: NonNegativeFloat | None = 1.03
    user: str | None = None
    use_beam_search: bool | None = False
    best_of: int | None = None


class CompletionResponseChoice(BaseModel):
    """One choice of a completion."""

    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None = None


class CompletionResponse(BaseModel):
    """OpenAI legacy completion response."""

    id: str = Field(default_factory=_cmpl_id)
    object: str = "text_completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[CompletionResponseChoice]
    usage: UsageInfo


class CompletionResponseStreamChoice(BaseModel):
    """One choice of a completion stream chunk."""

    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None = None


class CompletionStreamResponse(BaseModel):
    """One chunk of a streamed completion."""

    id: str = Field(default_factory=_cmpl_id)
    object: str = "text_completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[CompletionResponseStreamChoice]


class ErrorResponse(BaseModel):
    """An error body (`code` is an HTTP status here, see `create_error_response`)."""

    object: str = "error"
    message: str
    code: int


class RouteEndpointDoc(BaseModel):
    """A URL to route a request to."""

    url: str = Field(..., description="URL of the chosen inference endpoint")


class Text2QueryRequest(BaseModel):
    """A question to turn into a database query, and the database to ask."""

    query: str | None = None
    conn_type: str | None = "sql"
    conn_url: str | None = None
    conn_user: str | None = None
    conn_password: str | None = None
    conn_dialect: str | None = "postgresql"
    options: dict[str, Any] = Field(default_factory=dict)


class ApiErrorCode(IntEnum):
    """OPEA's application error codes (five digits; the first three are the HTTP status)."""

    VALIDATION_TYPE_ERROR = 40001
    INVALID_AUTH_KEY = 40101
    INCORRECT_AUTH_KEY = 40102
    NO_PERMISSION = 40103
    INVALID_MODEL = 40301
    PARAM_OUT_OF_RANGE = 40302
    CONTEXT_OVERFLOW = 40303
    RATE_LIMIT = 42901
    QUOTA_EXCEEDED = 42902
    ENGINE_OVERLOADED = 42903
    INTERNAL_ERROR = 50001
    CUDA_OUT_OF_MEMORY = 50002
    GRADIO_REQUEST_ERROR = 50003
    GRADIO_STREAM_UNKNOWN_ERROR = 50004


def create_error_response(status_code: int, message: str) -> Any:
    """Return a JSON error response; an `ApiErrorCode` is mapped to its HTTP status (OPEA sent it raw)."""
    from fastapi.responses import JSONResponse

    http_status = status_code // 100 if status_code >= 10000 else status_code
    body = ErrorResponse(message=message, code=int(status_code)).model_dump()
    return JSONResponse(body, status_code=http_status)


def check_requests(request: Any) -> Any:
    """OPEA's range check of a completion request: an error response for the first bad value, else `None`."""
    out_of_range = ApiErrorCode.PARAM_OUT_OF_RANGE
    max_tokens, n = getattr(request, "max_tokens", None), getattr(request, "n", None)
    temperature, top_p = getattr(request, "temperature", None), getattr(request, "top_p", None)
    top_k, stop = getattr(request, "top_k", None), getattr(request, "stop", None)
    problem = None
    if max_tokens is not None and max_tokens <= 0:
        problem = f"{max_tokens} is less than the minimum of 1 - 'max_tokens'"
    elif n is not None and n <= 0:
        problem = f"{n} is less than the minimum of 1 - 'n'"
    elif temperature is not None and not 0 <= temperature <= 2:
        bound = "less than the minimum of 0" if temperature < 0 else "greater than the maximum of 2"
        problem = f"{temperature} is {bound} - 'temperature'"
    elif top_p is not None and not 0 <= top_p <= 1:
        bound = "less than the minimum of 0" if top_p < 0 else "greater than the maximum of 1"
        problem = f"{top_p} is {bound} - 'top_p'"
    elif top_k is not None and -1 < top_k < 1:
        problem = f"{top_k} is out of Range. Either set top_k to -1 or >=1."
    elif stop is not None and not isinstance(stop, str | list):
        problem = f"{stop} is not valid under any of the given schemas - 'stop'"
    return None if problem is None else create_error_response(out_of_range, problem)
