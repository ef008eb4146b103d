"""Documents made on the spot, for tests and benchmarks of dataprep: PDF pages of text, .docx files, prose.

make_pdf(["page one text", "page two text"])      a PDF whose pages hold those lines (Helvetica, no deps)
make_docx(["a paragraph", ("cell", "cell")])      a .docx (python-docx): paragraphs, and tuples as table rows
prose(2000, seed=1)                               ~2000 characters of sentences in paragraphs
"""

import io
import random
from collections.abc import Sequence

from megaservice.components._shared.deps import require

__all__ = ["make_docx", "make_pdf", "prose"]

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "that",
    "this",
    "it",
    "be",
    "are",
    "was",
    "an",
    "or",
    "which",
    "model",
    "data",
    "index",
    "query",
    "vector",
    "database",
    "chunk",
    "document",
    "service",
    "retrieval",
    "embedding",
    "page",
    "answer",
    "question",
    "system",
    "search",
    "result",
    "text",
    "pipeline",
    "cluster",
    "latency",
    "memory",
    "request",
    "network",
    "storage",
    "table",
    "column",
    "value",
    "report",
    "section",
    "figure",
    "method",
]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: Sequence[str], *, title: str | None = None) -> bytes:
    """A PDF with one page per item of `pages`, each line of the item a line of text (Latin-1 characters)."""
    count = len(pages)
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{' '.join(f'{4 + 2 * i} 0 R' for i in range(count))}] /Count {count} >>".encode(),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    for index, text in enumerate(pages):
        lines = " ".join(f"({_escape(line)}) Tj T*" for line in text.split("\n"))
        stream = f"BT /F1 10 Tf 40 760 Td 12 TL {lines} ET".encode("latin-1")
        objects[4 + 2 * index] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * index} 0 R >>"
        ).encode()
        objects[5 + 2 * index] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
    info = None
    if title is not None:
        info = 4 + 2 * count
        objects[info] = f"<< /Title ({_escape(title)}) >>".encode("latin-1")
    out = bytearray(b"%PDF-1.4\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        out += b"%010d 00000 n \n" % offsets[number]
    trailer = f"<< /Size {size} /Root 1 0 R{f' /Info {info} 0 R' if info else ''} >>"
    out += f"trailer\n{trailer}\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def make_docx(blocks: Sequence[str | tuple[str, ...]], *, title: str | None = None) -> bytes:
    """A .docx of paragraphs (strings; `# text` a heading) and table rows (tuples: consecutive ones one table)."""
    docx = require("docx", "dataprep", "python-docx")
    document = docx.Document()
    if title is not None:
        document.core_properties.title = title
    table = None
    for block in blocks:
        if isinstance(block, tuple):
            if table is None:
                table = document.add_table(rows=0, cols=len(block))
            cells = table.add_row().cells
            for cell, text in zip(cells, block, strict=False):
                cell.text = text
            continue
        table = None
        if block.startswith("# "):
            document.add_heading(block[2:], level=1)
        else:
            document.add_paragraph(block)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def prose(characters: int, *, seed: int = 0, paragraph: int = 600) -> str:
    """About `characters` of sentences of common words, in paragraphs of about `paragraph` characters."""
    rng = random.Random(seed)
    paragraphs: list[str] = []
    total = 0
    while total < characters:
        sentences = []
        length = 0
        while length < paragraph:
            words = rng.choices(_WORDS, k=rng.randint(6, 16))
            sentence = " ".join(words).capitalize() + "."
            sentences.append(sentence)
            length += len(sentence) + 1
        text = " ".join(sentences)
        paragraphs.append(text)
        total += len(text) + 2
    return "\n\n".join(paragraphs)
