"""From a pipeline to the containers that run it: one plan, written out by `compose.py` and `kubernetes.py`.

    plan = plan_deployment(pipeline, ExportOptions())
    plan.containers      jaeger, the pipeline's services in file order, the megaservice last
    plan.secrets         what goes in `.env` / the Secret: the database password, API keys, tokens
    plan.pipeline_file   the pipeline as the megaservice container reads it (nodes at service names)

Every container is addressed by its service name, in Compose and in Kubernetes alike, so one
`pipeline.yaml` serves both. What changes on the way into containers:

* components run our image as `megaservice serve NAME --host 0.0.0.0 --port P [--backend B]`;
* `postgres` becomes the pgvector image on a volume, and the services that need it get
  `PG_CONNECTION_STRING` (its password a secret);
* a `url:` server on this machine (`localhost`) that is an LLM becomes an Ollama container (the
  seeds' `ollama-server`); one elsewhere, or named in `external`, stays where it is;
* every `http://localhost:PORT` in an `env` value is rewritten to the service with that port;
* variables named like secrets (`*_API_KEY`, `*_TOKEN`, `*PASSWORD`, `*SECRET`) leave the env for
  the secrets file.
"""

import re
import shlex
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from megaservice.export.model import (
    Container,
    EnvValue,
    ExportError,
    ExportOptions,
    Mount,
    Plan,
    Published,
    Secret,
    Target,
)
from megaservice.export.pipeline_file import container_pipeline
from megaservice.pipeline.model import Pipeline, ServiceSpec

__all__ = ["GATEWAY", "JAEGER", "PIPELINE_PATH", "TELEMETRY_ENDPOINT", "plan_deployment"]

GATEWAY = "megaservice"
"""The name of the megaservice's container (and its Compose service, Kubernetes Deployment)."""
JAEGER = "jaeger"
PIPELINE_PATH = "/pipeline/pipeline.yaml"
"""Where the megaservice container finds its pipeline file."""
DATA_DIR = "/data"
OLLAMA_PORT = 11434
POSTGRES_PORT = 5432
POSTGRES_USER = "megaservice"
POSTGRES_PASSWORD = "POSTGRES_PASSWORD"  # the secret's name
JAEGER_PORTS = {"ui": 16686, "otlp-grpc": 4317, "otlp-http": 4318}
JAEGER_ADMIN_PORT = 14269
TELEMETRY_ENDPOINT = f"http://{JAEGER}:{JAEGER_PORTS['otlp-http']}/v1/traces"
PG_USERS = ("retriever", "dataprep")
"""Components that store in PostgreSQL: they get `PG_CONNECTION_STRING` when the pipeline has one."""

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "0.0.0.0", "::1", "::"})  # the addresses that mean "this machine"
_SECRET_NAME = re.compile(r"(API_KEY|TOKEN|PASSWORD|SECRET|CONNECTION_STRING)$")

# (cpu, memory) a container asks for: what its model or work needs to start and serve one request at a time
_RESOURCES: dict[str, tuple[str, str]] = {
    "embedding": ("500m", "1Gi"),
    "clip": ("1", "2Gi"),
    "retriever": ("250m", "256Mi"),
    "dataprep": ("500m", "512Mi"),
    "reranker": ("500m", "1Gi"),
    "llm": ("100m", "256Mi"),
    "llm-server": ("2", "2Gi"),
    "bias": ("500m", "1Gi"),
    "guardrails": ("250m", "512Mi"),
    GATEWAY: ("250m", "256Mi"),
    "postgres": ("250m", "512Mi"),
    "ollama": ("2", "4Gi"),
    JAEGER: ("100m", "256Mi"),
}


def plan_deployment(
    pipeline: Pipeline, options: ExportOptions | None = None, *, target: Target = "compose", source: str = ""
) -> Plan:
    """The containers, secrets and container pipeline file that deploy `pipeline` (`source`: its file, for headers).

    Raises:
        ExportError: the pipeline cannot run in containers as it is (the message says what to change).
    """
    return _Planner(pipeline, options or ExportOptions(), target, source).plan()


