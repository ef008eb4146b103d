"""What the CLIP server runs: its settings, the backend protocol, and `load_backend()`.

One backend, `transformers`: a CLIP checkpoint (`CLIP_MODEL`, default `openai/clip-vit-base-patch32`)
loaded with transformers' `CLIPModel`, its tokenizer and its image processor, from a local folder
or the Hugging Face cache (no download unless `HF_HUB_OFFLINE=0`). Texts and images go into one
vector space: a text vector and an image vector can be compared directly.
"""

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from megaservice.exceptions import ConfigurationError
from megaservice.messages import ImageSettings
from megaservice.settings import EnvSettings, variable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from PIL.Image import Image

__all__ = ["BACKENDS", "ClipBackend", "ClipSettings", "backend_name", "load_backend"]

BACKENDS = ("transformers",)
"""The backends `CLIP_BACKEND` may name."""


def _help_of(cls: type, name: str) -> str:
    """The help of another settings class's variable (one variable, documented once)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return str(field.metadata["megaservice.env"].help)


@dataclass(frozen=True, slots=True)
class ClipSettings(EnvSettings):
    """What the CLIP embedding server runs."""

    host: str = variable("CLIP_HOST", "0.0.0.0", help="The address the CLIP embedding server listens on.")
    port: int = variable(
        "CLIP_PORT",
        6990,
        minimum=1,
        aliases=("MULTIMODAL_CLIP_EMBEDDER_PORT",),
        help="The port of the CLIP embedding server (OPEA's).",
    )
    backend: str = variable("CLIP_BACKEND", "transformers", help="What runs the CLIP model: `transformers`.")
    model: str = variable(
        "CLIP_MODEL",
        "openai/clip-vit-base-patch32",
        help="The CLIP checkpoint: a local folder, or a name in the Hugging Face cache (OPEA's default model).",
    )
    threads: int = variable("CLIP_THREADS", 2, minimum=1, help="Torch threads of the CLIP model.")
    normalize: bool = variable(
        "CLIP_NORMALIZE",
        True,
        help="L2-normalise the vectors (cosine similarity becomes a dot product); `0` answers CLIP's raw "
        "projected features, as OPEA's CLIP server does.",
    )
    max_inputs: int = variable(
        "CLIP_MAX_INPUTS", 64, minimum=1, help="Most texts and images in one request; more is refused with 413."
    )
    max_image_bytes: int = variable(
        "CLIP_MAX_IMAGE_BYTES",
        20 * 1024 * 1024,
        minimum=1,
        help="Largest image accepted, fetched or in base64, in bytes; larger is refused with 413.",
    )
    max_image_pixels: int = variable(
        "CLIP_MAX_IMAGE_PIXELS",
        40_000_000,
        minimum=1,
        help="Most pixels of an image accepted (width times height), checked before it is decoded.",
    )
    image_timeout: float = variable(
        "CLIP_IMAGE_TIMEOUT", 10.0, minimum=0.001, help="Seconds to fetch an image URL (connect, and each read)."
    )
    allow_private_urls: bool = variable(
        "MEGASERVICE_ALLOW_PRIVATE_URLS", False, help=_help_of(ImageSettings, "allow_private_urls")
    )


class ClipBackend(Protocol):
    """What the server needs of a CLIP model. Calls never block the event loop."""

    name: str
    """The backend's name."""

    @property
    def model_id(self) -> str:
        """The checkpoint's name."""

    @property
    def dimension(self) -> int | None:
        """The vectors' length (`None` until loaded)."""

    async def start(self) -> None:
        """Load the model in a worker thread; run once the server starts."""

    async def ready(self) -> bool:
        """Whether the model is loaded (raises what stopped it from loading)."""

    async def embed_texts(self, texts: list[str]) -> "npt.NDArray[np.float32]":
        """CLIP's text vectors of `texts` (raw projected features)."""

    async def embed_images(self, images: "list[Image]") -> "npt.NDArray[np.float32]":
        """CLIP's image vectors of `images` (raw projected features), in the texts' space."""

    async def aclose(self) -> None:
        """Release what the backend holds."""


def backend_name(name: str) -> str:
    """`name` if it is one of `BACKENDS`; `ConfigurationError` listing them if not."""
    if name not in BACKENDS:
        raise ConfigurationError(f"CLIP_BACKEND={name!r} is not a backend; choose one of {BACKENDS}")
    return name


def load_backend(settings: ClipSettings, **kwargs: Any) -> ClipBackend:
    """The backend `settings.backend` names, built (`start()` loads it)."""
    backend_name(settings.backend)
    from megaservice.components.clip.transformers_clip import TransformersClip

    return TransformersClip(settings.model, threads=settings.threads, **kwargs)
