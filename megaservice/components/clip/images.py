"""Images a request names, read safely: an http(s) URL behind the URL guards, a data: URL, or base64.

    load_image("https://example.com/cat.jpg", limits)   fetched; refused if the host is private
    load_image("data:image/png;base64,iVBOR...", limits)
    load_image("iVBORw0KGgo...", limits)                  plain base64

A URL is fetched by `megaservice.guards.fetch_blocking` (http or https only, no credentials): its
host is resolved once, every address is checked to be public (unless `allow_private`, i.e.
`MEGASERVICE_ALLOW_PRIVATE_URLS=1`), and the fetch connects to the checked address: a second DNS
answer cannot point it elsewhere. Redirects are not followed. Sizes are bounded before decoding
(bytes, then pixels). Blocking: call it in a worker thread. Every refusal is an `InputError` (4xx).
"""

import base64
import binascii
import io
import ssl
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from megaservice.components._shared.deps import require
from megaservice.exceptions import InputError
from megaservice.guards import fetch_blocking

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["ImageLimits", "fetch", "load_image"]


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """Where images may come from and how large they may be."""

    allow_private: bool = False
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    timeout: float = 10.0
    ssl_context: ssl.SSLContext | None = None
    """How https hosts are verified (default: the system's trusted CAs)."""


def load_image(reference: str, limits: ImageLimits) -> "Image":
    """The RGB image `reference` names (module docstring)."""
    if reference.startswith("data:"):
        header, _, data = reference.partition(",")
        if not header.endswith(";base64"):
            raise InputError("a data: URL image must be base64 (`data:image/png;base64,...`)")
        raw = _base64(data, limits)
    elif "://" in reference[:16]:
        raw = fetch(reference, limits)
    else:
        raw = _base64(reference, limits)
    return _decode(raw, limits)


def _base64(text: str, limits: ImageLimits) -> bytes:
    if len(text) * 3 // 4 > limits.max_bytes:
        raise InputError(f"image larger than {limits.max_bytes} bytes", status_code=413)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("an image must be an http(s) URL, a data: URL or base64; this one is neither") from None


def _decode(raw: bytes, limits: ImageLimits) -> "Image":
    pil = require("PIL.Image", "clip", "pillow")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pil.DecompressionBombWarning)
            image = pil.open(io.BytesIO(raw))  # reads the header only
    except (pil.DecompressionBombWarning, pil.DecompressionBombError):
        raise InputError(f"image of more than {limits.max_pixels} pixels", status_code=413) from None
    except (pil.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"not an image PIL can read: {exc}") from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise InputError(f"image of {width}x{height} pixels; at most {limits.max_pixels}", status_code=413)
    try:
        rgb: Image = image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"not an image PIL can read: {exc}") from None
    return rgb


def fetch(url: str, limits: ImageLimits) -> bytes:
    """The bytes at `url` (a 200 answer), fetched from an address checked to be public."""
    return fetch_blocking(
        url,
        allow_private=limits.allow_private,
        max_bytes=limits.max_bytes,
        timeout=limits.timeout,
        accept="image/*",
        ssl_context=limits.ssl_context,
        what="the image",
    )
