"""`text/event-stream`: encode events, and split or parse a byte stream into events as it arrives.

Network chunks and events are unrelated: one chunk may hold half an event or several. Everything
that reads an upstream stream goes through `EventSplitter` (raw event bytes, for forwarding) or
`EventParser` (decoded `Event`s), which only ever hand out complete events.
"""

from dataclasses import dataclass

__all__ = ["Event", "EventParser", "EventSplitter", "encode_event", "parse_event"]

_FIELD_PREFIXES = (b"data:", b"event:", b"id:", b"retry:", b":")


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event."""

    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None


def encode_event(data: str, *, event: str | None = None, id: str | None = None) -> bytes:
    """Encode one event; multi-line `data` becomes several `data:` lines, as the spec requires."""
    lines = []
    if event is not None:
        lines.append(f"event: {event}")
    if id is not None:
        lines.append(f"id: {id}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def parse_event(raw: bytes) -> Event | None:
    """Decode one complete raw event (as `EventSplitter` yields it); `None` if it has no data field."""
    data: list[str] = []
    event = id_ = None
    retry = None
    for line in raw.decode("utf-8", errors="replace").splitlines():
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            id_ = value
        elif name == "retry" and value.isdigit():
            retry = int(value)
    if not data and event is None:
        return None
    return Event("\n".join(data), event, id_, retry)


class EventSplitter:
    """Split a byte stream into complete raw events, each ending with its blank line.

    If the stream does not start like SSE (servers that send bare text as `text/event-stream`),
    the splitter switches to pass-through and returns each chunk as it came, so nothing is held back.
    """

    __slots__ = ("_buffer", "_crlf", "_raw", "_skip_lf")

    def __init__(self) -> None:
        self._buffer = b""
        self._raw: bool | None = None
        self._crlf = False
        self._skip_lf = False

    def feed(self, chunk: bytes, *, complete: bool = True) -> list[bytes]:
        """Add `chunk`; return the events it completed (possibly none).

        `complete=False` says the chunk is only part of a transport chunk (HTTP/1.1 chunked
        encoding); pass-through mode then waits for the rest, so a bare-text stream keeps the
        pieces its server sent.
        """
        if self._raw is None:
            head = (self._buffer + chunk).lstrip(b"\r\n")
            if not head:
                self._buffer += chunk
                return []
            if len(head) < 6 and any(p.startswith(head) for p in _FIELD_PREFIXES):
                self._buffer += chunk  # too short to tell yet
                return []
            self._raw = not head.startswith(_FIELD_PREFIXES)
        if self._raw:
            out = self._buffer + chunk
            if not complete:
                self._buffer = out
                return []
            self._buffer = b""
            return [out] if out else []
        if b"\r" in chunk:
            self._crlf = True
        buffer = self._buffer + chunk if self._buffer else chunk
        if self._crlf:
            return self._split_crlf(buffer)
        events = []
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            events.append(buffer[start : end + 2])
            start = end + 2
        self._buffer = buffer[start:]
        return events

    def _split_crlf(self, buffer: bytes) -> list[bytes]:
        if self._skip_lf and buffer.startswith(b"\n"):
            buffer = buffer[1:]  # the LF of a CRLF whose CR already ended an event
        self._skip_lf = False
        held = b""
        if buffer.endswith(b"\r"):
            if buffer.endswith((b"\r\r", b"\n\r")):
                self._skip_lf = True  # a blank line either way: the event is complete now
            else:  # a lone CR may be the first half of CRLF: wait for the next byte
                buffer, held = buffer[:-1], b"\r"
        normalised = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events = []
        start = 0
        while (end := normalised.find(b"\n\n", start)) >= 0:
            events.append(normalised[start : end + 2])
            start = end + 2
        self._buffer = normalised[start:] + held
        return events

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the end of an event."""
        return len(self._buffer)

    def flush(self) -> bytes:
        """Return what is left at the end of the stream (an event the server did not terminate)."""
        rest, self._buffer = self._buffer, b""
        return rest if rest.strip() else b""


class EventParser:
    """Incremental parser: feed bytes as they arrive, get back only complete `Event`s."""

    __slots__ = ("_splitter",)

    def __init__(self) -> None:
        self._splitter = EventSplitter()

    def feed(self, chunk: bytes) -> list[Event]:
        """Add `chunk`; return the events it completed."""
        return [e for raw in self._splitter.feed(chunk) if (e := parse_event(raw)) is not None]

    def flush(self) -> list[Event]:
        """Return the last event if the stream ended without its blank line."""
        rest = self._splitter.flush()
        event = parse_event(rest) if rest else None
        return [event] if event is not None else []
