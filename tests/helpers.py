"""Build pipeline nodes pointing at fakes served on loopback."""

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
