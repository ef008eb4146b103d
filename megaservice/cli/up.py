"""`megaservice up`, `megaservice ask`, `megaservice pipelines`: run a whole pipeline, ask it, list the shipped ones."""

import asyncio
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["ask", "pipelines", "up"]

_COLORS = ("cyan", "green", "magenta", "yellow", "blue", "bright_cyan", "bright_green", "bright_magenta", "red")


class _Prefixer:
    """Each service's log lines prefixed with its name, in a color of its own.

    The prefix is rendered by rich once per name; each line is then written as it came (without the
    control characters rich's `Text` drops). rich's `Console.print` costs 55-75 µs a line, and under
    load `up` relays an access line per service per request, on the CPUs the services need.
    """

    def __init__(self, console: Console, names: list[str]) -> None:
        self.console = console
        self.width = max(len(n) for n in [*names, "up"])
        self.colors = dict(zip(names, itertools.cycle(_COLORS), strict=False))
        self.colors["up"] = "bold white"
        self._prefixes: dict[str, str] = {}

    def prefix(self, name: str) -> str:
        """`name`'s prefix as the console writes it (with its color's escape codes on a terminal)."""
        prefix = self._prefixes.get(name)
        if prefix is None:
            with self.console.capture() as captured:
                text = Text(f"{name:<{self.width}} | ", style=self.colors.get(name, "white"))
                self.console.print(text, end="", soft_wrap=True, highlight=False)
            prefix = self._prefixes[name] = captured.get()
        return prefix

    def __call__(self, name: str, line: str) -> None:
        file = self.console.file
        file.write(f"{self.prefix(name)}{line.translate(_CONTROL)}\n")
        file.flush()


_CONTROL = dict.fromkeys((0x07, 0x08, 0x0B, 0x0C, 0x0D))
"""Bell, backspace, vertical tab, form feed and carriage return: dropped from a relayed line, as rich does."""


def up(
    pipeline: Annotated[
        str, typer.Argument(help="A shipped pipeline (`megaservice pipelines`) or a pipeline file.")
    ] = ("chatqna"),
    data_dir: Annotated[
        Path | None, typer.Option(help="Where stored data lives (default: $MEGASERVICE_DATA_DIR).")
    ] = None,
    demo: Annotated[bool, typer.Option(help="Ingest the pipeline's demo corpus on the first start.")] = True,
    ready_timeout: Annotated[float, typer.Option(help="Seconds each service may take to get ready.")] = 300.0,
    restarts: Annotated[
        int, typer.Option(help="Restarts allowed per service within 5 minutes before up stops everything (0: none).")
    ] = 3,
    dry_run: Annotated[bool, typer.Option(help="Print the command of each service and exit.")] = False,
    observe: Annotated[
        bool | None,
        typer.Option(
            "--observe/--no-observe",
            help="Start a local trace receiver and viewer first and trace every service "
            "(default: the pipeline file's `observe`).",
            show_default=False,
        ),
    ] = None,
    observe_port: Annotated[
        int | None, typer.Option(help="Where --observe receives spans (OTLP/HTTP; default 4318).", show_default=False)
    ] = None,
    observe_ui_port: Annotated[
        int | None, typer.Option(help="Where --observe serves the trace viewer (default 16686).", show_default=False)
    ] = None,
) -> None:
    """Run every service of a pipeline, each as its own process, until Ctrl-C."""
    from megaservice.exceptions import ConfigurationError
    from megaservice.launcher import Launcher, LaunchError
    from megaservice.launcher.observe import receiver_for
    from megaservice.launcher.scheduling import SchedulingSettings
    from megaservice.launcher.supervisor import describe, load_for_launch
    from megaservice.settings import StorageSettings

    console = Console(highlight=False)
    try:
        loaded, path = load_for_launch(pipeline, demo=demo)
        folder = data_dir if data_dir is not None else StorageSettings.from_env().data_dir
        scheduling = SchedulingSettings.from_env()
        observed = (
            observe if observe is not None else loaded.observe is not None or bool(observe_port or observe_ui_port)
        )
        receiver = receiver_for(loaded, port=observe_port, ui_port=observe_ui_port) if observed else None
    except ConfigurationError as exc:
        console.print(Text(f"error: {exc}", style="red"))
        raise typer.Exit(2) from None
    names = [*([receiver.name] if receiver else []), *loaded.start_order(), "megaservice"]
    launcher = Launcher(
        loaded,
        path,
        data_dir=folder,
        emit=_Prefixer(console, names),
        ready_timeout=ready_timeout,
        demo=demo,
        max_restarts=restarts,
        receiver=receiver,
        slice_us=scheduling.slice_us,
    )
    if dry_run:
        console.print(describe(launcher.commands), soft_wrap=True)
        return
    try:
        code = asyncio.run(launcher.run())
    except LaunchError as exc:
        console.print(Text(f"error: {exc}", style="red"))
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    url: Annotated[str, typer.Option(help="The megaservice.")] = "http://127.0.0.1:8888",
    max_tokens: Annotated[int, typer.Option(help="Most tokens in the answer.")] = 256,
    api_key: Annotated[str | None, typer.Option(help="The megaservice's API key, if it has one.")] = None,
) -> None:
    """Ask a running pipeline a question; the answer streams in, then its sources.

    Exits 1 on an error (the megaservice unreachable, a failing node), 3 when a guardrail refused the question.
    """
    console = Console(highlight=False)
    try:
        answer = asyncio.run(_ask(console, url.rstrip("/"), question, max_tokens, api_key))
    except _AskError as exc:
        console.print(Text(f"\nerror: {exc}", style="red"))
        raise typer.Exit(1) from None
    if answer.refused_by is not None:
        console.print(Text(f"refused by the guardrail: {answer.refused_by}", style="yellow"))
        raise typer.Exit(_REFUSED)
    if answer.sources:
        console.print(Text("\nsources:", style="bold"))
        for number, source in enumerate(answer.sources, 1):
            console.print(Text(f"  [{number}] {_source_line(source)}", style="dim"))