class _Planner:
    """One export: decides each service's container, then rewrites addresses and secrets."""

    def __init__(self, pipeline: Pipeline, options: ExportOptions, target: Target, source: str) -> None:
        self.pipeline = pipeline
        self.options = options
        self.target = target
        self.source = source
        self.secrets: dict[str, str] = {}
        self.addresses: dict[int, str] = {}
        """Local port (as the pipeline file has it) -> the address inside the deployment."""
        self.postgres = [name for name, spec in pipeline.services.items() if spec.component == "postgres"]
        self.contained: set[str] = set()
        """`url:` services that become containers."""
        self.notes: list[str] = []

    def plan(self) -> Plan:
        self._check_names()
        self._decide_url_services()
        self._collect_addresses()
        containers = [self._jaeger()] if self.options.tracing else []
        for name, spec in self.pipeline.services.items():
            if spec.component == "postgres":
                containers.append(self._postgres(name))
            elif spec.component is not None:
                containers.append(self._component(name, spec))
            elif name in self.contained:
                containers.append(self._ollama(name, spec))
        containers.append(self._gateway())
        if self.target == "compose":
            _check_published(containers)
        return Plan(
            name=self.pipeline.name,
            containers=containers,
            secrets=dict(sorted(self.secrets.items())),
            pipeline_file=container_pipeline(self.pipeline, self._url_services(), PIPELINE_PATH, self.source),
            init_sql="CREATE EXTENSION IF NOT EXISTS vector;\n" if self.postgres else None,
            notes=self.notes,
            reaches_host=any("host.docker.internal" in address for address in self.addresses.values()),
            source=self.source,
        )

    # -- decisions -------------------------------------------------------------------------------

    def _check_names(self) -> None:
        reserved = {GATEWAY, JAEGER} if self.options.tracing else {GATEWAY}
        for name in self.pipeline.services:
            if name in reserved:
                raise ExportError(f"services.{name}: the export names one of its own containers {name!r}; rename it")
        if len(self.postgres) > 1:
            raise ExportError(f"services: one PostgreSQL per deployment, this pipeline has {', '.join(self.postgres)}")
        for name in sorted(self.options.external):
            if name not in self.pipeline.services or self.pipeline.services[name].url is None:
                urls = [n for n, s in self.pipeline.services.items() if s.url is not None] or ["none"]
                raise ExportError(f"--external {name}: not a `url:` service of the pipeline (those: {', '.join(urls)})")

    def _decide_url_services(self) -> None:
        for name, spec in self.pipeline.services.items():
            if spec.url is None or name in self.options.external or not _is_local(str(spec.url)):
                continue
            if spec.role != "llm":
                raise ExportError(
                    f"services.{name}: {spec.url} is a server on this machine, which a container cannot reach, "
                    f"and only an LLM server (as Ollama) is run in one; give its real address, "
                    f"or export with --external {name} to call it on the host"
                )
            self.contained.add(name)

    def _collect_addresses(self) -> None:
        for name, spec in self.pipeline.services.items():
            if spec.url is None and spec.port is not None:
                self.addresses[spec.port] = f"http://{name}:{spec.port}"
            elif spec.url is not None and _is_local(str(spec.url)):
                local = urlsplit(str(spec.url))
                port = local.port or (443 if local.scheme == "https" else 80)
                if name in self.contained:
                    self.addresses[port] = f"http://{name}:{OLLAMA_PORT}"
                elif self.target == "kubernetes":
                    raise ExportError(
                        f"services.{name}: {spec.url} is on this machine, which pods cannot reach; "
                        "give the address the cluster reaches it at, or export without --external to run it"
                    )
                else:
                    self.addresses[port] = f"{local.scheme}://host.docker.internal:{port}"

    # -- containers ------------------------------------------------------------------------------

    def _common_env(self, name: str) -> dict[str, EnvValue]:
        if not self.options.tracing:
            return {}
        return {"TELEMETRY_ENDPOINT": TELEMETRY_ENDPOINT, "OTEL_SERVICE_NAME": name}

    def _jaeger(self) -> Container:
        return Container(
            name=JAEGER,
            kind="jaeger",
            image=self.options.jaeger_image,
            args=[],
            ports=dict(JAEGER_PORTS),
            published=[Published(port, port) for port in JAEGER_PORTS.values()],
            env={"COLLECTOR_OTLP_ENABLED": "true"},
            live_http=("/", JAEGER_ADMIN_PORT),
            resources=_RESOURCES[JAEGER],
        )

    def _postgres(self, name: str) -> Container:
        self.secrets.setdefault(POSTGRES_PASSWORD, "")
        return Container(
            name=name,
            kind="postgres",
            image=self.options.postgres_image,
            args=[],
            port=POSTGRES_PORT,
            ports={"postgres": POSTGRES_PORT},
            published=[Published(POSTGRES_PORT, POSTGRES_PORT, "127.0.0.1")],
            env={
                "POSTGRES_USER": POSTGRES_USER,
                "POSTGRES_DB": POSTGRES_USER,
                POSTGRES_PASSWORD: Secret(POSTGRES_PASSWORD),
                "PGDATA": "/var/lib/postgresql/data/pgdata",
            },
            mounts=[
                Mount(f"{name}-data", "/var/lib/postgresql/data"),
                Mount("postgres-init.sql", "/docker-entrypoint-initdb.d/10-vector.sql", "file"),
            ],
            health=["pg_isready", "-h", "127.0.0.1", "-U", POSTGRES_USER, "-d", POSTGRES_USER],
            resources=_RESOURCES["postgres"],
        )

    def _ollama(self, name: str, spec: ServiceSpec) -> Container:
        local = urlsplit(str(spec.url))
        model = self.pipeline.megaservice.model
        if model:  # serve, wait for the server, pull the model (kept on the volume), keep serving
            script = (
                "ollama serve & server=$!; "
                "until ollama list >/dev/null 2>&1; do sleep 1; done; "
                f"ollama pull {shlex.quote(model)} && wait $server"
            )
            entrypoint, args, health = ["/bin/sh", "-c"], [script], ["ollama", "show", model]
        else:
            entrypoint, args, health = None, ["serve"], ["ollama", "list"]
        return Container(
            name=name,
            kind="ollama",
            image=self.options.ollama_image,
            args=args,
            entrypoint=entrypoint,
            port=OLLAMA_PORT,
            ports={"http": OLLAMA_PORT},
            published=[Published(local.port or 80, OLLAMA_PORT)],
            env={"OLLAMA_HOST": f"0.0.0.0:{OLLAMA_PORT}"},
            mounts=[Mount(f"{name}-models", "/root/.ollama", size="20Gi")],
            health=health,
            resources=_RESOURCES["ollama"],
        )

    def _component(self, name: str, spec: ServiceSpec) -> Container:
        assert spec.component is not None and spec.port is not None  # the model checks both
        args = ["serve", spec.component, "--host", "0.0.0.0", "--port", str(spec.port)]
        if spec.backend is not None:
            args += ["--backend", spec.backend]
        env: dict[str, EnvValue] = {}
        defaults = _default_urls(spec.component)
        if defaults is None:
            self.notes.append(
                f"{name}: the {spec.component} component does not import here, so its default addresses were not "
                "checked; set in its env any address it needs (another service of the pipeline is http://NAME:PORT)"
            )
        for variable, value in (defaults or {}).items():
            if variable not in spec.env and _port_of(value) in self.addresses:
                env[variable] = self._address(name, variable, value)
        for variable, value in spec.env.items():
            if variable == "PG_CONNECTION_STRING" and _is_local(value, schemes=("postgresql", "postgres")):
                if not self.postgres:
                    raise ExportError(
                        f"services.{name}.env.PG_CONNECTION_STRING is on this machine, which a container cannot "
                        "reach: give your PostgreSQL's address, or add a `postgres` service to the pipeline"
                    )
                continue  # the pipeline's own PostgreSQL: its container's address, below
            if _SECRET_NAME.search(variable):
                env[variable] = self._secret(name, variable, value)
            else:
                env[variable] = self._address(name, variable, value)
        needs = self._needs(spec)
        if self.postgres and (spec.component in PG_USERS or self.postgres[0] in spec.needs):
            if "PG_CONNECTION_STRING" not in env:
                env["PG_CONNECTION_STRING"] = Secret(POSTGRES_PASSWORD, self._pg_url())
            needs[self.postgres[0]] = "healthy"
        elif spec.component in PG_USERS and "PG_CONNECTION_STRING" not in env:
            raise ExportError(
                f"services.{name}: a {spec.component} needs PostgreSQL: add a `postgres` service to the "
                "pipeline, or set PG_CONNECTION_STRING in its env to yours"
            )
        return Container(
            name=name,
            kind="component",
            image=self.options.image,
            args=args,
            port=spec.port,
            ports={"http": spec.port},
            published=[Published(spec.port, spec.port)],
            env={**self._common_env(name), **env},
            needs=needs,
            mounts=[Mount("data", DATA_DIR, "scratch")],
            resources=_RESOURCES.get(spec.component, ("250m", "256Mi")),
            scalable=True,
            component=spec.component,
        )

    def _gateway(self) -> Container:
        gateway = self.pipeline.megaservice
        needs: dict[str, Literal["healthy", "started"]] = {}
        wanted = [*gateway.nodes(), *([gateway.dataprep] if gateway.dataprep else [])]
        for name in wanted:
            spec = self.pipeline.services[name]
            if spec.url is None or name in self.contained:
                needs[name] = "healthy"
        args = ["gateway", PIPELINE_PATH, "--host", "0.0.0.0", "--port", str(gateway.port)]
        return Container(
            name=GATEWAY,
            kind="megaservice",
            image=self.options.image,
            args=args,
            port=gateway.port,
            ports={"http": gateway.port},
            published=[Published(gateway.port, gateway.port)],
            env=self._common_env(GATEWAY),
            needs=needs,
            mounts=[Mount("pipeline.yaml", PIPELINE_PATH, "file")],
            resources=_RESOURCES[GATEWAY],
            scalable=True,
        )

    # -- values ----------------------------------------------------------------------------------

    def _needs(self, spec: ServiceSpec) -> dict[str, Literal["healthy", "started"]]:
        needs: dict[str, Literal["healthy", "started"]] = {}
        if self.options.tracing:
            needs[JAEGER] = "started"  # spans are sent when it is up; nothing waits for it
        for needed in spec.needs:
            other = self.pipeline.services[needed]
            if other.url is None or needed in self.contained:
                needs[needed] = "healthy"
        return needs

    def _pg_url(self) -> str:
        host = self.postgres[0]
        return f"postgresql://{POSTGRES_USER}:{{}}@{host}:{POSTGRES_PORT}/{POSTGRES_USER}"

    def _secret(self, service: str, variable: str, value: str) -> Secret:
        key = variable
        if self.secrets.get(key, value) != value:  # two services, two values: one key each
            key = f"{service.upper().replace('-', '_')}_{variable}"
        self.secrets[key] = value
        return Secret(key)

    def _address(self, service: str, variable: str, value: str) -> str:
        """`value` with a URL on this machine replaced by the service that has its port."""
        if not _is_local(value):
            return value
        port = _port_of(value)
        if port not in self.addresses:
            known = ", ".join(f"{p}" for p in sorted(self.addresses)) or "none"
            raise ExportError(
                f"services.{service}.env.{variable} is {value}: an address on this machine, and no service of "
                f"the pipeline has port {port} (theirs: {known}); in a container it would be the container "
                "itself. Point it at a service of the pipeline or at a host the containers can reach"
            )
        parts = urlsplit(value)
        target = urlsplit(self.addresses[port])
        return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))

    def _url_services(self) -> dict[str, str]:
        """Where the megaservice calls each `url:` service from inside the deployment."""
        urls = {}
        for name, spec in self.pipeline.services.items():
            if spec.url is None:
                continue
            url = str(spec.url).rstrip("/")
            if name in self.contained:
                urls[name] = f"http://{name}:{OLLAMA_PORT}"
            else:
                urls[name] = self._address(name, "url", url) if _is_local(url) else url
        return urls


