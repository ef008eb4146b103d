"""docs/configuration.md from the settings classes: every variable, its default and what it does.

    describe(Timeout)                                   the variables one settings class reads
    markdown_table(settings_classes())                  the table of every class imported so far

`scripts/configuration_table.py` writes the table; a test checks docs/configuration.md matches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from megaservice.settings import NODE_PREFIX, EnvSettings, Variable, _fields, _registry

__all__ = ["Documented", "describe", "markdown_table", "settings_classes"]


@dataclass(frozen=True, slots=True)
class Documented:
    """One row of docs/configuration.md."""

    name: str
    default: str
    help: str


def describe(cls: type[EnvSettings], prefix: str | None = None) -> list[Documented]:
    """The variables `cls` reads (under `prefix`, default its own), with their defaults as the docs show them."""
    rows = []
    defaults = cls()
    for item, meta in _fields(cls):
        shown = meta.shown_default
        if shown is None:
            shown = _show(getattr(defaults, item.name), meta)
        name = (prefix if prefix is not None else cls.env_prefix) + meta.name
        rows.append(Documented(name, shown, meta.help))
        rows.extend(Documented(alias, shown, f"Same as `{name}`.") for alias in meta.aliases)
    return rows


def _show(value: Any, meta: Variable) -> str:
    if value is None:
        return "0 (off)" if meta.zero_off else "unset"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple | frozenset):
        return ",".join(sorted(value)) if value else "unset"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def settings_classes(package: str = "megaservice.") -> list[type[EnvSettings]]:
    """The settings classes of modules under `package` imported so far, in definition order."""
    found: dict[str, type[EnvSettings]] = {}
    for cls in _registry:  # `dataclass(slots=True)` makes a second class: the last one is the real one
        if cls.__module__.startswith(package):
            found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return list(found.values())


def markdown_table(classes: list[type[EnvSettings]]) -> str:
    """docs/configuration.md's table of `classes`' variables (per-node variants included), sorted by name.

    A variable several components read names them all (sorted, so the table does not depend on
    import order); where their defaults or descriptions differ, each component's is shown.
    """
    readers: dict[str, dict[str, Documented]] = {}
    for cls in classes:
        component = _component(cls)
        for row in describe(cls):
            readers.setdefault(row.name, {})[component] = row
        if cls.per_node:
            for row in describe(cls, NODE_PREFIX):
                per_node = Documented(row.name, "the variable without `NODE_<NAME>_`", row.help)
                readers.setdefault(row.name, {})[component] = per_node
    lines = ["| variable | default | what it does |", "|---|---|---|"]
    for name in sorted(readers):
        default, text = _shared_row(readers[name])
        lines.append(f"| `{name}` | {default} | {text} |")
    return "\n".join(lines) + "\n"


def _component(cls: type[EnvSettings]) -> str:
    """The component a settings class belongs to (`llm` for `megaservice.components.llm.backend`)."""
    parts = cls.__module__.split(".")
    if len(parts) > 2 and parts[1] == "components":
        return parts[2]
    return "megaservice" if len(parts) < 2 else parts[1]


def _shared_row(rows: dict[str, Documented]) -> tuple[str, str]:
    """The default and description cells of a variable read by the components `rows` maps to their row."""
    if len(rows) == 1:
        (row,) = rows.values()
        return row.default, row.help
    groups: dict[tuple[str, str], list[str]] = {}
    for component in sorted(rows):
        row = rows[component]
        groups.setdefault((row.default, row.help), []).append(f"`{component}`")
    if len(groups) == 1:
        ((default, text), components) = next(iter(groups.items()))
        return default, f"{text} Read by {', '.join(components)}."
    defaults = {default for default, _ in groups}
    if len(defaults) == 1:
        default = next(iter(defaults))
    else:
        default = "<br>".join(f"{', '.join(names)}: {d}" for (d, _), names in groups.items())
    text = "<br>".join(f"{', '.join(names)}: {t}" for (_, t), names in groups.items())
    return default, text
