"""`megaservice ingest PATH... [--url URL]`: files, folders and web pages into a running dataprep service.

    megaservice ingest docs/ handbook.pdf --url https://example.org/faq.html
    megaservice ingest notes/ --dataprep http://dataprep:5000 --chunk-size 800 --chunk-overlap 80

Folders are walked (hidden files and folders left out, links that lead out of the folder not
followed); files of a type dataprep does not read are skipped and listed. Each file is sent as its
own request, under its **source name** (`source_name`): its path from the current directory when
it is under it (`docs/a/README.md`, however the path was spelled), else its path from the parent of
the argument that named it (`/srv/docs` → `docs/a/README.md`), so that ingesting a file again
replaces it. A progress bar, then a summary: the files ingested under their names, chunks,
skipped, failed with the reason dataprep gave. Dataprep is asked whether it is ready first; if
nothing answers, that is one error naming its URL. The exit status is 1 if anything failed.
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

__all__ = ["DataprepNotReady", "Outcome", "Upload", "collect", "ingest", "run", "source_name"]

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


class DataprepNotReady(Exception):
    """Dataprep cannot be reached, or did not become ready in time: nothing was sent."""


def source_name(path: Path, given: Path) -> str:
    """The name dataprep stores `path` under: from the current directory if under it, else from `given`'s parent.

    `given` is the argument that named `path`: the file itself, or the folder it was found in.
    """
    place = Path(os.path.abspath(path))  # noqa: PTH100  # `..` normalized, links not followed
    here = Path.cwd()
    if place.is_relative_to(here):
        return place.relative_to(here).as_posix()
    real = path.parent.resolve() / path.name  # the same, when a link leads to the current directory
    if real.is_relative_to(here.resolve()):
        return real.relative_to(here.resolve()).as_posix()
    return place.relative_to(Path(os.path.abspath(given)).parent).as_posix()  # noqa: PTH100


def collect(paths: list[Path], outcome: Outcome) -> list[Upload]:
    """The files `paths` name (folders walked, sorted); unsupported ones to `outcome.skipped`, missing to `failed`."""
    uploads = []
    for path in paths:
        if path.is_file():
            if _supported(path.name):
                uploads.append(Upload(path, source_name(path, path)))
            else:
                outcome.skipped.append((str(path), "not a type dataprep reads"))
        elif path.is_dir():
            uploads.extend(_walk(path, outcome))
        else:
            outcome.failed.append((str(path), "no such file or folder"))
    return uploads


def _walk(folder: Path, outcome: Outcome) -> list[Upload]:
    """The files under `folder`; links that lead out of it are skipped, as are links to folders (not walked)."""
    top = folder.resolve()
    found = []
    for directory, folders, files in os.walk(folder):  # links to folders are listed in `folders`, not walked
        for name in sorted(folders):
            path = Path(directory) / name
            if name.startswith("."):
                outcome.skipped.append((str(path), "hidden folder"))
            elif path.is_symlink():
                outcome.skipped.append((str(path), _link_reason(path, top, folder)))
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            path = Path(directory) / name
            if name.startswith("."):
                outcome.skipped.append((str(path), "hidden file"))
            elif not _supported(name):
                outcome.skipped.append((str(path), "not a type dataprep reads"))
            elif path.is_symlink() and not path.resolve().is_relative_to(top):
                outcome.skipped.append((str(path), _link_reason(path, top, folder)))
            elif path.is_file():
                found.append(Upload(path, source_name(path, folder)))
            else:
                outcome.skipped.append((str(path), "a link to nothing"))
    return found


def _link_reason(path: Path, top: Path, folder: Path) -> str:
    target = path.resolve()
    if not target.is_relative_to(top):
        return f"a link out of {folder} (to {target}): not followed"
    return f"a link to a folder in {folder}: not followed (its files are ingested from {target})"


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


_HOW_TO_START = (
    "is it running? Start it with `megaservice up` (a pipeline with dataprep) or `megaservice serve dataprep`"
)


async def _wait_ready(client: "UpstreamClient", dataprep: str, wait: float, console: "Console | None") -> None:
    """Return once dataprep answers `/v1/ready` with 200; while it answers 503 (starting), wait up to `wait` s.

    Raises:
        DataprepNotReady: nothing answers at `dataprep` (found at once: a short timeout), it answers
            something else than 200 or 503, or it is still not ready after `wait` seconds.
    """
    from megaservice.client import Timeout
    from megaservice.exceptions import UpstreamConnectError, UpstreamError, UpstreamStatusError, UpstreamTimeout

    probe = Timeout(connect=2.0, read=5.0, total=5.0)
    deadline = time.monotonic() + wait
    waiting = False
    while True:
        try:
            await client.get("dataprep", f"{dataprep}/v1/ready", timeout=probe)
        except (UpstreamConnectError, UpstreamTimeout) as exc:
            raise DataprepNotReady(f"{exc}; {_HOW_TO_START}") from None  # it names the URL
        except UpstreamError as exc:
            if not isinstance(exc, UpstreamStatusError) or exc.upstream_status != 503:
                raise DataprepNotReady(
                    f"{dataprep}/v1/ready answered {_reason(exc)}; is --dataprep the URL of a dataprep service?"
                ) from None
            if time.monotonic() >= deadline:
                raise DataprepNotReady(
                    f"dataprep at {dataprep} is still not ready after {wait:g} s: {_reason(exc)}"
                ) from None
            if not waiting and console is not None:
                console.print(f"waiting up to {wait:g} s for dataprep at {dataprep} to be ready: {_reason(exc)}")
            waiting = True
            await asyncio.sleep(0.5)
        else:
            return


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
    """Send `uploads` and `urls` to `dataprep` one by one, with a progress bar on `console`; fill `outcome`.

    Raises:
        DataprepNotReady: dataprep is not there or not ready (`_wait_ready`); nothing was sent.
    """
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
        await _wait_ready(client, dataprep, wait, console)
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
    """The summary: what was ingested (under which names), skipped and failed (with reasons)."""
    from rich.markup import escape
    from rich.table import Table

    console.print(
        f"[bold]{len(outcome.ingested)}[/] ingested ({outcome.chunks} chunks), "
        f"[bold]{len(outcome.skipped)}[/] skipped, "
        f"[bold {'red' if outcome.failed else 'green'}]{len(outcome.failed)}[/] failed"
    )
    ingested = [(name, str(chunks)) for name, chunks in outcome.ingested]
    for title, rows, heads in (
        ("Ingested", ingested, ("stored as", "chunks")),
        ("Skipped", outcome.skipped, ("file or URL", "why")),
        ("Failed", outcome.failed, ("file or URL", "why")),
    ):
        if rows:
            table = Table(title=title, show_lines=False, title_justify="left")
            table.add_column(heads[0], overflow="fold")
            table.add_column(heads[1], overflow="fold", justify="right" if title == "Ingested" else "left")
            for name, why in rows:
                table.add_row(escape(name), escape(why))
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
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for a dataprep that answers but is still starting (503).")
    ] = 60.0,
) -> None:
    """Ingest files, folders and web pages into a running dataprep service (`megaservice serve dataprep`).

    A file is stored under its source name: its path from the current directory when it is under
    it (`docs/a.md`, whether given as `docs`, `docs/a.md` or `/abs/path/docs/a.md`), else its path
    from the parent of the argument that named it (`/srv/docs` gives `docs/a.md`, `/srv/docs/a.md`
    gives `a.md`). Ingesting a file again under the same name replaces it. The summary lists the
    names used.

    Folders are walked; hidden files and folders, and links that lead out of the folder, are
    skipped and listed. If nothing answers at --dataprep, that is one error at once (exit 1).
    """
    from rich.console import Console
    from rich.markup import escape

    if not paths and not url:
        raise typer.BadParameter("give files or folders to ingest, or --url", param_hint="PATH")
    console = Console(stderr=True)
    outcome = Outcome()
    uploads = collect(list(paths or []), outcome)
    try:
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
    except DataprepNotReady as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}; nothing was ingested", highlight=False)
        raise typer.Exit(1) from None
    report(outcome, console)
    if outcome.failed:
        raise typer.Exit(1)
