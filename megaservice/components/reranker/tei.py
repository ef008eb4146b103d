"""The `tei` backend: a remote Text Embeddings Inference reranker (OPEA's `OPEA_TEI_RERANKING`).

    RERANK_BACKEND=tei TEI_RERANKING_ENDPOINT=http://tei-rerank:80 megaservice serve reranker

Calls `POST {TEI_RERANKING_ENDPOINT}/rerank` with `{"query", "texts", "raw_scores"}` through the pooled
client (`HF_TOKEN` as a bearer token if set). TEI refuses more texts than its `max_client_batch_size`
(32 by default): a larger request is split into calls of at most `RERANK_REMOTE_BATCH` texts, made
concurrently, whose scores are merged (a cross-encoder scores each pair on its own, so scores of
different calls compare). Readiness is TEI's `GET /health` (which runs the model), remembered for a
few seconds; the first success also reads `GET /info` for the model's name and limits.
"""

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import orjson

from megaservice.client import Timeout, UpstreamClient, get_client
from megaservice.exceptions import UpstreamError, UpstreamProtocolError

if TYPE_CHECKING:
    from megaservice.components.reranker.backend import RerankerSettings

__all__ = ["TEIReranker", "tei_base"]

_NODE = "tei-rerank"


def tei_base(endpoint: str) -> str:
    """The TEI server's base URL (`endpoint` may be the base or its `/rerank` route)."""
    base = endpoint.rstrip("/")
    return base.removesuffix("/rerank")


class TEIReranker:
    """Scores from a TEI server's `/rerank`.

    **Parameters:**

    * **endpoint** - the TEI server's base URL.
    * **model** - the model's name to report (default: what the server's `/info` says).
    * **token** - sent as `Authorization: Bearer`.
    * **timeout** - seconds for one call (`UpstreamTimeout`, a 504, past it).
    * **batch** - most texts per call.
    * **client** - the client to call with (default: the running loop's pooled client).
    * **ready_for** - seconds a successful health check is trusted.
    """

    name = "tei"

    def __init__(
        self,
        endpoint: str,
        *,
        model: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        batch: int = 32,
        client: UpstreamClient | None = None,
        ready_for: float = 5.0,
    ) -> None:
        base = tei_base(endpoint)
        self.url = base + "/rerank"
        self._health_url = base + "/health"
        self._info_url = base + "/info"
        self._model = model
        self._headers = {"content-type": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        self._timeout = Timeout(connect=min(10.0, timeout), read=timeout, total=timeout)
        self.batch = batch
        self._client = client
        self._ready_for = ready_for
        self._ready_until = 0.0
        self._info: dict[str, Any] | None = None

    @classmethod
    def from_settings(cls, settings: "RerankerSettings", **kwargs: Any) -> "TEIReranker":
        """The backend as `settings` configure it (keyword arguments replace them, e.g. `client=`)."""
        options: dict[str, Any] = {
            "model": settings.model,
            "token": settings.hf_token,
            "timeout": settings.remote_timeout,
            "batch": settings.remote_batch,
            **kwargs,
        }
        return cls(settings.tei_endpoint, **options)

    @property
    def model_id(self) -> str:
        """The configured model, else the one the server's `/info` named, else `tei`."""
        named = (self._info or {}).get("model_id")
        return self._model or (named if isinstance(named, str) else None) or self.name

    @property
    def max_input_length(self) -> int:
        """What the server's `/info` says (512 until it was read)."""
        length = (self._info or {}).get("max_input_length")
        return length if isinstance(length, int) and length > 0 else 512

    async def start(self) -> None:
        """Nothing to load: the server is checked by `ready()`."""

    async def ready(self) -> bool:
        """Whether TEI's `/health` answers 200 now (raises the `UpstreamError` saying why not)."""
        if time.monotonic() < self._ready_until:
            return True
        client = self._client or get_client()
        await client.get(_NODE, self._health_url, headers=self._headers, timeout=self._timeout)
        if self._info is None:
            await self._read_info(client)
        self._ready_until = time.monotonic() + self._ready_for
        return True

    async def _read_info(self, client: UpstreamClient) -> None:
        """The server's `/info`: its model's name and limits (a server without it keeps the defaults)."""
        with contextlib.suppress(UpstreamError, orjson.JSONDecodeError):
            _, content = await client.get(_NODE, self._info_url, headers=self._headers, timeout=self._timeout)
            info = orjson.loads(content)
            if isinstance(info, dict):
                self._info = info
                limit = info.get("max_client_batch_size")
                if isinstance(limit, int) and 0 < limit < self.batch:
                    self.batch = limit

    async def score(
        self, query: str, texts: list[str], *, raw: bool = False, truncate: bool | None = None
    ) -> list[float]:
        """TEI's score of each text, in the texts' order (calls of at most `batch` texts, concurrently)."""
        if len(texts) <= self.batch:
            return await self._call(query, texts, raw, truncate)
        parts = [texts[i : i + self.batch] for i in range(0, len(texts), self.batch)]
        answers = await asyncio.gather(*(self._call(query, part, raw, truncate) for part in parts))
        return [score for answer in answers for score in answer]

    async def _call(self, query: str, texts: list[str], raw: bool, truncate: bool | None) -> list[float]:
        body: dict[str, Any] = {"query": query, "texts": texts, "raw_scores": raw}
        if truncate is not None:
            body["truncate"] = truncate
        client = self._client or get_client()
        _, content = await client.post(
            _NODE, self.url, orjson.dumps(body), headers=self._headers, timeout=self._timeout
        )
        try:
            return _read_ranks(orjson.loads(content), len(texts))
        except (orjson.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
            raise UpstreamProtocolError(f"{_NODE} answered {exc}", node=_NODE, url=self.url) from exc

    async def aclose(self) -> None:
        """Nothing held: the pooled client belongs to the loop."""


def _read_ranks(answer: Any, count: int) -> list[float]:
    """The scores, in text order, of TEI's `[{"index", "score"}]` for `count` texts (`ValueError` if it is not that)."""
    if not isinstance(answer, list):
        raise TypeError(f"a {type(answer).__name__} instead of a list of ranks")
    scores: list[float | None] = [None] * count
    for rank in answer:
        index, score = rank["index"], rank["score"]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise ValueError(f"index {index!r} for {count} texts")
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise TypeError(f"score {score!r} is not a number")
        if scores[index] is not None:
            raise ValueError(f"index {index} twice")
        scores[index] = float(score)
    missing = [i for i, s in enumerate(scores) if s is None]
    if missing:
        raise ValueError(f"no score for {len(missing)} of {count} texts")
    return [s for s in scores if s is not None]
