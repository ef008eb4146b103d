"""The `banned` check: substrings (any case) and regular expressions a text must not contain.

All substrings are one compiled alternation, so a text is scanned once however many there are;
each regex is searched in turn. The first hit is reported with what matched.
"""

import re
from collections.abc import Sequence

from megaservice.components.guardrails.checks import Violation

__all__ = ["Banned"]


class Banned:
    """Refuses texts containing one of `substrings` (case-insensitive) or matching one of `regexes`."""

    name = "banned"

    def __init__(self, substrings: Sequence[str] = (), regexes: Sequence[str] = ()) -> None:
        words = sorted({s for s in substrings if s}, key=len, reverse=True)
        self._substrings = re.compile("|".join(map(re.escape, words)), re.IGNORECASE) if words else None
        self._regexes = [re.compile(pattern) for pattern in regexes]

    @property
    def empty(self) -> bool:
        """Whether nothing is banned."""
        return self._substrings is None and not self._regexes

    def scan(self, text: str) -> Violation | None:
        """A violation naming the banned substring or regex `text` contains, or `None`."""
        if self._substrings is not None:
            found = self._substrings.search(text)
            if found is not None:
                return Violation(self.name, found.group(0).lower())
        for regex in self._regexes:
            if regex.search(text) is not None:
                return Violation(self.name, f"/{regex.pattern}/")
        return None
