"""The demo corpus: files a pipeline names under `demo:`, ingested through its dataprep on the first start."""

import logging
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import orjson

__all__ = ["demo_files", "ingest_demo"]

logger = logging.getLogger(__name__)

_SUFFIXES = frozenset({".txt", ".md", ".html", ".htm", ".pdf", ".docx", ".csv", ".json", ".jsonl"})


def demo_files(paths: Sequence[Path]) -> list[Path]:
    """The files of `paths` (files or folders: `megaservice.pipeline.demo_paths`), folders walked in name order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in _SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"demo corpus {str(path)!r} not found")
    return files


async def ingest_demo(dataprep_url: str, files: Sequence[Path]) -> int | None:
    """Ingest `files` unless the store already holds documents; the number of files ingested, `None` if skipped."""
    timeout = aiohttp.ClientTimeout(total=600, connect=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(f"{dataprep_url}/v1/dataprep/get", json={}) as answer:
            answer.raise_for_status()
            stored = orjson.loads(await answer.read())
        if stored:
            return None
        form = aiohttp.FormData()
        for path in files:
            form.add_field("files", path.read_bytes(), filename=path.name)
        async with session.post(f"{dataprep_url}/v1/dataprep/ingest", data=form) as answer:
            body = await answer.read()
            if answer.status >= 400:
                raise RuntimeError(f"dataprep refused the demo corpus ({answer.status}): {body[:500]!r}")
    return len(files)
