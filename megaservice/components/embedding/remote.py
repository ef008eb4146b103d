"""What the remote backends (`tei`, `openai`, `clip`) share: calls through megaservice's pooled client.

A request's texts are sent in calls of at most `EMBEDDING_REMOTE_BATCH` texts, concurrently (TEI
refuses more than its `max_client_batch_size`, 32 by default). Every failure is an `UpstreamError`
naming the backend, which the service answers as 502 (down, a bad answer) or 504 (too slow).
Readiness is the remote's health: one short text embedded, the success remembered for a few
seconds (TEI's own `/health` runs the model the same way).
"""

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from megaservice.client import Timeout, UpstreamClient, get_client
from megaservice.components.embedding.backend import Embedded
from megaservice.exceptions import UpstreamProtocolError

if TYPE_CHECKING:
    import numpy.typing as npt

    from megaservice.components.embedding.backend import EmbeddingSettings

__all__ = ["RemoteBackend", "remote_backend"]

_PROBE_TEXT = "ready?"


class RemoteBackend:
    """Base of the remote backends: subclasses say what to send (`request_body`) and how to read it (`read_answer`).

    **Parameters:**

    * **url** - the remote route called.
    * **model** - the model name configured (`EMBEDDING_MODEL`), if any.
    * **headers** - sent with every call (authorisation).
    * **timeout** - seconds for one call (`UpstreamTimeout`, a 504, past it).
    * **batch** - most texts per call.
    * **client** - the client to call with (default: the running loop's pooled client).
    * **ready_for** - seconds a successful health probe is trusted.
    """

    name = "remote"

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        batch: int = 32,
        client: UpstreamClient | None = None,
        ready_for: float = 5.0,
    ) -> None:
        self.url = url
        self._model = model
        self._headers = {"content-type": "application/json", **(headers or {})}
        self._timeout = Timeout(connect=min(10.0, timeout), read=timeout, total=timeout)
        self._batch = batch
        self._client = client
        self._ready_for = ready_for
        self._ready_until = 0.0
        self._seen_model: str | None = None
        self._dimension: int | None = None

    @property
    def model_id(self) -> str:
        """The configured model, else the one the remote named in its answers, else the backend's name."""
        return self._model or self._seen_model or self.name

    @property
    def dimension(self) -> int | None:
        """The vectors' length, once the remote answered."""
        return self._dimension

    @property
    def max_input_length(self) -> int:
        """Not known of a remote model: 512 (what most embedding models read)."""
        return 512

    @property
    def model_dtype(self) -> str | None:
        """Not known of a remote model: `None`."""
        return None

    async def start(self) -> None:
        """Nothing to load: the remote is probed by `ready()`."""

    async def ready(self) -> bool:
        """Whether the remote embeds a short text now (raises the `UpstreamError` saying why not)."""
        now = time.monotonic()
        if now < self._ready_until:
            return True
        await self._call([_PROBE_TEXT], None)
        self._ready_until = time.monotonic() + self._ready_for
        return True

    async def embed(self, texts: list[str], model: str | None = None) -> Embedded:
        """The remote's vectors of `texts`, in calls of at most `batch` texts made concurrently."""
        import numpy as np

        if len(texts) <= self._batch:
            return await self._call(texts, model)
        parts = [texts[i : i + self._batch] for i in range(0, len(texts), self._batch)]
        answers = await asyncio.gather(*(self._call(part, model) for part in parts))
        vectors = np.concatenate([answer.vectors for answer in answers])
        return Embedded(vectors, sum(answer.tokens for answer in answers), answers[0].model)

    async def _call(self, texts: list[str], model: str | None) -> Embedded:
        import numpy as np

        client = self._client or get_client()
        body = orjson.dumps(self.request_body(texts, self._model or model))
        _, content = await client.post(self.name, self.url, body, headers=self._headers, timeout=self._timeout)
        try:
            answer = orjson.loads(content)
            rows, tokens, answered_model = self.read_answer(answer)
            vectors: npt.NDArray[np.float32] = np.asarray(rows, dtype=np.float32)
        except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise self._bad_answer(f"not the expected JSON ({exc})") from exc
        if vectors.ndim != 2 or len(vectors) != len(texts) or vectors.shape[1] == 0:
            raise self._bad_answer(f"{vectors.shape[0] if vectors.ndim else 0} vectors for {len(texts)} texts")
        self._dimension = int(vectors.shape[1])
        if answered_model:
            self._seen_model = answered_model
        return Embedded(vectors, tokens, answered_model)

    def _bad_answer(self, what: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(f"{self.name} answered {what}", node=self.name, url=self.url)

    def request_body(self, texts: list[str], model: str | None) -> dict[str, Any]:
        """The JSON body of one call."""
        raise NotImplementedError

    def read_answer(self, answer: Any) -> tuple[Any, int, str | None]:
        """`(rows, tokens, model)` of the remote's parsed answer (`ValueError`, `KeyError`, `TypeError` if wrong)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Nothing held: the pooled client belongs to the loop."""


def remote_backend(name: str, settings: "EmbeddingSettings", **kwargs: Any) -> RemoteBackend:
    """The remote backend `name` (`tei`, `openai` or `clip`) as `settings` configure it."""
    common: dict[str, Any] = {"timeout": settings.remote_timeout, "batch": settings.remote_batch, **kwargs}
    if name == "tei":
        from megaservice.components.embedding.tei import TEIBackend

        return TEIBackend(settings.tei_endpoint, model=settings.model, token=settings.hf_token, **common)
    if name == "openai":
        from megaservice.components.embedding.openai_compatible import OpenAIBackend

        return OpenAIBackend(settings.openai_endpoint, model=settings.model, api_key=settings.openai_api_key, **common)
    from megaservice.components.embedding.clip import ClipBackend

    return ClipBackend(settings.clip_endpoint, **common)
