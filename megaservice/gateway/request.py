"""A chat request read into a `Turn`, or refused with a 4xx that says what is wrong (and which limit).

Both chat routes take OpenAI's chat request (OPEA's `ChatCompletionRequest` is one, widened):

    messages      a string, or OpenAI's list of messages; the last user message is the question,
                  the whole list is the conversation the LLM sees
    stream        default: false on /v1/chat/completions (OpenAI), true on /v1/chatqna (OPEA)
    k, search_type, distance_threshold, fetch_k, lambda_mult, score_threshold     the retriever's,
                  checked here with its rules (`megaservice.protocol.retrieval`): a wrong one is
                  a 422 before any node is called
    top_n         how many documents the reranker keeps (OPEA's default: 1)

What the LLM gets besides: on /v1/chat/completions every other field the client sent, as sent
(absent ones are the model server's defaults; the LLM service drops OPEA's own); on /v1/chatqna
OPEA's ChatQnA choice, `max_tokens`, `temperature`, `top_p`, `frequency_penalty`,
`presence_penalty` with OPEA's defaults (1024, 0.01, 0.95, 0, 0), plus `chat_template`. The
client's `model` does not choose the LLM: the pipeline file does (`megaservice.model`).

Limits (`megaservice.limits.InputLimits`): the question's length (`MEGASERVICE_MAX_QUESTION_CHARS`),
the number of messages (`MEGASERVICE_MAX_MESSAGES`), the tokens asked for (`MEGASERVICE_MAX_TOKENS`);
beyond one, a 422 naming it. The body's size is the service's `MEGASERVICE_MAX_BODY_BYTES` (413).
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, NonNegativeFloat, PositiveInt, ValidationError

from megaservice.exceptions import InputError
from megaservice.gateway.turn import Framing, Turn
from megaservice.limits import InputLimits
from megaservice.protocol.retrieval import RETRIEVAL_FIELDS, read_retrieval

__all__ = ["RETRIEVAL_FIELDS", "ROLES", "read_turn"]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

_NOT_FOR_THE_LLM = frozenset(
    {
        "messages", "model", "stream", "documents", "input", "embedding", "encoding_format", "dimensions",
        "retrieved_docs", "reranked_docs", "index_name", "top_n", "request_type", *RETRIEVAL_FIELDS,
    }
)  # fmt: skip
"""Fields the megaservice reads itself, or that belong to other stages: not passed to the LLM."""

_OPEA_LLM_DEFAULTS = {"max_tokens": 1024, "temperature": 0.01, "top_p": 0.95, "frequency_penalty": 0.0}
"""What OPEA's ChatQnA sends its LLM when the request leaves a field out (or sets it to 0, OPEA's `x or default`)."""


class _Knobs(BaseModel):
    """The request's retrieval and reranking settings, read as OPEA's `ChatCompletionRequest` reads them.

    The retrieval fields' values are then checked with the retriever's rules (`read_retrieval`).
    """

    model_config = ConfigDict(extra="ignore")

    search_type: str = "similarity"
    k: int = 4
    distance_threshold: float | None = None
    fetch_k: int = 20
    lambda_mult: float = 0.5
    score_threshold: float = 0.2
    top_n: PositiveInt = 1
    temperature: NonNegativeFloat | None = None
    top_p: NonNegativeFloat | None = None


def read_turn(data: Any, framing: Framing, limits: InputLimits, model: str) -> Turn:
    """The `Turn` for a chat request's JSON `data` (`model`: the name answers carry).

    Raises:
        InputError: 422 (400 for a body that is not an object) saying what is wrong, naming the limit broken.
    """
    if not isinstance(data, dict):
        raise InputError("the request body must be a JSON object with `messages`", status_code=400)
    if "messages" not in data:
        raise InputError("`messages` is required: a string, or a list of {role, content} messages", status_code=422)
    messages = _messages(data["messages"], limits)
    question = _question(messages, limits)
    stream = data.get("stream")
    if stream is None:
        stream = framing == "opea"  # OPEA's ChatQnA streams unless told not to
    if not isinstance(stream, bool):
        raise InputError(f"stream must be true or false, got {stream!r}", status_code=422)
    for name in ("max_tokens", "max_completion_tokens", "max_new_tokens"):
        _check_tokens(name, data.get(name), limits)
    try:
        knobs = _Knobs.model_validate(data)
    except ValidationError as exc:
        raise InputError(_describe(exc), status_code=422) from None
    retrieval = knobs.model_dump(include=set(RETRIEVAL_FIELDS), exclude_none=True)
    read_retrieval(retrieval)  # the retriever's rules: its refusal would be a 502 naming it
    if framing == "opea":
        llm = {key: data.get(key) or default for key, default in _OPEA_LLM_DEFAULTS.items()}
        for key in ("presence_penalty", "chat_template", "stream_options"):
            if data.get(key) is not None:
                llm[key] = data[key]
    else:
        llm = {key: value for key, value in data.items() if value is not None and key not in _NOT_FOR_THE_LLM}
    return Turn(
        framing=framing,
        question=question,
        messages=messages,
        stream=stream,
        llm=llm,
        retrieval=retrieval,
        top_n=knobs.top_n,
        model=model,
    )


def _messages(value: Any, limits: InputLimits) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise InputError("messages must be a non-empty list of messages (or a string)", status_code=422)
    if limits.max_messages is not None and len(value) > limits.max_messages:
        raise InputError(
            f"{len(value)} messages; at most {limits.max_messages} are accepted (MEGASERVICE_MAX_MESSAGES)",
            status_code=422,
        )
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise InputError(f"messages[{index}] must be an object with a role and a content", status_code=422)
        role = message.get("role")
        if role not in ROLES:
            raise InputError(
                f"messages[{index}].role must be one of {', '.join(sorted(ROLES))}; got {role!r}", status_code=422
            )
        content = message.get("content")
        if content is None and role != "assistant":
            raise InputError(f"messages[{index}] ({role}) has no content", status_code=422)
        if content is not None and not isinstance(content, str | list):
            raise InputError(
                f"messages[{index}].content must be a string or a list of parts, got {type(content).__name__}",
                status_code=422,
            )
    return value


def _question(messages: list[dict[str, Any]], limits: InputLimits) -> str:
    """The last user message's text (`InputError` if there is none, it is empty, or it is too long)."""
    for message in reversed(messages):
        if message["role"] == "user":
            text = _text(message.get("content"))
            break
    else:
        raise InputError("messages has no user message: there is no question to answer", status_code=422)
    if not text.strip():
        raise InputError("the question (the last user message) is empty", status_code=422)
    limit = limits.max_question_chars
    if limit is not None and len(text) > limit:
        raise InputError(
            f"the question has {len(text)} characters; at most {limit} are accepted (MEGASERVICE_MAX_QUESTION_CHARS)",
            status_code=422,
        )
    return text


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _check_tokens(name: str, value: Any, limits: InputLimits) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}", status_code=422)
    if limits.max_tokens is not None and value > limits.max_tokens:
        raise InputError(
            f"{name} asks for {value} tokens; at most {limits.max_tokens} are accepted (MEGASERVICE_MAX_TOKENS)",
            status_code=422,
        )


def _describe(exc: ValidationError) -> str:
    """A pydantic error as one line per problem: `k: Input should be greater than 0`."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)
