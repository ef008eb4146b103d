"""What dataprep reads: a file's bytes to its text, in sections that keep the page they come from.

    document = read_document("report.pdf", data)      # Document(format="pdf", sections=[Section(text, page=1), ...])
    format_of("notes.md")                             # "markdown"; None for a type dataprep does not read

Formats, by the file name's suffix (a fetched link also by its `Content-Type`):

    .txt .text                 text (UTF-8, UTF-16 with a BOM, else Windows-1252; NUL bytes: binary, refused)
    .md .markdown              markdown (as text; the chunker splits at headings first)
    .html .htm                 the visible text (no script, style, template); `<title>` kept as the title
    .pdf                       each page's text layer (pypdf), page numbers kept (no OCR)
    .docx                      paragraphs and tables in document order (python-docx)
    .csv                       one line per row: `column: value | column: value`
    .json .jsonl .ndjson       each record flattened to `key.path: value` lines

Every refusal is an `InputError` naming the file: an unsupported type (415), bytes that are not
what the name says (400), no text at all (400), a compressed document that unpacks too large
(413). Parsing is blocking: call it in a worker thread (`_shared.blocking.Worker`).
"""

import csv
import functools
import importlib.util
import io
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from megaservice.components._shared.deps import require
from megaservice.exceptions import InputError

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "Document",
    "Section",
    "check_dependencies",
    "format_of",
    "format_of_content_type",
    "read_document",
]

SUFFIXES: dict[str, str] = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
"""The file name suffixes dataprep reads, and the format of each."""

_CONTENT_TYPES = {
    "text/plain": "text",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/csv": "csv",
    "application/json": "json",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
}

MAX_UNPACKED_BYTES = 512 * 1024 * 1024
"""Most bytes a .docx (a zip) may unpack to: a small file that unpacks to gigabytes is refused (413)."""


@dataclass(slots=True)
class Section:
    """A stretch of a document's text, and the page it is on (1-based) when the format has pages."""

    text: str
    page: int | None = None


@dataclass(slots=True)
class Document:
    """A file's text, read."""

    format: str
    sections: list[Section]
    metadata: dict[str, Any] = field(default_factory=dict)
    """What the file says of itself (`title`), kept with every chunk."""

    @property
    def pages(self) -> int | None:
        """How many pages the document has (`None` for a format without pages)."""
        pages = [s.page for s in self.sections if s.page is not None]
        return max(pages) if pages else None

    @property
    def characters(self) -> int:
        """The length of its text."""
        return sum(len(s.text) for s in self.sections)


def check_dependencies() -> None:
    """Raise `MissingDependencyError` naming `pip install 'megaservice[dataprep]'` if a reader's library is missing."""
    for module, package in (("pypdf", None), ("docx", "python-docx"), ("bs4", "beautifulsoup4")):
        require(module, "dataprep", package)
    require("langchain_text_splitters", "dataprep", "langchain-text-splitters")


def format_of(name: str) -> str | None:
    """The format of file `name`, by its suffix (any case); `None` when dataprep does not read it."""
    dot = name.rfind(".")
    if dot < 0 or "/" in name[dot:]:
        return None
    return SUFFIXES.get(name[dot:].lower())


def format_of_content_type(content_type: str) -> str | None:
    """The format a `Content-Type` header names (`text/html; charset=utf-8` → `html`), if dataprep reads it."""
    return _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())


def read_document(name: str, data: bytes, kind: str | None = None) -> Document:
    """The text of file `name` (`kind`: its format when known otherwise, e.g. from a `Content-Type`).

    Raises:
        InputError: the type is not supported (415), the bytes cannot be read as that type, or hold no text.
    """
    kind = kind or format_of(name)
    if kind is None:
        supported = ", ".join(sorted(SUFFIXES))
        raise InputError(f"{name}: unsupported file type; dataprep reads {supported}", status_code=415)
    if not data.strip():
        raise InputError(f"{name}: the file is empty")
    document = FORMATS[kind](name, data)
    for section in document.sections:
        section.text = _clean(section.text)
    document.sections = [s for s in document.sections if s.text]
    if not document.sections:
        hint = " (a scanned PDF has no text layer; dataprep does no OCR)" if kind == "pdf" else ""
        raise InputError(f"{name}: no text found in the file{hint}")
    return document


_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")


def _clean(text: str) -> str:
    """Text fit to store: no NUL (PostgreSQL's text refuses it), unified newlines, no runs of blank lines."""
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    return _BLANK_LINES.sub("\n\n", text).strip()


