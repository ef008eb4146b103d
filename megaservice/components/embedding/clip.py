"""The `clip` backend: the CLIP embedding server (`megaservice serve clip`; OPEA's `OPEA_CLIP_EMBEDDING`).

    EMBEDDING_BACKEND=clip CLIP_EMBEDDING_ENDPOINT=http://clip:6990 megaservice serve embedding

Texts are sent to `{CLIP_EMBEDDING_ENDPOINT}/v1/embeddings` in OpenAI's shape, as OPEA forwards
them; the vectors are CLIP's text vectors, in the space of its image vectors. Images go to the CLIP
server itself (this service embeds texts).
"""

from typing import Any

from megaservice.components.embedding.openai_compatible import OpenAIBackend

__all__ = ["ClipBackend"]


class ClipBackend(OpenAIBackend):
    """Text embeddings from the CLIP server."""

    name = "clip"

    def __init__(self, endpoint: str, **kwargs: Any) -> None:
        super().__init__(endpoint.rstrip("/") + "/v1/embeddings", **kwargs)
