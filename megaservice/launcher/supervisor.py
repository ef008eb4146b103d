"""Start a pipeline's services in dependency order, wait for each, watch them, stop them all together.

    launcher = Launcher(pipeline, path, data_dir=..., emit=print_line)
    code = await launcher.run()        # until Ctrl-C / SIGTERM (0) or a service dies (1)

The restart policy is stated, not silent. A service that exits while `up` runs is reported by name
with its exit code and restarted, at most `max_restarts` times (3) within `restart_window` seconds
(300); meanwhile the megaservice answers 502/503 naming it. One exit more, and every other service
is stopped and `up` exits with 1. `max_restarts=0`: the first exit stops everything. A service
that dies before it was first ready is not restarted: `up` stops and says why.
"""

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from megaservice.client import UpstreamClient
from megaservice.components import COMPONENTS
from megaservice.exceptions import ConfigurationError, MegaserviceError
from megaservice.launcher.demo import demo_files, ingest_demo
from megaservice.launcher.observe import Receiver, missing_tracing, observed_env
from megaservice.launcher.ports import taken_ports
from megaservice.launcher.process import ServiceProcess
from megaservice.launcher.readiness import Check, http_ready, postgres_ready
from megaservice.launcher.scheduling import MODEL_SERVERS
from megaservice.pipeline.loader import demo_paths, find_pipeline, load_pipeline
from megaservice.pipeline.model import Pipeline
from megaservice.settings import environment

__all__ = ["MEGASERVICE", "LaunchError", "Launcher", "service_commands"]

MEGASERVICE = "megaservice"
"""The name `up` gives the pipeline's megaservice (the gateway) among its services."""


class LaunchError(MegaserviceError):
    """`megaservice up` cannot start the pipeline (a port taken, a service that never got ready, ...)."""


@dataclass(frozen=True, slots=True)
class Command:
    """How one service of a pipeline is started."""

    name: str
    argv: list[str]
    env: dict[str, str]
    host: str | None
    port: int | None
    ports: tuple[int, ...] = ()
    """Other ports it listens on (checked before anything starts, as `port` is)."""
    slice_us: int | None = None
    """The scheduler slice it asks for (`megaservice.launcher.scheduling`); `None`: it keeps the one `up` has."""


def service_commands(
    pipeline: Pipeline,
    path: Path,
    *,
    data_dir: Path | None = None,
    receiver: Receiver | None = None,
    slice_us: int | None = None,
) -> list[Command]:
    """The command of every service `up` starts, in start order, the megaservice last.

    With a `receiver` (`--observe`), the trace receiver comes first and every service exports to it.
    With `slice_us`, every service but the model servers (and the receiver) asks for that scheduler slice.
    """
    base = environment()
    base.setdefault("HF_HUB_OFFLINE", "1")
    base["PYTHONUNBUFFERED"] = "1"
    if data_dir is not None:
        base["MEGASERVICE_DATA_DIR"] = str(data_dir)
    python = sys.executable
    commands = []
    if receiver is not None:
        commands.append(
            Command(receiver.name, receiver.argv(), base, receiver.host, receiver.port, (receiver.ui_port,))
        )
        base = observed_env(base, receiver)
    for name in pipeline.start_order():
        spec = pipeline.services[name]
        assert spec.component is not None
        module = "megaservice.components.postgres" if spec.component == "postgres" else COMPONENTS[spec.component]
        argv = [python, "-m", module]
        if spec.port is not None:
            argv += ["--host", spec.host, "--port", str(spec.port)]
        if spec.backend is not None:
            argv += ["--backend", spec.backend]
        env = {**base, **spec.env}
        if receiver is not None:  # spans named as the pipeline names the service, unless its own env says
            env = observed_env(env, receiver, None if "OTEL_SERVICE_NAME" in spec.env else name)
        short = None if spec.component in MODEL_SERVERS else slice_us
        commands.append(Command(name, argv, env, spec.host, spec.port, slice_us=short))
    gateway = pipeline.megaservice
    argv = [python, "-m", "megaservice.cli", "gateway", str(path), "--host", gateway.host, "--port", str(gateway.port)]
    commands.append(Command(MEGASERVICE, argv, base, gateway.host, gateway.port, slice_us=slice_us))
    return commands


