"""Personal data in text: e-mail addresses, phone numbers, payment cards, IBANs and IP addresses.

Each kind is a pattern that finds candidates, then a check that keeps only real ones:

    email   name@domain.tld
    phone   7 to 15 digits written as a phone number: international (`+44 20 7946 0958`), North
            American (`(555) 123-4567`, `555.123.4567`) or national with a trunk 0 (`030 1234567`,
            `06 12 34 56 78`); a bare run of digits is an order number, not a phone, and dates are not phones
    card    13 to 19 digits (spaces or dashes allowed) starting with 2-6 whose Luhn checksum is right
    iban    a country code, 2 check digits and 11-30 letters/digits whose ISO 13616 mod-97 check is 1
    ip      an IPv4 or IPv6 address (the standard library parses it)

Kinds are matched in that order of priority; a later kind never overlaps an earlier match (the
digits of a card are not also a phone). `mask()` replaces what was found.
"""

import ipaddress
import re
import secrets
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["KINDS", "PII_TYPES", "PIIMatch", "find_pii", "iban_valid", "luhn_valid", "mask"]

KINDS = ("email", "card", "iban", "ip", "phone")
"""The kinds of personal data found, in order of priority."""

PII_TYPES = {
    "email": "EMAIL_ADDRESS",
    "phone": "PHONE_NUMBER",
    "card": "CREDIT_CARD",
    "iban": "IBAN_CODE",
    "ip": "IP_ADDRESS",
}
"""Each kind's entity name in `detected_pii` (Presidio's names, which Prediction Guard's PII check reports)."""

ReplaceMethod = Literal["category", "mask", "random", "fake"]


@dataclass(frozen=True, slots=True)
class PIIMatch:
    """One piece of personal data: its kind and where it is (`text[start:end]`)."""

    kind: str
    start: int
    end: int

    def to_dict(self) -> dict[str, object]:
        """OPEA's `detected_pii` entry: `{"type", "start", "end"}`."""
        return {"type": PII_TYPES[self.kind], "start": self.start, "end": self.end}


def luhn_valid(digits: str) -> bool:
    """Whether the digit string passes the Luhn checksum (payment cards)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """Whether `iban` (spaces allowed) passes the ISO 13616 mod-97 check."""
    compact = iban.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_CARD = re.compile(r"(?<![\d-])[2-6]\d{3}(?:[ -]?\d){9,15}(?![\d-])")
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)(?![A-Za-z0-9])"
)
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?!\.?\d)")
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){1,6}"  # international: +44 20 7946 0958, +1 (555) 123-4567
    r"|(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}"  # North American: (555) 123-4567, 555.123.4567
    r"|0\d{1,4}(?:[ ./-]\d{2,8}){1,4}"  # national with a trunk 0: 030 1234567, 06 12 34 56 78, 020 7946 0958
    r")(?![\w])"
)
_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}")


def _card(candidate: str) -> bool:
    digits = re.sub(r"[ -]", "", candidate)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def _phone(candidate: str) -> bool:
    digits = sum(char.isdigit() for char in candidate)
    return 7 <= digits <= 15 and not _DATE.fullmatch(candidate)


_FINDERS: dict[str, tuple[tuple[re.Pattern[str], ...], Callable[[str], bool]]] = {
    "email": ((_EMAIL,), lambda _: True),
    "card": ((_CARD,), _card),
    "iban": ((_IBAN,), iban_valid),
    "ip": ((_IPV4, _IPV6), _ip),
    "phone": ((_PHONE,), _phone),
}


def find_pii(text: str, kinds: Iterable[str] = KINDS) -> list[PIIMatch]:
    """The personal data of the given kinds in `text`, in order of position, never overlapping."""
    wanted = set(kinds)
    found: list[PIIMatch] = []
    for kind in KINDS:
        if kind not in wanted:
            continue
        patterns, valid = _FINDERS[kind]
        for pattern in patterns:
            for match in pattern.finditer(text):
                start, end = match.span()
                if valid(match.group(0)) and not any(m.start < end and start < m.end for m in found):
                    found.append(PIIMatch(kind, start, end))
    return sorted(found, key=lambda m: m.start)


def _random_like(value: str) -> str:
    def swap(char: str) -> str:
        if char.isdigit():
            return secrets.choice(string.digits)
        if char.isalpha():
            return secrets.choice(string.ascii_lowercase if char.islower() else string.ascii_uppercase)
        return char

    return "".join(swap(char) for char in value)


def mask(text: str, matches: Sequence[PIIMatch], method: ReplaceMethod = "category") -> str:
    """`text` with each match replaced: `[EMAIL]` (category), `*****` (mask), or random look-alikes (random, fake)."""
    pieces: list[str] = []
    position = 0
    for match in sorted(matches, key=lambda m: m.start):
        pieces.append(text[position : match.start])
        value = text[match.start : match.end]
        if method == "category":
            pieces.append(f"[{match.kind.upper()}]")
        elif method == "mask":
            pieces.append("*" * len(value))
        else:
            pieces.append(_random_like(value))
        position = match.end
    pieces.append(text[position:])
    return "".join(pieces)
