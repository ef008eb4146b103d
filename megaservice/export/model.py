"""What an export is made of: the containers of a deployment, their secrets, and the export's options.

`plan.py` makes a `Plan` from a pipeline; `compose.py` and `kubernetes.py` write it out. Nothing
here knows a file format.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from megaservice._version import __version__
from megaservice.exceptions import ConfigurationError

__all__ = [
    "Container",
    "EnvValue",
    "ExportError",
    "ExportOptions",
    "Exported",
    "Mount",
    "Plan",
    "Published",
    "Secret",
    "Target",
]


class ExportError(ConfigurationError):
    """A pipeline that cannot be deployed as exported; the message names the service and what to change."""


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """What the exported files run, beyond the pipeline file."""

    image: str = f"megaservice:{__version__}"
    """The image every megaservice container runs (built from the repository's `Dockerfile`)."""
    postgres_image: str = "pgvector/pgvector:pg17"
    jaeger_image: str = "jaegertracing/all-in-one:1.67.0"
    ollama_image: str = "ollama/ollama"
    external: frozenset[str] = frozenset()
    """`url:` services to keep calling where they are, even on this machine (Compose reaches it as
    `host.docker.internal`), instead of running them as containers."""
    tracing: bool = True
    """Run Jaeger and send every service's spans to it (`TELEMETRY_ENDPOINT`)."""


@dataclass(frozen=True, slots=True)
class Secret:
    """An environment value made from a secret: `template` with `{}` standing for the secret `key`."""

    key: str
    template: str = "{}"


EnvValue = str | Secret
Target = Literal["compose", "kubernetes"]


@dataclass(frozen=True, slots=True)
class Published:
    """A port reachable from the host (Compose `ports:`)."""

    host_port: int
    port: int
    host_ip: str | None = None


@dataclass(frozen=True, slots=True)
class Mount:
    """A volume (`kind="volume"`, kept), a file of the export (`"file"`), or scratch space (`"scratch"`)."""

    name: str
    path: str
    kind: Literal["volume", "file", "scratch"] = "volume"
    size: str = "10Gi"


@dataclass(slots=True)
class Container:
    """One container of the deployment."""

    name: str
    kind: Literal["component", "megaservice", "postgres", "ollama", "jaeger"]
    image: str
    args: list[str]
    """Arguments after the image's entry point (`megaservice` for ours)."""
    port: int | None = None
    """The port it serves on inside the container (our probes are there)."""
    ports: dict[str, int] = field(default_factory=dict)
    """Every port it serves, by name (Kubernetes Service ports)."""
    published: list[Published] = field(default_factory=list)
    env: dict[str, EnvValue] = field(default_factory=dict)
    needs: dict[str, Literal["healthy", "started"]] = field(default_factory=dict)
    """Containers that must be healthy (or merely started) before this one starts."""
    mounts: list[Mount] = field(default_factory=list)
    entrypoint: list[str] | None = None
    health: list[str] | None = None
    """A readiness command (other images); ours are probed over HTTP on `/v1/ready` and `/v1/health_check`."""
    live_http: tuple[str, int] | None = None
    """Other images: a liveness route `(path, port)`."""
    resources: tuple[str, str] = ("250m", "256Mi")
    scalable: bool = False
    """Stateless: Kubernetes may run several behind its Service (an HPA)."""
    component: str | None = None

    @property
    def ours(self) -> bool:
        """Whether it runs the megaservice image (and serves our probes)."""
        return self.kind in ("component", "megaservice")


@dataclass(slots=True)
class Plan:
    """The deployment of one pipeline."""

    name: str
    containers: list[Container]
    secrets: dict[str, str]
    """Secret values by key, as known at export time (the password is generated when the file is written)."""
    pipeline_file: str
    """The megaservice container's `pipeline.yaml`."""
    init_sql: str | None = None
    """Run once by PostgreSQL on an empty volume."""
    notes: list[str] = field(default_factory=list)
    """What the export could not check, for the user to look at (the CLI prints them)."""
    reaches_host: bool = False
    """Some service is called on the Docker host (`host.docker.internal`)."""
    source: str = ""

    def container(self, name: str) -> Container:
        """The container called `name`."""
        for item in self.containers:
            if item.name == name:
                return item
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Exported:
    """What an export wrote, and what it could not check."""

    files: list[Path]
    notes: list[str]
