"""From generated tokens' bytes to the text a client may see: whole characters, stop sequences cut out.

    out = TextOut(stops=["END"])
    for token in tokens:
        piece = out.feed(model.token_bytes(token))   # "" while a character or a possible stop is incomplete
        if out.stopped: ...                          # a stop sequence appeared: `piece` is the text before it
    rest = out.flush()                               # at the end: what was held back

A token may end in the middle of a UTF-8 character (held until the character is whole), and the
text may end with the first characters of a stop sequence (held until it is clear whether the stop
sequence follows). Nothing is released twice and nothing after a stop sequence is released.
"""

import codecs
from collections.abc import Sequence

__all__ = ["TextOut"]


class TextOut:
    """The text of one generation, released as soon as it cannot turn out to be part of a stop sequence."""

    __slots__ = ("_decoder", "_held", "_stops", "stopped")

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(stop for stop in stops if stop)
        self._held = ""
        self.stopped = False
        """Whether a stop sequence appeared (nothing is released after it)."""

    def feed(self, data: bytes) -> str:
        """The text that can be released once `data` (a token's bytes) is added; `""` when none can."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(data)
        if not self._stops:
            self._held = ""
            return text
        cut = -1
        for stop in self._stops:
            found = text.find(stop)
            if found >= 0 and (cut < 0 or found < cut):
                cut = found
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        hold = self._partial_stop(text)
        self._held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        """What is still held (the generation ended without a stop sequence); a broken character becomes U+FFFD."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _partial_stop(self, text: str) -> int:
        """Length of the longest end of `text` that begins a stop sequence (0: none)."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
