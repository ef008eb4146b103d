"""The CLIP embedding server (`megaservice serve clip`, port 6990): texts and images as vectors of one space.

    from megaservice.components.clip import ClipSettings, create_service

    create_service(ClipSettings.from_env({"CLIP_MODEL": "/models/clip-vit-base-patch32"})).start()

OPEA's `embedding_multimodal_clip` server, with images (URL, data: URL or base64) besides texts.
The embedding service's `clip` backend forwards texts to it. docs/components/embedding.md says more.
"""

from megaservice.components.clip.backend import ClipBackend, ClipSettings, load_backend
from megaservice.components.clip.service import create_service

__all__ = ["SETTINGS", "ClipBackend", "ClipSettings", "create_service", "load_backend"]

SETTINGS = ClipSettings
"""The settings class the runner reads (`SETTINGS.from_env()`)."""
