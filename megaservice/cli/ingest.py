"""`megaservice ingest PATH... [--url URL]`: files, folders and web pages into a running dataprep service.

    megaservice ingest docs/ handbook.pdf --url https://example.org/faq.html
    megaservice ingest notes/ --dataprep http://dataprep:5000 --chunk-size 800 --chunk-overlap 80

Folders are walked (hidden files and folders left out); files of a type dataprep does not read are
skipped and listed. Each file is sent as its own request (a file in a folder under its path from
the folder's parent: `docs/a/README.md`), with a progress bar, then a summary: files ingested,
chunks, skipped, failed with the reason dataprep gave. The exit status is 1 if any failed.
"""

import asyncio
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote

import orjson
import typer

if TYPE_CHECKING:
    from rich.console import Console

    from megaservice.client import UpstreamClient

__all__ = ["Outcome", "Upload", "collect", "ingest", "run"]

DEFAULT_DATAPREP = "http://127.0.0.1:5000"


@dataclass(frozen=True, slots=True)
class Upload:
    """A file to send: where it is, and the name dataprep stores it under."""

    path: Path
    name: str


@dataclass(slots=True)
class Outcome:
    """What an ingestion did."""

    ingested: list[tuple[str, int]] = field(default_factory=list)
    """(name, chunks) of each file or URL stored."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path, why) of each file not sent."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(name, reason) of each file or URL dataprep refused, or that could not be sent."""

    @property
    def chunks(self) -> int:
        """Chunks stored in all."""
        return sum(chunks for _, chunks in self.ingested)


def _supported(name: str) -> bool:
    from megaservice.components.dataprep.documents import format_of

    return format_of(name) is not None


def collect(paths: list[Path], outcome: Outcome) -> list[Upload]:
    """The files `paths` name (folders walked, sorted); unsupported ones to `outcome.skipped`, missing to `failed`."""
    uploads = []
    for path in paths:
        if path.is_file():
            if _supported(path.name):
                uploads.append(Upload(path, path.name))
            else:
                outcome.skipped.append((str(path), "not a type dataprep reads"))
        elif path.is_dir():
            uploads.extend(_walk(path, outcome))
        else:
            outcome.failed.append((str(path), "no such file or folder"))
    return uploads


def _walk(folder: Path, outcome: Outcome) -> list[Upload]:
    base = folder.resolve().name or "root"
    found = []
    for directory, folders, files in os.walk(folder):
        for hidden in sorted(name for name in folders if name.startswith(".")):
            outcome.skipped.append((str(Path(directory) / hidden), "hidden folder"))
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            path = Path(directory) / name
            if name.startswith("."):
                outcome.skipped.append((str(path), "hidden file"))
            elif not _supported(name):
                outcome.skipped.append((str(path), "not a type dataprep reads"))
            elif path.is_file():
                found.append(Upload(path, f"{base}/{path.relative_to(folder).as_posix()}"))
    return found


def _multipart(fields: dict[str, str], upload: tuple[str, bytes] | None) -> tuple[bytes, str]:
    """A multipart/form-data body of `fields` and one file `(name, data)` (as field `files`); its content type."""
    boundary = "megaservice-" + secrets.token_hex(12)
    parts = []
    for key, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode())
        parts.append(value.encode() + b"\r\n")
    if upload is not None:
        name, data = upload
        shown = name.replace("\\", "\\\\").replace('"', '\\"')
        disposition = f'form-data; name="files"; filename="{shown}"'
        if not name.isascii():  # RFC 7578: UTF-8 in filename* for servers that read it
            disposition += f"; filename*=UTF-8''{quote(name, safe='')}"
        header = f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n"
        parts.extend((header.encode(), data, b"\r\n"))
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _reason(exc: Exception) -> str:
    """What dataprep said was wrong (its `detail`), or what went wrong on the way."""
    from megaservice.exceptions import UpstreamStatusError

    if isinstance(exc, UpstreamStatusError):
        try:
            answer = orjson.loads(exc.body)
        except orjson.JSONDecodeError:
            return f"HTTP {exc.upstream_status}: {exc.body[:300]}"
        detail = answer.get("detail") or answer.get("message") if isinstance(answer, dict) else None
        return f"HTTP {exc.upstream_status}: {detail if detail else exc.body[:300]}"
    return str(exc)


async def _wait_ready(client: "UpstreamClient", dataprep: str, wait: float) -> str | None:
    """`None` once dataprep answers `/v1/ready` with 200 (within `wait` seconds); else why not."""
    from megaservice.client import Timeout
    from megaservice.exceptions import UpstreamError

    deadline = time.monotonic() + wait
    while True:
        try:
            await client.get("dataprep", f"{dataprep}/v1/ready", timeout=Timeout(connect=5.0, read=10.0, total=10.0))
        except UpstreamError as exc:
            reason = _reason(exc)
            if time.monotonic() >= deadline:
                return reason
            await asyncio.sleep(0.5)
        else:
            return None


