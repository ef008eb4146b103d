"""The `tei` backend: a remote Text Embeddings Inference server (OPEA's `OPEA_TEI_EMBEDDING`).

    EMBEDDING_BACKEND=tei TEI_EMBEDDING_ENDPOINT=http://tei:80 megaservice serve embedding

Calls `POST {TEI_EMBEDDING_ENDPOINT}/embed` with `{"inputs": [...], "truncate": true, "normalize": false}`
(TEI answers `[[floats]]`; the service normalises), `HF_TOKEN` as a bearer token if set.
"""

from typing import Any

from megaservice.components.embedding.remote import RemoteBackend

__all__ = ["TEIBackend", "tei_url"]


def tei_url(endpoint: str) -> str:
    """TEI's embed route under `endpoint` (a base URL, or the `/embed` URL itself)."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/embed") else base + "/embed"


class TEIBackend(RemoteBackend):
    """Embeddings from a TEI server's `/embed` (long inputs cut to the model's length, as `--auto-truncate`)."""

    name = "tei"

    def __init__(self, endpoint: str, *, token: str | None = None, **kwargs: Any) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        super().__init__(tei_url(endpoint), headers=headers, **kwargs)

    def request_body(self, texts: list[str], model: str | None) -> dict[str, Any]:
        """TEI's embed request."""
        return {"inputs": texts, "truncate": True, "normalize": False}

    def read_answer(self, answer: Any) -> tuple[Any, int, str | None]:
        """TEI answers the vectors only."""
        if not isinstance(answer, list):
            raise TypeError(f"a {type(answer).__name__} instead of a list of vectors")
        return answer, 0, None
