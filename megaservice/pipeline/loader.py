"""Reading a pipeline file: YAML in, a validated `Pipeline` out, or an error naming the file, line and problem."""

import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from megaservice.exceptions import ConfigurationError
from megaservice.pipeline.model import Pipeline
from megaservice.settings import environment

__all__ = ["PipelineFileError", "find_pipeline", "load_pipeline", "parse_pipeline", "shipped_pipelines"]

_PATH_IN_MESSAGE = re.compile(r"^((?:services|megaservice)(?:\.[\w-]+)*)")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")


class PipelineFileError(ConfigurationError):
    """A pipeline file that cannot be used; the message says where (`file:line`) and why."""

    def __init__(self, source: str, problems: Sequence[tuple[int | None, str]]) -> None:
        lines = [f"{source}:{line}: {text}" if line else f"{source}: {text}" for line, text in problems]
        super().__init__("\n".join(lines))
        self.source = source
        self.problems = list(problems)


def shipped_pipelines() -> dict[str, Path]:
    """The pipeline files that ship with megaservice, by name (`megaservice pipelines` lists them)."""
    folder = resources.files("megaservice.pipeline") / "files"
    return {Path(str(item)).stem: Path(str(item)) for item in folder.iterdir() if str(item).endswith(".yaml")}


def find_pipeline(name_or_path: str | Path) -> Path:
    """The file of a shipped pipeline (`chatqna`), or the path given (`ConfigurationError` if neither exists)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_pipelines()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    raise ConfigurationError(
        f"no pipeline {str(name_or_path)!r}: not a file, and not one of the shipped ones ({', '.join(sorted(shipped))})"
    )


def load_pipeline(name_or_path: str | Path, environ: Mapping[str, str] | None = None) -> Pipeline:
    """Read and validate a pipeline file (or a shipped pipeline by name); `${VAR:-default}` from `environ`.

    Raises:
        PipelineFileError: the file is not valid YAML or not a valid pipeline; each problem with its line.
    """
    path = find_pipeline(name_or_path)
    return parse_pipeline(path.read_text(encoding="utf-8"), str(path), environ)


def parse_pipeline(text: str, source: str = "<pipeline>", environ: Mapping[str, str] | None = None) -> Pipeline:
    """Validate pipeline YAML `text`; `source` names it in errors.

    String values may name environment variables: `${VAR}`, or `${VAR:-default}` when it is unset or
    empty (`environ`, default: the process's environment).
    """
    env = environment() if environ is None else environ
    try:
        root = yaml.compose(text)
        data = _expand(yaml.safe_load(text), env)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise PipelineFileError(source, [(line, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if not isinstance(data, dict):
        raise PipelineFileError(source, [(1, "a pipeline file is a mapping with `name`, `services` and `megaservice`")])
    try:
        return Pipeline.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            location = [str(part) for part in error["loc"]]
            message = error["msg"].removeprefix("Value error, ")
            if not location:  # a whole-file rule: its message starts with the path it is about
                found = _PATH_IN_MESSAGE.match(message)
                location = found.group(1).split(".") if found else []
            where = ".".join(location)
            problems.append(
                (_line(root, location), f"{where}: {message}" if where and not message.startswith(where) else message)
            )
        raise PipelineFileError(source, problems) from None


def _expand(value: Any, environ: Mapping[str, str]) -> Any:
    """`value` with `${VAR}` / `${VAR:-default}` replaced in every string."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: environ.get(m.group(1)) or (m.group(3) or ""), value)
    if isinstance(value, dict):
        return {key: _expand(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, environ) for item in value]
    return value


def _line(node: Any, location: list[str]) -> int | None:
    """The line of the YAML node at `location` (or of the deepest part of it that exists)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in location:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if str(key.value) == part:
                    node = value
                    line = key.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            return line
    return line
