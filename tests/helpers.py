"""Build pipeline nodes pointing at fakes; a scripted raw-socket server for exact wire cases."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from megaservice import MicroService, ServiceType


def node(name: str, base_url: str, service_type: ServiceType = ServiceType.UNDEFINED, **kwargs) -> MicroService:
    parts = urlsplit(base_url)
    return MicroService(
        name=name,
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (443 if parts.scheme == "https" else 80),
        endpoint=kwargs.pop("endpoint", "/v1/node"),
        protocol=parts.scheme or "http",
        use_remote_service=True,
        service_type=service_type,
        **kwargs,
    )


def gateway(orchestrator, path: str = "/v1/chat") -> MicroService:
    """A megaservice in OPEA's style: one route handing `{"text", "stream"}` to `schedule()`."""
    from fastapi import Request

    from megaservice import LLMParams, ServiceRoleType

    service = MicroService("Gateway", service_role=ServiceRoleType.MEGASERVICE, port=0, endpoint=path)

    async def handle(request: Request):
        data = await request.json()
        results, graph = await orchestrator.schedule(
            {"text": data["text"]}, llm_parameters=LLMParams(stream=data.get("stream", True))
        )
        for response in results.values():
            if hasattr(response, "body_iterator"):
                return response
        return results[graph.all_leaves()[-1]]

    service.add_route(path, handle, methods=["POST"])
    return service


Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]
"""Write the answer to one request; return whether to keep the connection for another."""


class Scripted:
    """A loopback server that answers every request with `answer`, and counts connections."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.open = 0
        self.requests: list[bytes] = []
        self.readers: list[asyncio.StreamReader] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.writers.append(writer)
        self.readers.append(reader)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if not await self.answer(request, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def hold(self, writer: asyncio.StreamWriter) -> bool:
        """Answer nothing more on `writer`'s connection; return once the client closed its end."""
        reader = self.readers[self.writers.index(writer)]
        while not reader.at_eof():
            await asyncio.sleep(0.01)
        return False

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}/v1/node"
        finally:
            for writer in self.writers:
                writer.close()
            server.close()