def decode_text(name: str, data: bytes) -> str:
    """Bytes as text: UTF-8 (BOM or not), UTF-16 with its BOM, else Windows-1252; NUL bytes are refused as binary.

    A NUL byte is valid UTF-8 but no text file holds one (PostgreSQL's text cannot store it either):
    the file is binary, or in an encoding the name does not say (UTF-16 without a BOM).
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    if b"\x00" in data:
        raise InputError(f"{name}: binary data, not text (is the file name's suffix right?)")
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _text(name: str, data: bytes) -> Document:
    return Document("text", [Section(decode_text(name, data))])


def _markdown(name: str, data: bytes) -> Document:
    return Document("markdown", [Section(decode_text(name, data))])


_BLOCKS = [
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tr",
    "td",
    "th",
    "ul",
]
_INVISIBLE = ("script", "style", "noscript", "template", "svg", "head", "iframe", "object")


@functools.cache
def _html_parser() -> str:
    """Lxml's parser when lxml is there (python-docx brings it; 1.8x as fast here), else Python's own."""
    return "lxml" if importlib.util.find_spec("lxml") is not None else "html.parser"


def _html(name: str, data: bytes) -> Document:
    bs4 = require("bs4", "dataprep", "beautifulsoup4")
    soup = bs4.BeautifulSoup(data, _html_parser())
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup.find_all(_INVISIBLE):
        tag.decompose()
    for tag in soup.find_all(_BLOCKS):  # a line break around each block, none inside inline markup
        tag.insert_before("\n")
        tag.insert_after("\n")
    text = "\n".join(line.strip() for line in soup.get_text().splitlines())
    return Document("html", [Section(text)], {"title": title} if title else {})


def _pdf(name: str, data: bytes) -> Document:
    pypdf = require("pypdf", "dataprep")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        _check_not_locked(name, reader)
        sections = [
            Section(_SPACES.sub(" ", page.extract_text() or ""), number) for number, page in enumerate(reader.pages, 1)
        ]
        title = (reader.metadata or {}).get("/Title")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001  # pypdf raises many types on a broken file; each is bad input
        raise InputError(f"{name}: not a PDF pypdf can read ({type(exc).__name__}: {exc})") from None
    metadata = {"title": str(title)} if isinstance(title, str) and title.strip() else {}
    return Document("pdf", sections, metadata)


def _check_not_locked(name: str, reader: Any) -> None:
    """`InputError` if the PDF needs a password (one encrypted with an empty password is read)."""
    if reader.is_encrypted and not reader.decrypt(""):
        raise InputError(f"{name}: the PDF is encrypted with a password")


def _check_zip(name: str, data: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError) as exc:
        raise InputError(f"{name}: not a .docx file ({exc})") from None
    if unpacked > MAX_UNPACKED_BYTES:
        raise InputError(f"{name}: unpacks to {unpacked} bytes, more than {MAX_UNPACKED_BYTES}", status_code=413)


def _docx(name: str, data: bytes) -> Document:
    docx = require("docx", "dataprep", "python-docx")
    _check_zip(name, data)
    try:
        document = docx.Document(io.BytesIO(data))
        lines = list(_docx_lines(document))
        title = document.core_properties.title
    except Exception as exc:  # noqa: BLE001  # python-docx and lxml raise many types on a broken file
        raise InputError(f"{name}: not a .docx file python-docx can read ({type(exc).__name__}: {exc})") from None
    return Document("docx", [Section("\n\n".join(lines))], {"title": title} if title else {})


def _docx_lines(document: Any) -> Iterator[str]:
    """Paragraphs, and each table row as `cell | cell`, in the order they are in the document."""
    for block in document.iter_inner_content():
        if hasattr(block, "rows"):
            for row in block.rows:
                cells = [cell.text.strip() for cell in row.cells]
                if any(cells):
                    yield " | ".join(cells)
        elif block.text.strip():
            yield block.text


def _csv(name: str, data: bytes) -> Document:
    text = decode_text(name, data)
    header_line = text.lstrip().split("\n", 1)[0]
    delimiter = max(",;\t|", key=header_line.count)  # the header's most frequent one (`,` if none)
    try:
        rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise InputError(f"{name}: not a CSV file Python's csv module can read ({exc})") from None
    if not rows:
        return Document("csv", [])
    header, *records = rows
    if not records:  # a single row: nothing to name the values by
        return Document("csv", [Section(" | ".join(header))])
    lines = []
    for record in records:
        cells = [
            f"{key.strip() or f'column {i + 1}'}: {value.strip()}"
            for i, (key, value) in enumerate(zip(header, record, strict=False))
            if value.strip()
        ]
        cells.extend(value.strip() for value in record[len(header) :] if value.strip())
        lines.append(" | ".join(cells))
    return Document("csv", [Section("\n".join(lines))])


def _flatten(value: Any, path: str = "") -> Iterator[str]:
    """`key.path: value` lines of a JSON value (a list of scalars on one line); nulls and blank strings left out."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        if all(not isinstance(item, dict | list) for item in value):
            text = ", ".join(scalar for scalar in map(_scalar, value) if scalar)
            if text:
                yield f"{path}: {text}" if path else text
        else:
            for index, item in enumerate(value):
                yield from _flatten(item, f"{path}[{index}]")
    elif scalar := _scalar(value):
        yield f"{path}: {scalar}" if path else scalar


def _scalar(value: Any) -> str:
    """A JSON scalar as text (`true`, `false`, numbers, strings); "" for null or a blank string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = "" if value is None else str(value)
    return text if text.strip() else ""


def _records(value: Any) -> list[Any]:
    """A top-level list is a list of records (one block of text each); anything else is one record."""
    return value if isinstance(value, list) and any(isinstance(item, dict | list) for item in value) else [value]


def _json(name: str, data: bytes) -> Document:
    try:
        value = orjson.loads(decode_text(name, data))
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{name}: not valid JSON ({exc})") from None
    blocks = ["\n".join(_flatten(record)) for record in _records(value)]
    return Document("json", [Section("\n\n".join(block for block in blocks if block))])


def _jsonl(name: str, data: bytes) -> Document:
    blocks = []
    for number, line in enumerate(decode_text(name, data).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{name}: line {number} is not valid JSON ({exc})") from None
        blocks.append("\n".join(_flatten(record)))
    return Document("jsonl", [Section("\n\n".join(block for block in blocks if block))])


FORMATS: dict[str, Callable[[str, bytes], Document]] = {
    "text": _text,
    "markdown": _markdown,
    "html": _html,
    "pdf": _pdf,
    "docx": _docx,
    "csv": _csv,
    "json": _json,
    "jsonl": _jsonl,
}
"""The reader of each format: `(name, data) -> Document` (blocking)."""
