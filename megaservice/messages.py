"""`handle_message`: flatten OpenAI chat messages into one prompt, as OPEA's ChatQnA does."""

import base64
import http.client
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["handle_message"]

_IMAGE_FETCH_TIMEOUT = 10.0
_IMAGE_MAX_BYTES = 20 * 1024 * 1024


def handle_message(messages: str | Sequence[dict[str, Any]]) -> str | tuple[str, list[str]]:
    r"""Return the prompt for `messages` (a string, or OpenAI chat messages), and the images if there are any.

    The system message becomes the first line; every user/assistant message is appended as
    `"{role}: {text}\\n"` (`"{role}:"` when empty). Images in user content parts are returned as base64
    PNG (URLs are fetched, local paths read, anything else is taken as base64 already).

    Raises:
        ValueError: a message has a role other than system, user or assistant.
    """
    if isinstance(messages, str):
        return messages
    system_prompt = ""
    turns: list[tuple[str, str, list[str]]] = []
    for message in messages:
        role = message["role"]
        content = message["content"]
        if role == "system":
            system_prompt = content
        elif role == "user" and isinstance(content, list):
            text = "\n".join(part["text"] for part in content if part["type"] == "text")
            images = [part["image_url"]["url"] for part in content if part["type"] == "image_url"]
            turns.append((role, text, images))
        elif role in ("user", "assistant"):
            turns.append((role, content, []))
        else:
            raise ValueError(f"Unknown role: {role}")
    prompt = system_prompt + "\n" if system_prompt else ""
    images_b64: list[str] = []
    for role, text, images in turns:
        prompt += f"{role}: {text}\n" if text else f"{role}:"
        images_b64.extend(_image_as_base64_png(image) for image in images)
    if images_b64:
        return prompt, images_b64
    return prompt


def _image_as_base64_png(image: str) -> str:
    if image.startswith(("http://", "https://")):
        return _to_png_base64(_fetch(image))
    path = Path(image)
    if len(image) < 4096 and path.exists():
        return _to_png_base64(path.read_bytes())
    return image


def _to_png_base64(data: bytes) -> str:
    try:
        from PIL import Image
    except ImportError as exc:
        from megaservice.exceptions import MissingDependencyError

        raise MissingDependencyError("pillow", "images") from exc
    output = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGBA").save(output, format="PNG")
    return base64.b64encode(output.getvalue()).decode()


def _fetch(url: str) -> bytes:
    # OPEA compat: `handle_message` is synchronous in OPEA, so is this fetch; call it off the event loop.
    parts = urlsplit(url)
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_type(parts.netloc, timeout=_IMAGE_FETCH_TIMEOUT)
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = connection.getresponse()
        if response.status != 200:
            raise ValueError(f"fetching image {url} answered HTTP {response.status}")
        return response.read(_IMAGE_MAX_BYTES)
    finally:
        connection.close()
