"""`megaservice up --observe`: the local trace receiver and viewer, started first, every service exporting to it.

The receiver is `python -m megaservice.observe`: spans in over OTLP/HTTP on 4318, the viewer on
16686 (Jaeger's ports), or the next free numbers up where the pipeline itself uses those ports.
It is one of the supervised processes: its log lines prefixed, its port checked before anything
starts, restarted and stopped with the others (last, so the services' final exports reach it).
"""

import importlib.util
import sys
from dataclasses import dataclass

from megaservice.exceptions import ConfigurationError
from megaservice.observe import OTLP_PORT, UI_PORT
from megaservice.pipeline.model import Observe, Pipeline

__all__ = ["RECEIVER", "Receiver", "missing_tracing", "observed_env", "receiver_for"]

RECEIVER = "traces"
"""The receiver's name among the services `up` starts (`trace-viewer` if the pipeline has a `traces`)."""

BATCH_DELAY_MS = "1000"
"""`OTEL_BSP_SCHEDULE_DELAY` of observed services unless set: a trace shows within a second or so, not 5."""


@dataclass(frozen=True, slots=True)
class Receiver:
    """Where the receiver listens and what it keeps."""

    name: str
    port: int
    ui_port: int
    max_traces: int
    max_spans: int
    host: str = "127.0.0.1"

    @property
    def traces_url(self) -> str:
        """What every service's `TELEMETRY_ENDPOINT` is set to."""
        return f"http://{self.host}:{self.port}/v1/traces"

    @property
    def viewer_url(self) -> str:
        """The page that shows the traces."""
        return f"http://{self.host}:{self.ui_port}/"

    def argv(self) -> list[str]:
        """The receiver's command."""
        return [
            sys.executable,
            "-m",
            "megaservice.observe",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--max-traces",
            str(self.max_traces),
            "--max-spans",
            str(self.max_spans),
        ]


def receiver_for(
    pipeline: Pipeline, settings: Observe | None = None, *, port: int | None = None, ui_port: int | None = None
) -> Receiver:
    """The receiver for `pipeline`: `port`/`ui_port` (the command line's), else `settings`' (the file's), else Jaeger's.

    A default port the pipeline already uses moves to the next free number up; a port asked for that
    the pipeline uses is a `ConfigurationError`.
    """
    settings = settings or pipeline.observe or Observe()
    used = pipeline.ports()
    chosen: list[int] = []
    for key, asked, default in (("port", port, OTLP_PORT), ("ui-port", ui_port, UI_PORT)):
        wanted = asked if asked is not None else getattr(settings, key.replace("-", "_"))
        if wanted is not None:
            if wanted in used or wanted in chosen:
                whose = used.get(wanted, "the receiver's other port")
                raise ConfigurationError(f"the trace receiver's {key} {wanted} is also the port of {whose}")
        else:
            wanted = default
            while wanted in used or wanted in chosen:
                wanted += 1
        chosen.append(wanted)
    name = RECEIVER if RECEIVER not in pipeline.services else "trace-viewer"
    return Receiver(name, chosen[0], chosen[1], settings.max_traces, settings.max_spans)


def observed_env(env: dict[str, str], receiver: Receiver, name: str | None = None) -> dict[str, str]:
    """A service's environment, exporting its spans to `receiver` (whatever endpoint or switch it had).

    With `name` (the pipeline's name of the service), its spans are that service's (`OTEL_SERVICE_NAME`),
    so the trace viewer names services as the pipeline file does (`guardrail`, not the component's `bias`).
    """
    observed = {**env, "TELEMETRY_ENDPOINT": receiver.traces_url}
    if name is not None:
        observed["OTEL_SERVICE_NAME"] = name
    observed.pop("OTEL_SDK_DISABLED", None)
    observed.setdefault("OTEL_BSP_SCHEDULE_DELAY", BATCH_DELAY_MS)
    return observed


def missing_tracing() -> str | None:
    """What is missing for `--observe` (the `tracing` extra), or `None`."""
    for module in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http", "opentelemetry.proto"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"{module} is not installed: pip install 'megaservice[tracing]'"
    return None