def _check_published(containers: list[Container]) -> None:
    """Two containers cannot publish the same port on the host."""
    owners: dict[int, str] = {}
    for container in containers:
        for published in container.published:
            other = owners.setdefault(published.host_port, container.name)
            if other != container.name:
                raise ExportError(
                    f"services.{container.name}: port {published.host_port} on the host is also {other}'s; "
                    "give one of them another port in the pipeline file"
                )


def _is_local(value: str, schemes: tuple[str, ...] = ("http", "https")) -> bool:
    """Whether `value` is a URL (of one of `schemes`) on this machine."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.split("+")[0] in schemes and (parts.hostname or "") in _LOCAL_HOSTS


def _port_of(value: str) -> int | None:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:  # a port that is not a number
        return None
    return port or (443 if parts.scheme == "https" else 80)


def _default_urls(component: str) -> Mapping[str, str] | None:
    """The variables of `component` whose default is a URL on this machine (`None`: it does not import here)."""
    from megaservice.components import component_module
    from megaservice.settings_docs import describe

    try:
        settings = getattr(component_module(component), "SETTINGS", None)
    except (KeyError, ImportError):  # not installed with its extra, or not written yet
        return None
    if settings is None:
        return None
    rows = [row for row in describe(settings) if not row.help.startswith("Same as `")]  # aliases: the name suffices
    return {row.name: row.default for row in rows if _is_local(row.default)}