class Launcher:
    """Runs one pipeline's services (see the module docstring)."""

    def __init__(
        self,
        pipeline: Pipeline,
        path: Path,
        *,
        data_dir: Path,
        emit: Callable[[str, str], None],
        ready_timeout: float = 300.0,
        demo: bool = True,
        stop_grace: float = 10.0,
        max_restarts: int = 3,
        restart_window: float = 300.0,
        receiver: Receiver | None = None,
        slice_us: int | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.path = path
        self.data_dir = data_dir
        self.emit = emit
        self.ready_timeout = ready_timeout
        self.demo = demo
        self.stop_grace = stop_grace
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.receiver = receiver
        """The trace receiver started first (`--observe`), if any."""
        self.commands = service_commands(pipeline, path, data_dir=data_dir, receiver=receiver, slice_us=slice_us)
        self.processes: list[ServiceProcess] = []
        self._stop = asyncio.Event()
        self._client = UpstreamClient()

    def request_stop(self) -> None:
        """Stop every service and return from `run()` (what SIGINT and SIGTERM do)."""
        self._stop.set()

    def check_ports(self) -> None:
        """Raise `LaunchError` naming every port that is taken and the service that needs it."""
        wanted = [
            (c.name, "0.0.0.0" if c.host in (None, "") else c.host, port)
            for c in self.commands
            for port in (c.port, *c.ports)
            if port is not None
        ]
        taken = taken_ports(wanted)
        if taken:
            width = max(len(service) for service, _ in taken)
            lines = [
                "a port the pipeline needs is taken:"
                if len(taken) == 1
                else f"{len(taken)} ports the pipeline needs are taken:",
                *(f"  {service:<{width}}  port {port}" for service, port in taken),
                "Stop what uses it, or give the service another port in the pipeline file."
                if len(taken) == 1
                else "Stop what uses them, or give the services other ports in the pipeline file.",
            ]
            if self.receiver is not None and any(service == self.receiver.name for service, _ in taken):
                lines.append(
                    f"{self.receiver.name} is the trace receiver of --observe: if Jaeger or another OTLP receiver"
                    " already listens there, run with --no-observe and TELEMETRY_ENDPOINT set to it; or choose"
                    " other ports with --observe-port / --observe-ui-port (or the pipeline file's `observe:`)."
                )
            raise LaunchError("\n".join(lines))

    def check_tracing(self) -> None:
        """Raise `LaunchError` if `--observe` was asked for without the `tracing` extra."""
        missing = missing_tracing() if self.receiver is not None else None
        if missing is not None:
            raise LaunchError(f"--observe traces every service, but {missing}")

    async def run(self) -> int:
        """Start everything, then wait for a stop request (0) or a service's death (1)."""
        self.check_tracing()
        self.check_ports()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.request_stop)
        try:
            return await self._run()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            await self.stop_all()
            await self._client.aclose()

    async def _run(self) -> int:
        started = time.monotonic()
        for command in self.commands:
            process = self._process(command)
            self.processes.append(process)
            self.emit("up", f"starting {command.name}: {' '.join(command.argv[1:])}")
            await process.start()
            self.emit("up", f"{command.name} started (pid {process.pid})")
            outcome = await self._wait_ready(process, self._check(command))
            if outcome != "ready":
                return 0 if outcome == "stopped" else 1
            self.emit("up", f"{command.name} is ready ({time.monotonic() - started:.1f} s)")
        if self.demo and not await self._ingest_demo():
            return 1
        self._announce(time.monotonic() - started)
        return await self._watch()

    def _process(self, command: Command) -> ServiceProcess:
        return ServiceProcess(command.name, command.argv, command.env, self.emit, slice_us=command.slice_us)

    def _check(self, command: Command) -> Check:
        if command.port is not None:
            host = "127.0.0.1" if command.host in (None, "", "0.0.0.0", "::") else command.host
            return http_ready(self._client, command.name, f"http://{host}:{command.port}")
        return postgres_ready(self.data_dir)

    async def _wait_ready(self, process: ServiceProcess, check: Check) -> str:
        """`ready`, `stopped` (a stop request came) or `failed` (it died or never got ready; reported)."""
        exited = asyncio.ensure_future(process.wait())
        stop = asyncio.ensure_future(self._stop.wait())
        deadline = time.monotonic() + self.ready_timeout
        delay = 0.05
        try:
            while True:
                if await check():
                    return "ready"
                if time.monotonic() > deadline:
                    self.emit("up", f"{process.name} was not ready after {self.ready_timeout:g} s; stopping everything")
                    return "failed"
                done, _ = await asyncio.wait({exited, stop}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    return "stopped"
                if exited in done:
                    self.emit("up", f"{process.name} exited with code {exited.result()} before it was ready")
                    return "failed"
                delay = min(delay * 1.5, 0.5)
        finally:
            for task in (exited, stop):
                task.cancel()

    async def _ingest_demo(self) -> bool:
        dataprep = self.pipeline.megaservice.dataprep
        if not self.pipeline.demo or dataprep is None:
            return True
        try:
            files = demo_files(demo_paths(self.pipeline, self.path))
            url = self.pipeline.services[dataprep].base_url()
            count = await ingest_demo(url, files)
        except (OSError, RuntimeError, ValueError, ConfigurationError) as exc:  # a demo file removed since `up` checked
            self.emit("up", f"the demo corpus could not be ingested: {exc}")
            return False
        if count is None:
            self.emit("up", "the store already holds documents: the demo corpus is not ingested again")
        else:
            self.emit("up", f"ingested the demo corpus: {count} files")
        return True

    def _announce(self, seconds: float) -> None:
        gateway = self.pipeline.megaservice
        host = "127.0.0.1" if gateway.host in ("0.0.0.0", "::") else gateway.host
        base = f"http://{host}:{gateway.port}"
        lines = [
            f"{self.pipeline.name} is up in {seconds:.1f} s",
            f"  chat page   {base}/",
            f"  OpenAI API  {base}/v1/chat/completions   (OPEA: {base}/v1/chatqna)",
            f"  API docs    {base}/docs",
            '  ask         megaservice ask "What is in my documents?"',
        ]
        if gateway.dataprep is not None:
            dataprep = self.pipeline.services[gateway.dataprep].base_url()
            lines.append(f"  ingest      megaservice ingest PATH... --dataprep {dataprep}")
        if self.receiver is not None:
            lines.append(f"  traces      {self.receiver.viewer_url}   (spans in at {self.receiver.traces_url})")
        lines.append("  stop        Ctrl-C")
        for line in lines:
            self.emit("up", line)

    async def _watch(self) -> int:
        """Until a stop request (0), or a service that died more often than the restart policy allows (1)."""
        supervisors = [
            asyncio.ensure_future(self._supervise(index, command)) for index, command in enumerate(self.commands)
        ]
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait({*supervisors, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*supervisors, stop):
                task.cancel()
            await asyncio.gather(*supervisors, return_exceptions=True)
        if stop in done:
            return 0
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return 1

    async def _supervise(self, index: int, command: Command) -> None:
        """Watch one service; restart it under the policy; return when it may not be restarted again."""
        restarts: list[float] = []
        while True:
            process = self.processes[index]
            code = await process.wait()
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < self.restart_window]
            if len(restarts) >= self.max_restarts:
                self.emit(
                    "up",
                    f"{command.name} exited with code {code}, its {len(restarts) + 1}th exit within "
                    f"{self.restart_window:g} s (the policy allows {self.max_restarts} restarts); stopping everything",
                )
                return
            restarts.append(now)
            self.emit(
                "up",
                f"{command.name} exited with code {code}; restarting it "
                f"({len(restarts)} of {self.max_restarts} restarts within {self.restart_window:g} s)",
            )
            replacement = self._process(command)
            self.processes[index] = replacement
            await replacement.start()
            self.emit("up", f"{command.name} started again (pid {replacement.pid})")
            outcome = await self._wait_ready(replacement, self._check(command))
            if outcome == "ready":
                self.emit("up", f"{command.name} is ready again")
            elif outcome == "failed" and replacement.returncode is None:
                await replacement.stop(self.stop_grace)  # never got ready: counts as another exit

    async def stop_all(self) -> None:
        """Stop every started service, the last started first."""
        for process in reversed(self.processes):
            if process.returncode is None:
                self.emit("up", f"stopping {process.name}")
            with contextlib.suppress(ProcessLookupError):
                await process.stop(self.stop_grace)


def load_for_launch(name_or_path: str, *, demo: bool = True) -> tuple[Pipeline, Path]:
    """The pipeline and its file, for `megaservice up`; with `demo`, its demo corpus is checked to exist.

    Raises:
        ConfigurationError: no such pipeline; or its file is not valid (`PipelineFileError`, naming the line).
    """
    path = find_pipeline(name_or_path)
    pipeline = load_pipeline(path)
    if demo and pipeline.megaservice.dataprep is not None:
        demo_paths(pipeline, path)  # what `up` ingests once everything is ready: checked before anything starts
    return pipeline, path


def describe(commands: Sequence[Command]) -> str:
    """What `up --dry-run` prints: one line per service."""
    if not commands:
        raise ConfigurationError("the pipeline starts no service")
    return "\n".join(f"{c.name:<12} {' '.join(c.argv[1:])}" for c in commands)
