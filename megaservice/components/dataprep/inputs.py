r"""The fields of dataprep's requests, read and checked: each refusal an `InputError` saying what is wrong.

    source_name("guides/intro.md")          "guides/intro.md"; "../x", "/etc/passwd", "C:\\x" refused
    sent_filename(upload)                   an upload's file name as the client sent it (`C:\\x.txt` too)
    read_link_list('["https://a.org/x"]')   ["https://a.org/x"]; anything but a JSON list of http(s) URLs refused
    read_chunk_params(form)                 ChunkParams from `chunk_size` and `chunk_overlap` (OPEA's defaults)

A source name is the label a file's chunks are stored, listed and deleted by. Nothing is written
to disk under it, but it must still look like a relative file name: no `..` part, not absolute, no
control characters, at most 255 bytes. Folder parts are kept (`megaservice ingest docs/` sends
`docs/a/README.md` and `docs/b/README.md`, two files, not one replacing the other).
"""

import contextlib
import re
import unicodedata
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.datastructures import UploadFile

from megaservice.components._store.settings import collection_name
from megaservice.components.dataprep.chunking import ChunkParams
from megaservice.exceptions import InputError

__all__ = ["MAX_LINKS", "read_chunk_params", "read_index_name", "read_link_list", "sent_filename", "source_name"]

MAX_LINKS = 100
"""Most URLs in one `link_list`."""
_DRIVE = re.compile(r"^[A-Za-z]:")
_FILENAME = re.compile(r';\s*filename\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', re.IGNORECASE)
"""The `filename` parameter of a Content-Disposition header (not `filename*`, which multipart/form-data forbids)."""


def sent_filename(upload: UploadFile) -> str | None:
    r"""The upload's file name as the client sent it.

    Starlette's multipart parser (python-multipart) cuts a name that starts with a drive and a
    backslash (`C:\x.txt`) or with two backslashes to its last part (a workaround for IE6, which sent
    the whole path). Such a name is absolute: it is read again from the part's Content-Disposition,
    unquoted the same way, so that `source_name` refuses it as it refuses `C:/x.txt`.
    """
    name = upload.filename
    header = upload.headers.get("content-disposition")
    match = _FILENAME.search(header) if name is not None and header is not None else None
    if match is None:
        return name
    sent = match.group(1).strip()
    if len(sent) >= 2 and sent[0] == sent[-1] == '"':
        sent = sent[1:-1].replace("\\\\", "\\").replace('\\"', '"')  # python-multipart's unquoting
    with contextlib.suppress(UnicodeDecodeError):  # starlette's decoding of the name: UTF-8, else latin-1 as read
        sent = sent.encode("latin-1").decode()
    shortened = sent[1:3] == ":\\" or sent[:2] == "\\\\"
    return sent if shortened and sent.split("\\")[-1] == name else name


def source_name(filename: str | None) -> str:
    """`filename` as a source name (module docstring); `InputError` if it is empty, absolute or climbs out."""
    if not filename or not filename.strip():
        raise InputError("an uploaded file has no file name")
    name = unicodedata.normalize("NFC", filename.strip()).replace("\\", "/")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise InputError(f"file name {filename!r} has control characters")
    if name.startswith("/") or _DRIVE.match(name):
        raise InputError(f"file name {filename!r} is an absolute path; send a relative name")
    parts = name.split("/")
    if any(part in {"..", "."} for part in parts):
        raise InputError(f"file name {filename!r} has a '.' or '..' part; send a plain relative name")
    name = "/".join(part for part in parts if part)
    if not name:
        raise InputError(f"invalid file name {filename!r}")
    if len(name.encode()) > 255:
        raise InputError(f"file name {filename!r} is too long ({len(name.encode())} bytes, at most 255)")
    return name


def read_link_list(value: Any) -> list[str]:
    """OPEA's `link_list` form field (a JSON list of http(s) URLs, as a string) as a list of URLs.

    Only the URLs' form is checked here; where they point is checked when they are fetched.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if not isinstance(value, str):
        raise InputError("`link_list` must be a form field holding a JSON list of URLs, not a file")
    try:
        links = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise InputError(f'`link_list` must be a JSON list of URLs (["https://..."]), not {value[:100]!r}') from None
    if not isinstance(links, list):
        raise InputError(f"`link_list` must be a JSON list of URLs, not a JSON {type(links).__name__}")
    if len(links) > MAX_LINKS:
        raise InputError(f"`link_list` has {len(links)} URLs; at most {MAX_LINKS} per request", status_code=413)
    for index, link in enumerate(links):
        if not isinstance(link, str):
            raise InputError(f"`link_list[{index}]` must be a URL string, not {type(link).__name__}")
        parts = urlsplit(link.strip())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise InputError(f"`link_list[{index}]` is not an http(s) URL: {link[:200]!r}")
    return list(dict.fromkeys(link.strip() for link in links))


def read_index_name(value: Any, *, writing: bool) -> str | None:
    """OPEA's `index_name`: a collection other than the service's, or `None` (absent, blank; `"all"` when reading)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"`index_name` must be a collection name, not {type(value).__name__}")
    name = value.strip()
    if name == "all":
        if writing:
            raise InputError("`index_name` 'all' names no collection to write to; leave it out, or name one")
        return None
    if not name:
        return None
    try:
        return collection_name(name)
    except ValueError as exc:
        raise InputError(f"`index_name` {name[:120]!r} is not a collection name: {exc}") from None


def _integer(form: Mapping[str, Any], name: str, default: int) -> int:
    value = form.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if not isinstance(value, str):
        raise InputError(f"`{name}` must be a form field holding an integer, not a file")
    try:
        return int(value.strip())
    except ValueError:
        raise InputError(f"`{name}` must be an integer, not {value[:50]!r}") from None


def read_chunk_params(form: Mapping[str, Any], defaults: ChunkParams) -> ChunkParams:
    """`chunk_size` and `chunk_overlap` of a form (unset ones: `defaults`), checked."""
    return ChunkParams(
        _integer(form, "chunk_size", defaults.chunk_size), _integer(form, "chunk_overlap", defaults.chunk_overlap)
    )
