"""Writing an export: YAML in a stable order, and a secrets file that keeps what it already holds."""

import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["dump_yaml", "dump_yaml_all", "read_secrets_file", "write_secrets_file", "write_text"]

GENERATED = ("POSTGRES_PASSWORD",)
"""Secrets the export makes up when the file does not have them yet."""


class _Dumper(yaml.SafeDumper):
    """Block style, keys in the order given, multi-line strings as literal blocks, no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True  # a shared dict written twice, not `&id001` / `*id001`

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, indentless=False)  # lists indented under their key, as people write them


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def dump_yaml(data: Any) -> str:
    """`data` as block-style YAML, mapping keys in insertion order, long values kept on one line."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=4096, default_flow_style=False)


def dump_yaml_all(documents: Iterable[Any]) -> str:
    """Several YAML documents, separated by `---`."""
    return "---\n".join(dump_yaml(document) for document in documents)


def write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` (its folder made if need be) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def read_secrets_file(path: Path) -> dict[str, str]:
    """The `KEY=VALUE` lines of `path` (none if it does not exist); comments and blank lines skipped."""
    if not path.exists():
        return {}
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def write_secrets_file(path: Path, wanted: Mapping[str, str], header: str) -> dict[str, str]:
    """Add the keys of `wanted` that `path` lacks (a generated value for a password), keep the rest as it is.

    Exporting again never changes a password a deployment already uses. The file is readable by its
    owner only. Returns every value the file now holds.
    """
    existing = read_secrets_file(path)
    missing = {key: value for key, value in wanted.items() if key not in existing}
    for key in GENERATED:
        if key in missing and not missing[key]:
            missing[key] = secrets.token_urlsafe(24)
    if missing or not path.exists():
        text = path.read_text(encoding="utf-8") if path.exists() else header
        if text and not text.endswith("\n"):
            text += "\n"
        text += "".join(f"{key}={value}\n" for key, value in missing.items())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(text, encoding="utf-8")
    return {**existing, **missing}
