"""Reading a pipeline file: YAML in, a validated `Pipeline` out, or an error naming the file, line and problem."""

import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from megaservice.exceptions import ConfigurationError
from megaservice.pipeline.model import LocatedError, Pipeline
from megaservice.settings import environment

__all__ = [
    "PipelineFileError",
    "demo_paths",
    "find_pipeline",
    "load_pipeline",
    "parse_pipeline",
    "shipped_pipelines",
]

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
    return {item.stem: item for item in _shipped_folder().iterdir() if item.suffix == ".yaml"}


def _shipped_folder() -> Path:
    """Where the shipped pipeline files and the demo corpus (`corpus/`) are."""
    return Path(str(resources.files("megaservice.pipeline") / "files"))


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


def load_pipeline(
    name_or_path: str | Path, environ: Mapping[str, str] | None = None, *, check_backends: bool = True
) -> Pipeline:
    """Read and validate a pipeline file (or a shipped pipeline by name); `${VAR:-default}` from `environ`.

    Raises:
        PipelineFileError: the file is not valid YAML or not a valid pipeline; each problem with its line.
    """
    path = find_pipeline(name_or_path)
    return parse_pipeline(path.read_text(encoding="utf-8"), str(path), environ, check_backends=check_backends)


def parse_pipeline(
    text: str, source: str = "<pipeline>", environ: Mapping[str, str] | None = None, *, check_backends: bool = True
) -> Pipeline:
    """Validate pipeline YAML `text`; `source` names it in errors.

    String values may name environment variables: `${VAR}`, or `${VAR:-default}` when it is unset or
    empty (`environ`, default: the process's environment). A key given twice in one mapping is an
    error. With `check_backends`, each service's `backend` must be one its component has: that
    imports those components (not their backends' dependencies); the gateway, which starts none, skips it.
    """
    env = environment() if environ is None else environ
    try:
        root = yaml.compose(text)
        data = _expand(yaml.safe_load(text), env)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise PipelineFileError(source, [(line, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    duplicates = _duplicate_keys(root, [])
    if duplicates:
        raise PipelineFileError(source, duplicates)
    if not isinstance(data, dict):
        raise PipelineFileError(source, [(1, "a pipeline file is a mapping with `name`, `services` and `megaservice`")])
    try:
        return Pipeline.model_validate(data, context={"check_backends": check_backends})
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            location = [str(part) for part in error["loc"]]
            message = error["msg"].removeprefix("Value error, ")
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, LocatedError):  # a whole-file rule broken at one place
                problems.append((_line(root, list(cause.location)), message))
                continue
            if not location:  # a whole-file rule: its message starts with the path it is about
                found = _PATH_IN_MESSAGE.match(message)
                location = found.group(1).split(".") if found else []
            where = ".".join(location)
            problems.append(
                (_line(root, location), f"{where}: {message}" if where and not message.startswith(where) else message)
            )
        raise PipelineFileError(source, problems) from None


def demo_paths(pipeline: Pipeline, path: Path) -> list[Path]:
    """The file or folder of each of `pipeline.demo`'s entries, for the pipeline file at `path`.

    An entry is a path, absolute or relative to the pipeline file's folder. A relative one that is
    not there is looked up among the shipped files: a copy of a shipped pipeline file keeps its
    `demo: [corpus]`, the packaged demo corpus, wherever it is copied to.

    Raises:
        PipelineFileError: an entry is neither; its line, and what to do about it.
    """
    problems: list[tuple[int | None, str]] = []
    found: list[Path] = []
    root: Any = None
    for index, entry in enumerate(pipeline.demo):
        given = Path(entry).expanduser()
        places = [given] if given.is_absolute() else [path.parent / given, _shipped_folder() / given]
        there = next((place for place in places if place.exists()), None)
        if there is not None:
            found.append(there.resolve())
            continue
        if root is None:
            root = yaml.compose(path.read_text(encoding="utf-8"))
        missing = (
            "does not exist"
            if given.is_absolute()
            else f"is not next to this file ({places[0].resolve()}), nor shipped with megaservice"
        )
        problems.append(
            (
                _line(root, ["demo", str(index)]),
                f"demo: {entry!r} {missing}; name a file or folder (relative to this file, or absolute), "
                "drop it from `demo`, or run `megaservice up --no-demo`",
            )
        )
    if problems:
        raise PipelineFileError(str(path), problems)
    return found


def _expand(value: Any, environ: Mapping[str, str]) -> Any:
    """`value` with `${VAR}` / `${VAR:-default}` replaced in every string."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: environ.get(m.group(1)) or (m.group(3) or ""), value)
    if isinstance(value, dict):
        return {key: _expand(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, environ) for item in value]
    return value


def _duplicate_keys(node: Any, location: list[str]) -> list[tuple[int | None, str]]:
    """Each key given twice in a mapping under `node`, at its second line, naming the first."""
    problems: list[tuple[int | None, str]] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            name = str(key.value)
            line = key.start_mark.line + 1
            where = ".".join([*location, name])
            if name in first:
                problems.append((line, f"{where} is defined twice (first at line {first[name]})"))
            else:
                first[name] = line
            problems.extend(_duplicate_keys(value, [*location, name]))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems.extend(_duplicate_keys(item, [*location, str(index)]))
    return problems


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
