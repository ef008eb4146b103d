"""Reading megaservice's on/off environment switches."""

import os

__all__ = ["switched_off"]

_OFF = frozenset({"0", "false", "no", "off"})


def switched_off(name: str) -> bool:
    """Whether the environment variable `name` turns its feature off (`0`, `false`, `no`, `off`; on when unset)."""
    return os.environ.get(name, "").strip().lower() in _OFF
