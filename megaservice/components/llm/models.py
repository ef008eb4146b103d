"""The model server's model list: `GET /v1/models`, cached, one fetch at a time.

    get(client, node, url, headers, timeout)   one GET, its failures as `UpstreamError`s naming `node`
    ModelList                                  the cached answer; what `/v1/ready` and `GET /v1/models` read

`/v1/ready` is probed often (every few seconds by Kubernetes, by every replica's load balancer);
the model server is asked at most once per `fresh_for` seconds while it answers, and at most once
per `retry_after` seconds while it does not, however many probes come: concurrent ones share the
fetch in flight, later ones get the cached answer (or the cached failure).

The pooled client (`megaservice.client`) only POSTs, so the GET is made here: over the client's own
connection pool for plain-http servers (no new connection, no new dependency), and with a short-lived
aiohttp session for https ones (aiohttp is what the client carries https with, so it is loaded
anyway). `UpstreamClient` growing a `get()` would make this module a cache only.
"""

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping

from megaservice._transport.pool import PoolTransport, Target, target
from megaservice.client import UpstreamClient
from megaservice.exceptions import UpstreamError, UpstreamStatusError
from megaservice.resilience import Timeout

__all__ = ["ModelList", "get"]

_LIMIT = 4 * 1024 * 1024
"""Largest model list accepted (OpenAI's is about 10 KB)."""


async def get(
    client: UpstreamClient,
    node: str,
    url: str,
    headers: Mapping[str, str],
    timeout: Timeout,
    ssl_context: ssl.SSLContext | None = None,
) -> bytes:
    """`GET url`: the body of a 2xx answer; `UpstreamError` subclasses naming `node` otherwise."""
    to = target(url)
    if to is not None and isinstance(client.transport_for(url), PoolTransport):
        head = b"GET " + to.head.removeprefix(b"POST ")
        answer = await client.pool.post(
            node,
            url,
            Target(to.host, to.port, head),
            b"",
            headers,
            connect=timeout.connect,
            total=timeout.total,
            read=timeout.read,
            first_byte=timeout.first_byte,
            limit=_LIMIT,
        )
        try:
            data = await answer.read()
        except BaseException:
            answer.close()
            raise
        answer.release()
        status = answer.status
    else:
        status, data = await _get_tls(node, url, headers, timeout, ssl_context)
    if status >= 300:
        raise UpstreamStatusError(node=node, url=url, status=status, body=data)
    return data


async def _get_tls(
    node: str, url: str, headers: Mapping[str, str], timeout: Timeout, ssl_context: ssl.SSLContext | None
) -> tuple[int, bytes]:
    import aiohttp

    from megaservice._transport.session import upstream_errors

    limits = aiohttp.ClientTimeout(total=timeout.total, sock_connect=timeout.connect, sock_read=timeout.read)
    with upstream_errors(node, url):
        connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True)
        async with (
            aiohttp.ClientSession(connector=connector, trust_env=False, timeout=limits) as session,
            session.get(url, headers=dict(headers), allow_redirects=False) as response,
        ):
            return response.status, await response.content.read(_LIMIT)


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
