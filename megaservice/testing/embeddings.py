"""Fake embedding servers that answer as the real ones do: TEI, and an OpenAI-compatible one (Ollama, vLLM, ...).

    tei = FakeTEI(dim=16)                                  # or FakeTEI(embed=model.embed): real vectors
    async with serve(tei) as url:                          # megaservice.testing.serve: a real socket
        ...  # point TEI_EMBEDDING_ENDPOINT at url; tei.batches lists the texts of each call

`FakeTEI` serves TEI's routes: `POST /embed` and `POST /` (`{"inputs"}` → `[[floats]]`, TEI's limits
and error bodies), `POST /v1/embeddings`, `GET /info`, `GET /health`. `FakeOpenAIEmbeddings` serves
`POST /v1/embeddings` (float or base64 answers, `usage`), `GET /v1/models`, and refuses a wrong API
key (401) or an unknown model (404) as OpenAI does. Both take `FakeService`'s `status` (answer every
call with that error) and `delay` (seconds before answering: a slow server).
"""

import base64
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from starlette.types import Receive, Scope, Send

from megaservice.testing.fakes import FakeService

__all__ = ["FakeOpenAIEmbeddings", "FakeTEI", "word_vector"]

Embed = Callable[[list[str]], Any]
"""Texts → one vector (a sequence of floats) per text."""


def word_vector(text: str, dim: int) -> list[float]:
    """A deterministic normalised bag-of-words vector: texts sharing words get close vectors."""
    vector = [0.0] * dim
    for word in text.lower().split():
        vector[zlib.crc32(word.strip(".,;:!?").encode()) % dim] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


class _FakeEmbeddingServer(FakeService):
    """Routes by path; GET answers what `get_routes()` gives, POST goes to `post_routes()`."""

    def __init__(self, *, dim: int = 8, embed: Embed | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim = dim
        self.embed = embed or (lambda texts: [word_vector(t, self.dim) for t in texts])
        self.batches: list[list[str]] = []
        """The texts of every embedding call, in the order they came."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET routes here; everything else through `FakeService` (status, delay, recording)."""
        if scope["type"] == "http" and scope["method"] == "GET" and self.status < 300:
            answer = self.get_answer(scope["path"])
            if answer is not None:
                await self.send_json(send, answer)
                return
        await super().__call__(scope, receive, send)

    def get_answer(self, path: str) -> Any:
        """The answer to `GET path` (`None`: FakeService's `{"status": "ok"}`)."""
        return None

    def vectors(self, texts: list[str]) -> list[list[float]]:
        """The vectors of one call (recorded in `batches`)."""
        self.batches.append(list(texts))
        return [[float(x) for x in vector] for vector in self.embed(texts)]


class FakeTEI(_FakeEmbeddingServer):
    """A Text Embeddings Inference server.

    **Parameters:**

    * **dim** - the vectors' length (default vectors: `word_vector`).
    * **embed** - the model: texts → vectors (e.g. `MiniLM().embed`, for real vectors).
    * **model_id** - what `/info` and `/v1/embeddings` name.
    * **max_client_batch_size** - most texts per call; more is a 413, as TEI answers.
    """

    def __init__(self, *, model_id: str = "fake/tei-embedding", max_client_batch_size: int = 32, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_id = model_id
        self.max_client_batch_size = max_client_batch_size

    def get_answer(self, path: str) -> Any:
        """`/info`: TEI's description; `/health`: 200."""
        if path == "/info":
            return {
                "model_id": self.model_id,
                "model_sha": None,
                "model_dtype": "float32",
                "model_type": {"embedding": {"pooling": "mean"}},
                "max_concurrent_requests": 512,
                "max_input_length": 512,
                "max_batch_tokens": 16384,
                "max_batch_requests": None,
                "max_client_batch_size": self.max_client_batch_size,
                "auto_truncate": False,
                "tokenization_workers": 1,
                "version": "1.7.0",
                "sha": None,
                "docker_label": None,
            }
        return {} if path == "/health" else None

    async def handle(self, request: Any, scope: Scope, receive: Receive, send: Send) -> None:
        """`/embed`, `/` and `/v1/embeddings`."""
        openai = scope["path"].endswith("/embeddings")
        inputs = request.get("input" if openai else "inputs") if isinstance(request, dict) else None
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            await self.send_json(send, {"error": "invalid inputs", "error_type": "Validation"}, status=422)
            return
        if not texts:
            await self.send_json(send, {"error": "`inputs` cannot be empty", "error_type": "Empty"}, status=400)
            return
        if len(texts) > self.max_client_batch_size:
            error = f"batch size {len(texts)} > maximum allowed batch size {self.max_client_batch_size}"
            await self.send_json(send, {"error": error, "error_type": "Validation"}, status=413)
            return
        vectors = self.vectors(texts)
        if not openai:
            if request.get("normalize", True):
                vectors = [_normalised(v) for v in vectors]
            await self.send_json(send, vectors)
            return
        tokens = sum(len(t.split()) + 2 for t in texts)
        data = [{"object": "embedding", "embedding": _normalised(v), "index": i} for i, v in enumerate(vectors)]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        await self.send_json(send, {"object": "list", "data": data, "model": self.model_id, "usage": usage})


class FakeOpenAIEmbeddings(_FakeEmbeddingServer):
    """An OpenAI-compatible embeddings server (what Ollama, vLLM, llama.cpp and OpenAI answer).

    **Parameters:**

    * **dim** - the vectors' length (default vectors: `word_vector`).
    * **embed** - the model: texts → vectors.
    * **models** - the models served; a request naming another is a 404 (no `model`: the first).
    * **api_key** - the key clients must send as `Authorization: Bearer` (`None`: none needed).
    """

    def __init__(
        self, *, models: Sequence[str] = ("fake-embedding",), api_key: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.models = list(models)
        self.api_key = api_key

    def get_answer(self, path: str) -> Any:
        """`/v1/models`: the models served."""
        if path.endswith("/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
            return {"object": "list", "data": data}
        return None

    async def handle(self, request: Any, scope: Scope, receive: Receive, send: Send) -> None:
        """`/v1/embeddings`."""
        if self.api_key is not None and self.headers[-1].get("authorization") != f"Bearer {self.api_key}":
            await self.send_json(send, _openai_error("Incorrect API key provided", "invalid_api_key"), status=401)
            return
        inputs = request.get("input") if isinstance(request, dict) else None
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not texts or not isinstance(texts, list) or not all(isinstance(t, str) and t for t in texts):
            await self.send_json(send, _openai_error("'input' is invalid", "invalid_value"), status=400)
            return
        model = request.get("model") or self.models[0]
        if model not in self.models:
            await self.send_json(send, _openai_error(f"model '{model}' not found", "model_not_found"), status=404)
            return
        as_base64 = request.get("encoding_format") == "base64"
        data = []
        for i, vector in enumerate(self.vectors(texts)):
            embedding: Any = _normalised(vector)
            if as_base64:
                embedding = base64.b64encode(struct.pack(f"<{len(embedding)}f", *embedding)).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        tokens = sum(len(t.split()) for t in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        await self.send_json(send, {"object": "list", "data": data, "model": model, "usage": usage})


def _normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _openai_error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
