"""The requests the embedding service accepts, read and checked: each refusal says what is wrong (4xx).

`POST /v1/embeddings` takes OPEA's three shapes, told apart by their fields as OPEA's pydantic union
tells them apart (the model with the most fields set wins):

    {"messages": ..., "input"?: ...}          ChatCompletionRequest → the same request, `embedding` set
    {"input": str | [str], "dimensions"?...}  EmbeddingRequest (OpenAI) → EmbeddingResponse
    {"text": str | [str]}                     TextDoc → EmbedDoc (one vector for a string, a list for a list)

`POST /embed` (and `POST /`) take TEI's `{"inputs": str | [str], "normalize"?, "truncate"?}`.
"""

import enum
from dataclasses import dataclass
from typing import Any

from megaservice.exceptions import InputError
from megaservice.protocol.openai import ChatCompletionRequest

__all__ = ["EmbedRequest", "Shape", "TEIRequest", "read_embeddings_request", "read_tei_request", "read_texts"]


class Shape(enum.Enum):
    """Which OPEA shape a `/v1/embeddings` request had (the answer has the matching one)."""

    OPENAI = "openai"
    TEXT_DOC = "text_doc"
    CHAT = "chat"


@dataclass(slots=True)
class EmbedRequest:
    """A `/v1/embeddings` request, read."""

    shape: Shape
    texts: list[str]
    single: bool
    """The input was one string, not a list (a `TextDoc` then gets one vector)."""
    dimensions: int | None = None
    base64: bool = False
    model: str | None = None
    chat: ChatCompletionRequest | None = None


@dataclass(slots=True)
class TEIRequest:
    """A TEI `/embed` request, read."""

    texts: list[str]
    normalize: bool = True
    dimensions: int | None = None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def read_texts(value: Any, field: str, max_inputs: int) -> tuple[list[str], bool]:
    """`(texts, single)` of a field holding a string or a list of strings; `InputError` saying what is wrong."""
    if isinstance(value, str):
        if not value:
            raise InputError(f"`{field}` is an empty string: send a text to embed")
        return [value], True
    if not isinstance(value, list):
        raise InputError(f"`{field}` must be a string or a list of strings, not {_kind(value)}")
    if not value:
        raise InputError(f"`{field}` is an empty list: send at least one text")
    if len(value) > max_inputs:
        raise InputError(f"`{field}` has {len(value)} texts; at most {max_inputs} per request", status_code=413)
    for index, text in enumerate(value):
        if not isinstance(text, str):
            if isinstance(text, int | list) and not isinstance(text, bool):
                raise InputError(f"`{field}` holds token ids; this service embeds text: send strings")
            raise InputError(f"`{field}[{index}]` must be a string, not {_kind(text)}")
        if not text:
            raise InputError(f"`{field}[{index}]` is an empty string: send a text to embed")
    return value, False


def _dimensions(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"`dimensions` must be a positive integer, not {value!r}")
    return value


def _base64(value: Any) -> bool:
    if value is None or value == "float":
        return False
    if value == "base64":
        return True
    raise InputError(f"`encoding_format` must be 'float' or 'base64', not {value!r}")


def read_embeddings_request(body: Any, max_inputs: int) -> EmbedRequest:
    """A `/v1/embeddings` body in any of OPEA's three shapes (module docstring)."""
    if not isinstance(body, dict):
        raise InputError(f"the body must be a JSON object, not {_kind(body)}")
    if "messages" in body:
        return _read_chat(body, max_inputs)
    if "input" in body:
        texts, single = read_texts(body["input"], "input", max_inputs)
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise InputError(f"`model` must be a string, not {_kind(model)}")
        return EmbedRequest(
            Shape.OPENAI,
            texts,
            single,
            dimensions=_dimensions(body.get("dimensions")),
            base64=_base64(body.get("encoding_format")),
            model=model,
        )
    if "text" in body:
        texts, single = read_texts(body["text"], "text", max_inputs)
        return EmbedRequest(Shape.TEXT_DOC, texts, single)
    raise InputError(
        "the body must have `input` (OpenAI's embeddings request), `text` (OPEA's TextDoc) "
        "or `messages` (a chat request with `input`)"
    )


def _read_chat(body: dict[str, Any], max_inputs: int) -> EmbedRequest:
    chat = ChatCompletionRequest.model_validate(body)  # a ValidationError is a 422, as FastAPI answers
    if chat.input is not None:
        texts, single = read_texts(chat.input, "input", max_inputs)
    else:
        texts, single = [_last_user_text(chat.messages)], True
    dimensions = _dimensions(chat.dimensions)
    return EmbedRequest(Shape.CHAT, texts, single, dimensions, _base64(chat.encoding_format), chat.model, chat)


def _last_user_text(messages: Any) -> str:
    """The text to embed of a chat request without `input`: its string, or its last user message's text."""
    if isinstance(messages, str):
        if messages:
            return messages
    else:
        for message in reversed(messages):
            if message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
            if isinstance(content, str) and content:
                return content
    raise InputError("the chat request has no `input` and no user message text to embed")


def read_tei_request(body: Any, max_inputs: int) -> TEIRequest:
    """A TEI `/embed` body (`truncate` is accepted: inputs are always cut to the model's length)."""
    if not isinstance(body, dict) or "inputs" not in body:
        raise InputError("the body must be a JSON object with `inputs`: a string or a list of strings")
    texts, _ = read_texts(body["inputs"], "inputs", max_inputs)
    normalize = body.get("normalize", True)
    if not isinstance(normalize, bool):
        raise InputError(f"`normalize` must be true or false, not {normalize!r}")
    return TEIRequest(texts, normalize, _dimensions(body.get("dimensions")))
