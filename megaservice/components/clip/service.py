"""The CLIP embedding server (OPEA's `embedding_multimodal_clip`, port 6990): texts and images in one space.

    POST /v1/embeddings   OPEA's shapes (TextDoc, EmbeddingRequest, ChatCompletionRequest) and images

Images are named by URL (fetched behind `megaservice.guards`; no private address unless
`MEGASERVICE_ALLOW_PRIVATE_URLS=1`), data: URL or base64, and decoded in worker threads; the model
runs in its own worker thread. Vectors are L2-normalised unless `CLIP_NORMALIZE=0` (OPEA answers
raw features); `dimensions` truncates (and renormalises), as OPEA's server truncates.
"""

import asyncio
import random
import time
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from megaservice.components._shared.blocking import Worker
from megaservice.components.clip.backend import ClipBackend, ClipSettings, load_backend
from megaservice.components.clip.images import ImageLimits, load_image
from megaservice.components.clip.inputs import ClipRequest, Shape, read_clip_request
from megaservice.components.embedding.vectors import as_base64, finish
from megaservice.constants import ServiceType
from megaservice.microservice import MicroService
from megaservice.protocol.docs import TextDoc
from megaservice.protocol.rag import EmbeddingResponse
from megaservice.statistics import BaseStatistics, statistics_dict

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["STATISTICS_NAME", "create_service"]

STATISTICS_NAME = "opea_service@embedding_multimodal_clip"
"""The name of the server's latencies in `/v1/statistics` (OPEA's)."""

_RETRIEVAL_DEFAULTS = {
    "search_type": "similarity",
    "k": 4,
    "distance_threshold": None,
    "fetch_k": 20,
    "lambda_mult": 0.5,
    "score_threshold": 0.2,
    "constraints": None,
    "index_name": None,
}
"""`EmbedDoc`'s retrieval fields, at their defaults."""


class _Routes:
    def __init__(self, backend: ClipBackend, settings: ClipSettings) -> None:
        self.backend = backend
        self.settings = settings
        self.limits = ImageLimits(
            allow_private=settings.allow_private_urls,
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            timeout=settings.image_timeout,
        )
        self.fetcher = Worker(threads=4)  # image fetching and decoding: I/O, off the model's thread
        self.statistics = statistics_dict.setdefault(STATISTICS_NAME, BaseStatistics())

    async def _vectors(self, asked: ClipRequest) -> "npt.NDArray[np.float32]":
        import numpy as np

        texts = [(i, item.text) for i, item in enumerate(asked.items) if item.text is not None]
        references = [(i, item.image) for i, item in enumerate(asked.items) if item.image is not None]
        images = await asyncio.gather(*(self.fetcher.run(load_image, ref, self.limits) for _, ref in references))
        parts = []
        if texts:
            parts.append(([i for i, _ in texts], await self.backend.embed_texts([t for _, t in texts])))
        if images:
            parts.append(([i for i, _ in references], await self.backend.embed_images(list(images))))
        width = parts[0][1].shape[1]
        vectors = np.empty((len(asked.items), width), dtype=np.float32)
        for positions, rows in parts:
            vectors[positions] = rows
        return finish(vectors, normalize=self.settings.normalize, dimensions=asked.dimensions)

    async def embeddings(self, request: Request) -> Response:
        """`POST /v1/embeddings`."""
        started = time.perf_counter()
        asked = read_clip_request(await request.json(), self.settings.max_inputs)
        vectors = await self._vectors(asked)
        answer: Any
        if asked.shape is Shape.TEXT_DOC:
            texts = [item.text for item in asked.items]
            answer = {
                "id": f"{random.getrandbits(128):032x}",
                "text": texts[0] if asked.single else texts,
                "embedding": vectors[0] if asked.single else vectors,
                **_RETRIEVAL_DEFAULTS,
            }
        elif asked.shape is Shape.IMAGE_DOC:
            answer = {
                "id": f"{random.getrandbits(128):032x}",
                "text": "",
                "embedding": vectors[0],
                **_RETRIEVAL_DEFAULTS,
                **asked.document,
            }
        else:
            data = [
                {"object": "embedding", "index": i, "embedding": as_base64(row) if asked.base64 else row}
                for i, row in enumerate(vectors)
            ]
            answer = {"object": "list", "data": data, "model": self.backend.model_id, "usage": None}
            if asked.chat is not None:
                answer = {**asked.chat.model_dump(), "embedding": answer}
        self.statistics.append_latency(time.perf_counter() - started)
        return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def create_service(settings: ClipSettings | None = None, backend: ClipBackend | None = None) -> MicroService:
    """The CLIP server over `backend` (default: the one `settings` name; settings from the environment)."""
    if settings is None:
        settings = ClipSettings.from_env()
    if backend is None:
        backend = load_backend(settings)
    service = MicroService(
        "clip",
        service_type=ServiceType.EMBEDDING,
        host=settings.host,
        port=settings.port,
        endpoint="/v1/embeddings",
        input_datatype=TextDoc,
        output_datatype=EmbeddingResponse,
        description=f"CLIP text and image embeddings in one space ({backend.model_id})",
    )
    routes = _Routes(backend, settings)
    service.add_route("/v1/embeddings", routes.embeddings, methods=["POST"], body_model=TextDoc)
    service.add_startup_event(backend.start)
    service.add_readiness_check(backend.ready)
    service.on_shutdown(backend.aclose)
    return service
