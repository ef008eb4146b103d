"""The model server's model list: `GET /v1/models`, cached, one fetch at a time.

    get(client, node, url, headers, timeout)   one GET through the pooled client, failures naming `node`
    ModelList                                  the cached answer; what `/v1/ready` and `GET /v1/models` read

`/v1/ready` is probed often (every few seconds by Kubernetes, by every replica's load balancer);
the model server is asked at most once per `fresh_for` seconds while it answers, and at most once
per `retry_after` seconds while it does not, however many probes come: concurrent ones share the
fetch in flight, later ones get the cached answer (or the cached failure).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from megaservice.client import UpstreamClient
from megaservice.exceptions import UpstreamError
from megaservice.resilience import Timeout

__all__ = ["ModelList", "get"]


async def get(client: UpstreamClient, node: str, url: str, headers: Mapping[str, str], timeout: Timeout) -> bytes:
    """`GET url`: the body of a 2xx answer; `UpstreamError` subclasses naming `node` otherwise."""
    _, body = await client.get(node, url, headers=headers, timeout=timeout)
    return body


def _retrieve(task: "asyncio.Future[bytes]") -> None:
    """Mark the fetch's failure seen, even when every caller gave up waiting for it."""
    if not task.cancelled():
        task.exception()


class ModelList:
    """The answer of `fetch` (the model server's model list), fetched again once it is `fresh_for` seconds old.

    A failure is kept `retry_after` seconds and raised again meanwhile, without asking the server.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[bytes]],
        *,
        fresh_for: float = 30.0,
        retry_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.fresh_for = fresh_for
        self.retry_after = retry_after
        self._clock = clock
        self._body: bytes | None = None
        self._error: UpstreamError | None = None
        self._until = 0.0
        self._pending: asyncio.Future[bytes] | None = None

    async def get(self) -> bytes:
        """The model list (JSON bytes): cached, or fetched now; raises the fetch's `UpstreamError`."""
        if self._clock() < self._until:
            if self._error is not None:
                raise self._error.with_traceback(None)  # a fresh traceback each time: they would pile up
            assert self._body is not None
            return self._body
        pending = self._pending
        if pending is None:
            pending = self._pending = asyncio.ensure_future(self._refresh())
            pending.add_done_callback(_retrieve)
        return await asyncio.shield(pending)  # a caller that gives up does not cancel the others' fetch

    async def _refresh(self) -> bytes:
        try:
            body = await self._fetch()
        except UpstreamError as exc:
            self._error, self._until = exc, self._clock() + self.retry_after
            raise
        finally:
            self._pending = None
        self._body, self._error, self._until = body, None, self._clock() + self.fresh_for
        return body

    async def aclose(self) -> None:
        """Stop a fetch in flight."""
        pending = self._pending
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