async def run(
    uploads: list[Upload],
    urls: list[str],
    outcome: Outcome,
    *,
    dataprep: str = DEFAULT_DATAPREP,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    timeout: float = 3600.0,
    wait: float = 60.0,
    console: "Console | None" = None,
) -> Outcome:
    """Send `uploads` and `urls` to `dataprep` one by one, with a progress bar on `console`; fill `outcome`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from megaservice.client import Timeout, UpstreamClient
    from megaservice.exceptions import UpstreamError

    dataprep = dataprep.rstrip("/")
    fields = {}
    if chunk_size is not None:
        fields["chunk_size"] = str(chunk_size)
    if chunk_overlap is not None:
        fields["chunk_overlap"] = str(chunk_overlap)
    client = UpstreamClient()
    calls = Timeout(connect=10.0, read=timeout, total=timeout)
    try:
        not_ready = await _wait_ready(client, dataprep, wait)
        if not_ready is not None:
            reason = f"dataprep at {dataprep} is not ready: {not_ready}"
            outcome.failed.extend((item.name, reason) for item in uploads)
            outcome.failed.extend((url, reason) for url in urls)
            return outcome
        items: list[Upload | str] = [*uploads, *urls]
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("ingesting", total=len(items))
            for item in items:
                name = item.name if isinstance(item, Upload) else item
                progress.update(task, description=f"[bold]{name}[/]")
                try:
                    if isinstance(item, Upload):
                        data = await asyncio.to_thread(item.path.read_bytes)
                        body, content_type = _multipart(fields, (item.name, data))
                    else:
                        body, content_type = _multipart({**fields, "link_list": orjson.dumps([item]).decode()}, None)
                    _, answer = await client.post(
                        "dataprep",
                        f"{dataprep}/v1/dataprep/ingest",
                        body,
                        headers={"content-type": content_type},
                        timeout=calls,
                    )
                    outcome.ingested.append((name, int(orjson.loads(answer).get("chunks", 0))))
                except (UpstreamError, OSError, ValueError) as exc:
                    outcome.failed.append((name, _reason(exc)))
                progress.advance(task)
            progress.update(task, description="done")
    finally:
        await client.aclose()
    return outcome


def report(outcome: Outcome, console: "Console") -> None:
    """The summary: what was ingested, skipped and failed (with reasons)."""
    from rich.table import Table

    console.print(
        f"[bold]{len(outcome.ingested)}[/] ingested ({outcome.chunks} chunks), "
        f"[bold]{len(outcome.skipped)}[/] skipped, "
        f"[bold {'red' if outcome.failed else 'green'}]{len(outcome.failed)}[/] failed"
    )
    for title, rows in (("Skipped", outcome.skipped), ("Failed", outcome.failed)):
        if rows:
            table = Table(title=title, show_lines=False, title_justify="left")
            table.add_column("file or URL", overflow="fold")
            table.add_column("why", overflow="fold")
            for name, why in rows:
                table.add_row(name, why)
            console.print(table)


def ingest(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Files and folders to ingest (folders are walked).", show_default=False, metavar="PATH..."),
    ] = None,
    url: Annotated[
        list[str] | None, typer.Option("--url", help="A web page or document to ingest (repeat for more).")
    ] = None,
    dataprep: Annotated[str, typer.Option(help="The dataprep service's base URL.")] = DEFAULT_DATAPREP,
    chunk_size: Annotated[int | None, typer.Option(help="Characters per chunk (default: dataprep's).")] = None,
    chunk_overlap: Annotated[int | None, typer.Option(help="Characters neighbouring chunks share.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds one file may take to be ingested.")] = 3600.0,
    wait: Annotated[float, typer.Option(help="Seconds to wait for dataprep to be ready.")] = 60.0,
) -> None:
    """Ingest files, folders and web pages into a running dataprep service (`megaservice serve dataprep`)."""
    from rich.console import Console

    if not paths and not url:
        raise typer.BadParameter("give files or folders to ingest, or --url", param_hint="PATH")
    console = Console(stderr=True)
    outcome = Outcome()
    uploads = collect(list(paths or []), outcome)
    asyncio.run(
        run(
            uploads,
            list(url or []),
            outcome,
            dataprep=dataprep,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            timeout=timeout,
            wait=wait,
            console=console,
        )
    )
    report(outcome, console)
    if outcome.failed:
        raise typer.Exit(1)