_REFUSED = 3
"""`ask`'s exit code when a guardrail refused the question (1 is an error, 2 a wrong command line)."""


@dataclass
class _Answer:
    sources: list[Any] = field(default_factory=list)
    refused_by: str | None = None
    """The pipeline's name of the guardrail that refused the question (the gateway's `refused_by`)."""


class _AskError(Exception):
    pass


def _source_line(source: Any) -> str:
    if not isinstance(source, dict):
        return str(source)
    name = source.get("source") or source.get("name") or source.get("file") or "?"
    chunk = source.get("chunk", source.get("chunk_index"))
    page = source.get("page")
    parts = [str(name)]
    if page is not None:
        parts.append(f"page {page}")
    if chunk is not None:
        parts.append(f"chunk {chunk}")
    return ", ".join(parts)


async def _ask(console: Console, url: str, question: str, max_tokens: int, api_key: str | None) -> _Answer:
    import aiohttp
    import orjson

    from megaservice.sse import EventSplitter, parse_event

    body = {"messages": [{"role": "user", "content": question}], "stream": True, "max_tokens": max_tokens}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    result = _Answer()
    timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=120)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as answer,
        ):
            if answer.status >= 400:
                raise _AskError(f"{answer.status}: {(await answer.text())[:500]}")
            splitter = EventSplitter()
            async for chunk in answer.content.iter_any():
                for raw in splitter.feed(chunk):
                    event = parse_event(raw)
                    if event is None or event.data == "[DONE]":
                        continue
                    data = orjson.loads(event.data)
                    if event.event == "error" or "error" in data:
                        raise _AskError(str(data.get("error", data)))
                    for choice in data.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            console.out(text, end="", highlight=False)
                    result.sources.extend(data.get("sources") or ())
                    if data.get("refused_by"):
                        result.refused_by = str(data["refused_by"])
    except aiohttp.ClientError as exc:
        raise _AskError(f"cannot reach the megaservice at {url}: {exc} (is `megaservice up` running?)") from None
    console.out("")
    return result


def pipelines() -> None:
    """List the pipelines that ship with megaservice."""
    from megaservice.pipeline.loader import load_pipeline, shipped_pipelines

    console = Console(highlight=False)
    shipped = sorted(shipped_pipelines().items())
    width = max((len(name) for name, _ in shipped), default=0)
    for name, path in shipped:
        try:
            description = load_pipeline(path).description
        except Exception as exc:  # noqa: BLE001  # a listing shows a broken file instead of failing
            description = f"(invalid: {exc})"
        row = Table.grid(padding=(0, 2))
        row.add_column(min_width=width, style="bold")
        row.add_column()
        row.add_row(name, description)
        console.print(row)
        # on a line of its own, never wrapped or cut by rich: the path is what users copy
        console.print(Text(f"{'':{width + 2}}file: {path}"), soft_wrap=True)
