"""From a pipeline to a `ServiceOrchestrator`: each flow node a remote `MicroService` at its service's address."""

from megaservice.exceptions import ConfigurationError
from megaservice.microservice import MicroService
from megaservice.orchestrator import ServiceOrchestrator
from megaservice.pipeline.model import Pipeline

__all__ = ["build_orchestrator", "flow_nodes"]


def flow_nodes(pipeline: Pipeline) -> dict[str, MicroService]:
    """The remote node of each service of the flow, named as the service (`embedding/MicroService`)."""
    nodes = {}
    for name in pipeline.megaservice.nodes():
        spec = pipeline.services[name]
        role = spec.node_role()
        if role is None:
            raise ConfigurationError(f"{name} cannot be a node of the flow")
        base = spec.base_url()
        scheme, _, rest = base.partition("://")
        host, _, port = rest.partition(":")
        path = ""
        if "/" in port:
            port, _, tail = port.partition("/")
            path = "/" + tail
        elif "/" in host:
            host, _, tail = host.partition("/")
            path = "/" + tail
        nodes[name] = MicroService(
            name=name,
            host=host,
            port=int(port) if port else (443 if scheme == "https" else 80),
            protocol=scheme,
            endpoint=path.rstrip("/") + role.endpoint,
            use_remote_service=True,
            service_type=role.service_type,
        )
    return nodes


def build_orchestrator(pipeline: Pipeline, orchestrator: ServiceOrchestrator | None = None) -> ServiceOrchestrator:
    """Add the pipeline's flow to `orchestrator` (default: a new plain `ServiceOrchestrator`) and return it."""
    target = orchestrator if orchestrator is not None else ServiceOrchestrator()
    nodes = flow_nodes(pipeline)
    for node in nodes.values():
        target.add(node)
    for start, end in pipeline.megaservice.edges():
        target.flow_to(nodes[start], nodes[end])
    return target
