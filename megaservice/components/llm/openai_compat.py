"""The `openai` backend: any server speaking OpenAI's chat API, through megaservice's pooled client.

vLLM, TGI (messages API), Ollama (`/v1`), llama.cpp's server and OpenAI itself all answer
`POST {base}/v1/chat/completions` and `GET {base}/v1/models`. `LLM_ENDPOINT` is the base, as in
OPEA (`http://vllm:80`); a base ending in `/v1` is accepted too (`https://api.openai.com/v1`).
"""

from collections.abc import Awaitable
from urllib.parse import urlsplit

from megaservice.client import StreamedAnswer, UpstreamClient, get_client
from megaservice.components.llm import models
from megaservice.components.llm.backend import LLMSettings
from megaservice.components.llm.models import ModelList
from megaservice.exceptions import ConfigurationError
from megaservice.resilience import Timeout

__all__ = ["NODE", "OpenAIBackend", "api_base"]

NODE = "model-server"
"""The name the model server's failures carry (`UpstreamError.node`, the `node` of error bodies)."""

_LIST_WAIT = 10.0
"""Most seconds a model-list fetch (`/v1/ready`, `GET /v1/models`) waits for the server."""


def api_base(endpoint: str) -> str:
    """The `…/v1` URL of an OpenAI-compatible server given by its base URL, with or without `/v1`.

    Raises:
        ConfigurationError: `endpoint` is not an http(s) URL with a host.
    """
    parts = urlsplit(endpoint.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"LLM_ENDPOINT must be an http(s) URL such as http://localhost:8080, got {endpoint!r}")
    base = endpoint.strip().rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


class OpenAIBackend:
    """Calls one OpenAI-compatible server (an `LLMBackend`).

    **Parameters:**

    * **settings** - the endpoint, key and timeouts.
    * **client** - the pooled client to call it with (default: the running loop's, `get_client()`); an
      https server is verified as `client` verifies (`UpstreamClient(ssl_context=...)`).
    """

    def __init__(self, settings: LLMSettings, *, client: UpstreamClient | None = None) -> None:
        base = api_base(settings.endpoint)
        self.node = NODE
        self.url = base + "/chat/completions"
        """Where chat completions are asked for."""
        self.models_url = base + "/models"
        """Where the model list is read."""
        self._client = client
        headers = {"content-type": "application/json"}
        if settings.api_key:
            headers["authorization"] = f"Bearer {settings.api_key}"
        self._headers = headers
        self._get_headers = {k: v for k, v in headers.items() if k != "content-type"}
        self._timeout = Timeout(connect=settings.connect_timeout, read=settings.read_timeout, total=None)
        list_wait = min(settings.read_timeout or _LIST_WAIT, _LIST_WAIT)  # a probe must not wait minutes
        self._list_timeout = Timeout(connect=settings.connect_timeout, read=list_wait, total=list_wait)
        self._models = ModelList(self._fetch_models)

    @property
    def client(self) -> UpstreamClient:
        """The pooled client calls go through."""
        return self._client if self._client is not None else get_client()

    def complete(self, body: bytes) -> Awaitable[tuple[str, bytes]]:
        """A whole chat completion: the content type and body of the server's 2xx answer."""
        return self.client.post(self.node, self.url, body, headers=self._headers, timeout=self._timeout)

    def stream(self, body: bytes) -> Awaitable[StreamedAnswer]:
        """A streamed chat completion, once its headers are in."""
        return self.client.open_stream(self.node, self.url, body, headers=self._headers, timeout=self._timeout)

    async def models(self) -> bytes:
        """The server's model list (JSON bytes), at most `ModelList.fresh_for` seconds old."""
        return await self._models.get()

    async def ready(self) -> bool:
        """True once the server answers its model list (its failure is raised: `/v1/ready` shows it)."""
        await self._models.get()
        return True

    async def aclose(self) -> None:
        """Stop a model-list fetch in flight (the pooled client is its owner's to close)."""
        await self._models.aclose()

    def _fetch_models(self) -> Awaitable[bytes]:
        return models.get(self.client, self.node, self.models_url, self._get_headers, self._list_timeout)
