"""The requests the CLIP server accepts, read and checked: OPEA's three shapes, plus images.

    {"text": str | [str]}                              TextDoc → EmbedDoc (OPEA's)
    {"input": str | [item], "dimensions"?, ...}        EmbeddingRequest → EmbeddingResponse (OPEA's, with images)
    {"messages": ..., "input"?: ...}                   ChatCompletionRequest → itself, `embedding` set (OPEA's)
    {"url": ...} or {"base64_image": ...}              OPEA's ImageDoc → EmbedMultimodalDoc (the image's vector)

An `input` item is a text, or an image: `{"image": URL | data: URL | base64}`, or OpenAI's content
parts `{"type": "text", "text": ...}` and `{"type": "image_url", "image_url": {"url": ...}}`. A chat
request without `input` embeds its last user message: its text, then its images.
"""

import enum
from dataclasses import dataclass, field
from typing import Any

from megaservice.components.embedding.inputs import read_texts
from megaservice.exceptions import InputError
from megaservice.protocol.openai import ChatCompletionRequest

__all__ = ["ClipRequest", "Item", "Shape", "read_clip_request"]


class Shape(enum.Enum):
    """Which shape a request had (the answer has the matching one)."""

    OPENAI = "openai"
    TEXT_DOC = "text_doc"
    IMAGE_DOC = "image_doc"
    CHAT = "chat"


@dataclass(frozen=True, slots=True)
class Item:
    """One thing to embed: a text, or an image reference."""

    text: str | None = None
    image: str | None = None


@dataclass(slots=True)
class ClipRequest:
    """A request, read."""

    shape: Shape
    items: list[Item]
    single: bool = False
    dimensions: int | None = None
    base64: bool = False
    document: dict[str, Any] = field(default_factory=dict)
    """The ImageDoc's `url`/`base64_image`, or the chat request's fields (given back with the answer)."""
    chat: ChatCompletionRequest | None = None


def _item(value: Any, where: str) -> Item:
    if isinstance(value, str):
        if not value:
            raise InputError(f"`{where}` is an empty string: send a text to embed")
        return Item(text=value)
    if isinstance(value, dict):
        kind = value.get("type")
        if kind == "text" or (kind is None and "text" in value):
            text = value.get("text")
            if isinstance(text, str) and text:
                return Item(text=text)
            raise InputError(f"`{where}.text` must be a non-empty string")
        image_url = value.get("image_url")
        url = (
            (image_url.get("url") if isinstance(image_url, dict) else None)
            if kind == "image_url"
            else value.get("image")
        )
        if isinstance(url, str) and url:
            return Item(image=url)
        if kind == "image_url" or "image" in value:
            raise InputError(f"`{where}` names no image: give a URL, a data: URL or base64")
    raise InputError(
        f"`{where}` must be a text, {{'image': URL or base64}}, or an OpenAI text or image_url content part"
    )


def _items(value: Any, max_inputs: int) -> tuple[list[Item], bool]:
    if isinstance(value, str):
        return [_item(value, "input")], True
    if not isinstance(value, list):
        raise InputError(f"`input` must be a string or a list of texts and images, not {type(value).__name__}")
    if not value:
        raise InputError("`input` is an empty list: send at least one text or image")
    if len(value) > max_inputs:
        raise InputError(f"`input` has {len(value)} items; at most {max_inputs} per request", status_code=413)
    return [_item(v, f"input[{i}]") for i, v in enumerate(value)], False


def _dimensions(value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InputError(f"`dimensions` must be a positive integer, not {value!r}")
    return value


def _base64(value: Any) -> bool:
    if value not in (None, "float", "base64"):
        raise InputError(f"`encoding_format` must be 'float' or 'base64', not {value!r}")
    return bool(value == "base64")


def read_clip_request(body: Any, max_inputs: int) -> ClipRequest:
    """A `/v1/embeddings` body of the CLIP server (module docstring)."""
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object")
    if "messages" in body:
        return _read_chat(body, max_inputs)
    if "input" in body:
        items, single = _items(body["input"], max_inputs)
        dimensions, as_base64 = _dimensions(body.get("dimensions")), _base64(body.get("encoding_format"))
        return ClipRequest(Shape.OPENAI, items, single, dimensions, as_base64)
    if "text" in body and body.get("image") is None:
        texts, single = read_texts(body["text"], "text", max_inputs)
        return ClipRequest(Shape.TEXT_DOC, [Item(text=t) for t in texts], single)
    if "url" in body or "base64_image" in body:
        reference = body.get("url") or body.get("base64_image")
        if not isinstance(reference, str) or not reference:
            raise InputError("an ImageDoc needs `url` or `base64_image`: a non-empty string")
        document = {"url": body.get("url"), "base64_image": body.get("base64_image")}
        return ClipRequest(Shape.IMAGE_DOC, [Item(image=reference)], True, document=document)
    if "image" in body:
        raise InputError("CLIP embeds a text or an image, not the pair: send them as two `input` items")
    raise InputError(
        "the body must have `input` (texts and images), `text` (OPEA's TextDoc), `url` or `base64_image` "
        "(OPEA's ImageDoc), or `messages` (a chat request)"
    )


def _read_chat(body: dict[str, Any], max_inputs: int) -> ClipRequest:
    chat = ChatCompletionRequest.model_validate(body)  # a ValidationError is a 422, as FastAPI answers
    if chat.input is not None:
        items, single = _items(chat.input, max_inputs)
    else:
        items, single = _last_user_message(chat.messages), False
    dimensions, as_base64 = _dimensions(chat.dimensions), _base64(chat.encoding_format)
    return ClipRequest(Shape.CHAT, items, single, dimensions, as_base64, chat=chat)


def _last_user_message(messages: str | list[dict[str, Any]]) -> list[Item]:
    if isinstance(messages, str):
        if messages:
            return [Item(text=messages)]
    else:
        for message in reversed(messages):
            if message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, str) and content:
                return [Item(text=content)]
            if isinstance(content, list):
                parts = [_item(p, "messages[].content[]") for p in content]
                texts = [p.text for p in parts if p.text]
                return ([Item(text=" ".join(texts))] if texts else []) + [p for p in parts if p.image]
    raise InputError("the chat request has no `input` and no user message to embed")
