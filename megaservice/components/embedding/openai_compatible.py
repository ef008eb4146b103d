"""The `openai` backend: any OpenAI-compatible `/v1/embeddings` (Ollama, vLLM, llama.cpp, OpenVINO, OpenAI).

    export EMBEDDING_BACKEND=openai OPENAI_EMBEDDING_ENDPOINT=http://ollama:11434 EMBEDDING_MODEL=nomic-embed-text
    megaservice serve embedding

The model sent is `EMBEDDING_MODEL`, else the request's `model` (a server serving one model needs
neither); `OPENAI_API_KEY` is sent as a bearer token. Vectors are asked as floats.
"""

from typing import Any

from megaservice.components.embedding.remote import RemoteBackend

__all__ = ["OpenAIBackend", "openai_url"]


def openai_url(endpoint: str) -> str:
    """The embeddings route under `endpoint` (a base URL, one ending in `/v1`, or the route itself)."""
    base = endpoint.rstrip("/")
    if base.endswith("/embeddings"):
        return base
    return base + ("/embeddings" if base.endswith("/v1") else "/v1/embeddings")


class OpenAIBackend(RemoteBackend):
    """Embeddings from an OpenAI-compatible server."""

    name = "openai"

    def __init__(self, endpoint: str, *, api_key: str | None = None, **kwargs: Any) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        super().__init__(openai_url(endpoint), headers=headers, **kwargs)

    def request_body(self, texts: list[str], model: str | None) -> dict[str, Any]:
        """OpenAI's embeddings request (no `model` when none is known: the server's only one)."""
        body: dict[str, Any] = {"input": texts, "encoding_format": "float"}
        if model:
            body["model"] = model
        return body

    def read_answer(self, answer: Any) -> tuple[Any, int, str | None]:
        """The vectors in `index` order, `usage.prompt_tokens`, `model`."""
        items = sorted(answer["data"], key=lambda item: int(item["index"]))
        rows = [item["embedding"] for item in items]
        usage = answer.get("usage") or {}
        model = answer.get("model")
        return rows, int(usage.get("prompt_tokens") or 0), model if isinstance(model, str) else None
