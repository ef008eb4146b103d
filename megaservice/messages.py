"""`handle_message`: flatten OpenAI chat messages into one prompt, as OPEA's ChatQnA does."""

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from megaservice.exceptions import InputError
from megaservice.guards import fetch_blocking
from megaservice.settings import EnvSettings, variable

__all__ = ["ImageSettings", "get_image_settings", "handle_message", "set_image_settings"]

_IMAGE_FETCH_TIMEOUT = 10.0
_IMAGE_MAX_BYTES = 20 * 1024 * 1024
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class ImageSettings(EnvSettings):
    """Where the images a chat message names may come from."""

    env_prefix: ClassVar[str] = "MEGASERVICE_"

    directory: Path | None = variable(
        "IMAGE_DIR",
        None,
        help="The only directory a chat message may name a local image file in (unset: local files are not read; "
        "`python -m megaservice.compat` uses the working directory, as OPEA reads any path).",
    )
    """The only directory a message may name a local image file in (`None`: local files are not read)."""
    allow_private_urls: bool = variable(
        "ALLOW_PRIVATE_URLS",
        False,
        help="Let image URLs and ingested links point at loopback, link-local or private addresses.",
    )
    """Whether image URLs may point at loopback, link-local or private addresses."""


_images: ImageSettings | None = None


def get_image_settings() -> ImageSettings:
    """The image settings in force (the environment's, until `set_image_settings()`)."""
    global _images
    if _images is None:
        _images = ImageSettings.from_env()
    return _images


def set_image_settings(settings: ImageSettings | None = None, **changes: Any) -> ImageSettings:
    """Replace the image settings (or change some fields); return the previous ones."""
    global _images
    previous = get_image_settings()
    _images = replace(settings or previous, **changes)
    return previous


def handle_message(messages: str | Sequence[dict[str, Any]]) -> str | tuple[str, list[str]]:
    r"""Return the prompt for `messages` (a string, or OpenAI chat messages), and the images if there are any.

    The system message becomes the first line; every user/assistant message is appended as
    `"{role}: {text}\\n"` (`"{role}:"` when empty). Images in user content parts are returned as base64
    PNG (URLs are fetched, local paths read, anything else is taken as base64 already). Synchronous,
    as OPEA's: with image URLs it blocks while it fetches them (call it off the event loop). A URL is
    fetched from the address its host resolved to when it was checked (`guards.fetch_blocking`).

    Raises:
        InputError: (a `ValueError`, 400) a message is malformed, has a role other than system, user
            or assistant, or names an image that may not be read (a private URL, a file outside
            the image directory, `ImageSettings.directory`).
    """
    if isinstance(messages, str):
        return messages
    system_prompt = ""
    turns: list[tuple[str, str, list[str]]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise InputError(f"messages[{index}] must be an object with a 'role'")
        role = message["role"]
        content = message.get("content") or ""
        if role not in _ROLES:
            raise InputError(f"Unknown role: {role}")
        if role == "user" and isinstance(content, list):
            text, images = _parts(content, index)
            turns.append((role, text, images))
        elif not isinstance(content, str):
            raise InputError(f"messages[{index}].content must be a string")
        elif role == "system":
            system_prompt = content
        else:
            turns.append((role, content, []))
    prompt = system_prompt + "\n" if system_prompt else ""
    images_b64: list[str] = []
    for role, text, images in turns:
        prompt += f"{role}: {text}\n" if text else f"{role}:"
        images_b64.extend(_image_as_base64_png(image) for image in images)
    if images_b64:
        return prompt, images_b64
    return prompt


def _parts(content: list[Any], index: int) -> tuple[str, list[str]]:
    texts, images = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif (
            kind == "image_url"
            and isinstance(part.get("image_url"), dict)
            and isinstance(part["image_url"].get("url"), str)
        ):
            images.append(part["image_url"]["url"])
        else:
            raise InputError(f"messages[{index}].content: each part must be a text or an image_url part")
    return "\n".join(texts), images


def _image_as_base64_png(image: str) -> str:
    if image.startswith(("http://", "https://")):
        allowed = get_image_settings().allow_private_urls
        fetched = fetch_blocking(
            image,
            allow_private=allowed,
            max_bytes=_IMAGE_MAX_BYTES,
            timeout=_IMAGE_FETCH_TIMEOUT,
            accept="image/*",
            what="the image",
        )
        return _to_png_base64(fetched)
    image_dir = get_image_settings().directory
    if len(image) < 4096 and image_dir is not None and not image.startswith("data:"):
        path = (image_dir / image).resolve()
        if path.is_relative_to(image_dir.resolve()) and path.is_file():
            return _to_png_base64(path.read_bytes())
    return image  # base64 already


def _to_png_base64(data: bytes) -> str:
    try:
        from PIL import Image
    except ImportError as exc:
        from megaservice.exceptions import MissingDependencyError

        raise MissingDependencyError("pillow", "images") from exc
    output = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGBA").save(output, format="PNG")
    return base64.b64encode(output.getvalue()).decode()
