"""`GatewaySettings`: what the megaservice of a pipeline reads from the environment besides `megaservice.settings`."""

from dataclasses import dataclass
from typing import ClassVar

from megaservice.settings import EnvSettings, variable

__all__ = ["GatewaySettings"]


@dataclass(frozen=True, slots=True)
class GatewaySettings(EnvSettings):
    """The megaservice's own settings (its port and routes are the pipeline file's)."""

    env_prefix: ClassVar[str] = "MEGASERVICE_"

    dataprep_timeout: float = variable(
        "DATAPREP_TIMEOUT",
        600.0,
        minimum=0.001,
        help="Seconds the megaservice waits for dataprep to answer an upload it passed on (504 beyond; OPEA's "
        "`TIMEOUT_SECONDS`).",
    )
    """Seconds to wait for dataprep's answer to an upload passed on (ingestion embeds every chunk first)."""
