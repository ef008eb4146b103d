"""`/v1/dataprep/{ingest,get,delete}` on the megaservice, passed to the pipeline's dataprep service.

So the chat page uploads on its own origin (no CORS, one port to open). The request body is
streamed to dataprep as it arrives (a large upload is never held in memory), with the client's
`Content-Type` (the multipart boundary) and `Content-Length`; the body is limited by the
megaservice's `MEGASERVICE_MAX_BODY_BYTES` (413 beyond it, before dataprep sees a byte when the
client declares its length). Dataprep's answer comes back as it answered: its 2xx, its 4xx (a
file type it cannot read, a file too large), its 503 (its database is down). It failing otherwise
is a 502 naming it, not answering at all a 502, too slow (`MEGASERVICE_DATAPREP_TIMEOUT`) a 504.
"""

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from megaservice.exceptions import InputError, UpstreamConnectError, UpstreamStatusError, UpstreamTimeout

if TYPE_CHECKING:
    import aiohttp

__all__ = ["DATAPREP_ROUTES", "DataprepProxy"]

DATAPREP_ROUTES = ("ingest", "get", "delete")
"""OPEA's dataprep routes the megaservice passes on (`POST /v1/dataprep/<route>`)."""

_PASSED_HEADERS = ("content-type", "content-length", "accept")


class DataprepProxy:
    """Passes `/v1/dataprep/*` requests to the dataprep service at `base_url`, named `node` in errors."""

    def __init__(self, base_url: str, *, node: str = "dataprep", timeout: float = 600.0, max_answer: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.node = node
        self.timeout = timeout
        self.max_answer = max_answer
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> "aiohttp.ClientSession":
        if self._session is None or self._session.closed:
            import aiohttp

            self._session = aiohttp.ClientSession(auto_decompress=False)
        return self._session

    async def forward(self, request: Request, route: str) -> Response:
        """Send `request` on to dataprep's `/v1/dataprep/<route>`; its answer, or the error naming dataprep."""
        import aiohttp

        url = f"{self.base_url}/v1/dataprep/{route}"
        headers = {name: value for name, value in request.headers.items() if name in _PASSED_HEADERS}
        stopped: list[BaseException] = []
        body = _body(request, stopped)
        try:
            async with self._client().post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as answer:
                content = await answer.content.read(self.max_answer + 1)
                status = answer.status
                media_type = answer.headers.get("content-type", "application/json")
        except TimeoutError:
            raise UpstreamTimeout(
                f"{self.node} did not answer in {self.timeout:g} s", node=self.node, url=url
            ) from None
        except aiohttp.ClientError as exc:
            if stopped:  # the client's body was refused or cut off: that, not dataprep, is what failed
                raise stopped[0] from None
            raise UpstreamConnectError(f"{self.node} could not be reached: {exc}", node=self.node, url=url) from None
        if stopped:
            raise stopped[0]
        if len(content) > self.max_answer:
            raise UpstreamStatusError(node=self.node, url=url, status=status, body=b"answer too large")
        if status >= 500 and status != 503:
            raise UpstreamStatusError(node=self.node, url=url, status=status, body=content)
        return Response(content, status_code=status, media_type=media_type)

    async def aclose(self) -> None:
        """Close the connections to dataprep."""
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _body(request: Request, stopped: list[BaseException]) -> AsyncIterator[bytes]:
    """The request body as it arrives; a refusal (413) or the client leaving: kept in `stopped`, the call aborted."""
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except (InputError, ClientDisconnect) as exc:
        stopped.append(exc)
        raise
