"""Build pipeline nodes pointing at fakes served on loopback."""

from urllib.parse import urlsplit

from megaservice import MicroService, ServiceType


def node(name: str, base_url: str, service_type: ServiceType = ServiceType.UNDEFINED, **kwargs) -> MicroService:
    parts = urlsplit(base_url)
    return MicroService(
        name=name,
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 80,
        endpoint=kwargs.pop("endpoint", "/v1/node"),
        use_remote_service=True,
        service_type=service_type,
        **kwargs,
    )
