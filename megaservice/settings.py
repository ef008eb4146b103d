"""The one place megaservice reads its environment.

Configuration is a set of small frozen dataclasses, one per concern (`Timeout`, `Retry`,
`CircuitBreaker`, `Limits`, `InputLimits`, `ClientSettings`, …, and one per component). Each field
that the environment may set is declared with `variable()`: its name, its default and what it does.
This module reads those fields, always the same way:

* a variable that is unset or blank leaves the default;
* booleans accept `1 true yes on` and `0 false no off` (any case), nothing else;
* numbers are checked (`minimum`), and `zero_off=True` makes `0` mean "no limit" (`None`);
* lists are comma-separated;
* anything else raises `ConfigurationError` naming the variable and what it expected.

    Settings.from_env()            the process-level settings a service or an orchestrator starts from
    Timeout.from_env(environ, prefix="MEGASERVICE_NODE_EMBEDDING_", base=...)   one concern, one node

`megaservice.settings_docs` turns these declarations into docs/configuration.md.

Entry points (a service's constructor, `python -m megaservice.components.*`, the CLI) call
`from_env()`; everything below them receives settings objects. Nothing reads the environment at
import time, and no other module of the package touches `os.environ` (a test checks both).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from megaservice.exceptions import ConfigurationError

if TYPE_CHECKING:
    from megaservice.client import ClientSettings
    from megaservice.limits import InputLimits, Limits
    from megaservice.messages import ImageSettings
    from megaservice.resilience import CircuitBreaker, Retry, Timeout
    from megaservice.tracing import TracingSettings

__all__ = [
    "FALSE_WORDS",
    "NODE_PREFIX",
    "TRUE_WORDS",
    "EnvSettings",
    "NodeSettings",
    "Settings",
    "StorageSettings",
    "Variable",
    "environment",
    "node_prefix",
    "parse_bool",
    "set_default",
    "variable",
    "work_offline",
]

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_METADATA_KEY = "megaservice.env"
_NODE_NAME = re.compile(r"[^A-Z0-9]+")


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable a settings field reads."""

    name: str
    """Its name after the class's `env_prefix` (the whole name when the class has none)."""
    help: str
    """What it does, for docs/configuration.md."""
    aliases: tuple[str, ...] = ()
    """Other whole names read when `name` is unset (e.g. OPEA's spelling of the same setting)."""
    zero_off: bool = False
    """`0` means "no limit": the field becomes `None`."""
    minimum: float | None = None
    """Smallest number accepted."""
    parse: Callable[[str], Any] | None = None
    """Turns the text into the field's value (default: by the field's type); raise `ValueError` to refuse it."""
    expected: str | None = None
    """What a valid value looks like, for the error message of a custom `parse`."""
    secret: bool = False
    """The value is a credential: never shown in errors or logs."""
    shown_default: str | None = None
    """The default as docs/configuration.md shows it, when the field's default is computed."""


def variable(
    name: str,
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    default_factory: Callable[[], Any] | None = None,
    aliases: tuple[str, ...] = (),
    zero_off: bool = False,
    minimum: float | None = None,
    parse: Callable[[str], Any] | None = None,
    expected: str | None = None,
    secret: bool = False,
    shown_default: str | None = None,
) -> Any:
    """A dataclass field that the environment variable `name` (after the class's `env_prefix`) may set."""
    meta = Variable(name, help, aliases, zero_off, minimum, parse, expected, secret, shown_default)
    if default_factory is not None:
        return field(default_factory=default_factory, metadata={_METADATA_KEY: meta})
    return field(default=default, metadata={_METADATA_KEY: meta})


_registry: list[type[EnvSettings]] = []


class EnvSettings:
    """Mixin of the settings dataclasses: `from_env()` reads the fields declared with `variable()`."""

    __slots__ = ()
    env_prefix: ClassVar[str] = ""
    """Put before each variable's name (e.g. `MEGASERVICE_`); `from_env(prefix=...)` replaces it."""
    per_node: ClassVar[bool] = False
    """Also read per pipeline node, under `MEGASERVICE_NODE_<NAME>_` (`Settings.node()`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _registry.append(cls)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, prefix: str | None = None, base: Self | None = None
    ) -> Self:
        """`base` (default: the defaults) with the fields the environment sets.

        Raises:
            ConfigurationError: a variable holds a value its field cannot take; the message names it.
        """
        env = os.environ if environ is None else environ
        start = base if base is not None else cls()
        changes: dict[str, Any] = {}
        hints = _hints(cls)
        for item, meta in _fields(cls):
            found = _lookup(env, (prefix if prefix is not None else cls.env_prefix) + meta.name, meta.aliases)
            if found is not None:
                name, text = found
                changes[item.name] = _convert(name, text, meta, hints[item.name])
        if not changes:
            return start
        try:
            return dataclasses.replace(start, **changes)  # type: ignore[type-var]  # EnvSettings subclasses are dataclasses
        except (ValueError, ConfigurationError) as exc:
            names = ", ".join(sorted((prefix or cls.env_prefix) + m.name for f, m in _fields(cls) if f.name in changes))
            raise ConfigurationError(f"{names}: {exc}") from None


def _fields(cls: type) -> Iterator[tuple[dataclasses.Field[Any], Variable]]:
    for item in dataclasses.fields(cls):
        meta = item.metadata.get(_METADATA_KEY)
        if meta is not None:
            yield item, meta


_hint_cache: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _hint_cache.get(cls)
    if hints is None:
        hints = _hint_cache[cls] = typing.get_type_hints(cls)
    return hints


def _lookup(env: Mapping[str, str], name: str, aliases: tuple[str, ...]) -> tuple[str, str] | None:
    for candidate in (name, *aliases):
        text = env.get(candidate, "").strip()
        if text:
            return candidate, text
    return None


def parse_bool(name: str, text: str) -> bool:
    """`text` as a boolean; `ConfigurationError` naming `name` unless it is one of the accepted words."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigurationError(f"{name} must be one of {_words()}, got {text!r}")


def _words() -> str:
    return "/".join(sorted(TRUE_WORDS)) + " or " + "/".join(sorted(FALSE_WORDS))


def _convert(name: str, text: str, meta: Variable, hint: Any) -> Any:
    shown = "(hidden)" if meta.secret else repr(text)
    if meta.parse is not None:
        try:
            return meta.parse(text)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"{name} must be {meta.expected or exc}, got {shown}") from None
    kind, optional = _unwrap(hint)
    if kind is bool:
        return parse_bool(name, text)
    if kind in (int, float):
        return _number(name, text, shown, kind, meta, optional)
    if kind is str:
        return text
    if kind is Path:
        return Path(text).expanduser()
    origin = typing.get_origin(kind)
    if origin in (tuple, frozenset):
        items = [part.strip() for part in text.split(",") if part.strip()]
        return tuple(items) if origin is tuple else frozenset(items)
    if origin is Literal:
        choices = typing.get_args(kind)
        if text not in choices:
            raise ConfigurationError(f"{name} must be one of {', '.join(map(str, choices))}; got {shown}")
        return text
    raise AssertionError(f"{name}: no parser for fields of type {hint!r}; give variable(parse=...)")


def _number(name: str, text: str, shown: str, kind: type[float], meta: Variable, optional: bool) -> float | None:
    try:
        number = kind(text)
    except ValueError:
        raise ConfigurationError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {shown}") from None
    if meta.zero_off and number == 0:
        assert optional, f"{name}: zero_off needs an optional field"
        return None
    if meta.minimum is not None and number < meta.minimum:
        raise ConfigurationError(f"{name} must be at least {meta.minimum:g}, got {shown}")
    return number


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """`(T, True)` for `T | None`, `(T, False)` for `T`."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def environment() -> dict[str, str]:
    """A copy of the process's environment, for starting child processes with it."""
    return dict(os.environ)


def work_offline() -> None:
    """Make Hugging Face libraries fail fast on a missing local file instead of downloading it.

    Sets `HF_HUB_OFFLINE=1` and `TRANSFORMERS_OFFLINE=1` unless the environment sets them already
    (`HF_HUB_OFFLINE=0` lets a component download a user-named model from the hub). Called by the
    component entry points, before a model library is imported.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", os.environ["HF_HUB_OFFLINE"])


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "megaservice"


@dataclass(frozen=True, slots=True)
class StorageSettings(EnvSettings):
    """Where megaservice keeps what it stores (the embedded database, uploaded files)."""

    data_dir: Path = variable(
        "MEGASERVICE_DATA_DIR",
        default_factory=_default_data_dir,
        shown_default="`$XDG_DATA_HOME/megaservice` (`~/.local/share/megaservice`)",
        help="The folder of everything megaservice stores: the embedded PostgreSQL, ingested files.",
    )
    """The folder of everything megaservice stores."""


# -- the process-level settings ------------------------------------------------------------------


NODE_PREFIX = "MEGASERVICE_NODE_<NAME>_"
"""How docs/configuration.md writes the prefix of per-node variables."""


def node_prefix(node_name: str) -> str:
    """The environment prefix of one pipeline node: `embedding/MicroService` → `MEGASERVICE_NODE_EMBEDDING_`."""
    base = node_name.rsplit("/", 1)[0] if "/" in node_name else node_name
    return f"MEGASERVICE_NODE_{_NODE_NAME.sub('_', base.upper()).strip('_')}_"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """How an orchestrator calls one node, as the environment sets it (`MEGASERVICE_NODE_<NAME>_*`)."""

    timeout: Timeout
    retry: Retry
    breaker: CircuitBreaker | None
    fallback_url: str | None
    fail_open: bool = False
    """When the node fails (unreachable, 5xx, timeout, circuit open), pass its input on as its answer."""
    stream_in_flight: int = 8
    """For a node after a streaming LLM: its sentences being checked at once, at most, per stream."""


@dataclass(frozen=True, slots=True)
class _Switches(EnvSettings):
    env_prefix: ClassVar[str] = "MEGASERVICE_"

    gc_tuning: bool = variable(
        "GC_TUNING",
        True,
        help="Freeze what exists when a service starts and collect young objects every 10 000 allocations "
        "instead of 700; `0` leaves Python's garbage collector alone.",
    )
    http_metrics: bool = variable(
        "HTTP_METRICS", True, help="Record the `http_*` Prometheus series of every request; `0` turns them off."
    )
    access_log: bool = variable(
        "ACCESS_LOG",
        True,
        help="Log one line per request (uvicorn's access log, written after the response is sent); "
        "probes are never logged. `0` turns it off.",
    )


@dataclass(frozen=True, slots=True)
class _Fallback(EnvSettings):
    env_prefix: ClassVar[str] = NODE_PREFIX

    url: str | None = variable(
        "FALLBACK_URL",
        None,
        help="Per node only (`MEGASERVICE_NODE_<NAME>_FALLBACK_URL`): the full URL of a node speaking the same "
        "protocol, called when this one fails.",
    )


@dataclass(frozen=True, slots=True)
class _Guarding(EnvSettings):
    env_prefix: ClassVar[str] = NODE_PREFIX

    fail_open: bool = variable(
        "FAIL_OPEN",
        False,
        help="Per node only (`MEGASERVICE_NODE_<NAME>_FAIL_OPEN=1`), for a guardrail: when the node fails "
        "(unreachable, 5xx, timed out, circuit open) its input passes on unchecked as its answer, a warning is "
        "logged. Unset, the pipeline fails closed: 502/503/504 naming the node, or a stream's final error event.",
    )
    stream_in_flight: int = variable(
        "STREAM_IN_FLIGHT",
        8,
        minimum=1,
        help="Per node only, for a node after a streaming LLM (an output guardrail): sentences of one stream "
        "sent to it and not yet passed on, at most; then the LLM's stream waits.",
    )


def _default(module: str, name: str) -> Callable[[], Any]:
    def make() -> Any:
        return getattr(__import__(module, fromlist=[name]), name)()

    return make


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a service or an orchestrator reads from the environment, read once.

    `Settings()` is the defaults; `Settings.from_env()` what the environment changes. Services and
    orchestrators take one (`MicroService(settings=…)`, `ServiceOrchestrator(settings=…)`) and build
    from the environment when given none.
    """

    limits: Limits = field(default_factory=_default("megaservice.limits", "Limits"))
    input_limits: InputLimits = field(default_factory=_default("megaservice.limits", "InputLimits"))
    timeout: Timeout = field(default_factory=_default("megaservice.resilience", "Timeout"))
    retry: Retry = field(default_factory=_default("megaservice.resilience", "Retry"))
    breaker: CircuitBreaker | None = None
    client: ClientSettings = field(default_factory=_default("megaservice.client", "ClientSettings"))
    images: ImageSettings = field(default_factory=_default("megaservice.messages", "ImageSettings"))
    tracing: TracingSettings = field(default_factory=_default("megaservice.tracing", "TracingSettings"))
    gc_tuning: bool = True
    http_metrics: bool = True
    access_log: bool = True
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The environment this was read from: what `node()` reads the per-node variables in."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings the environment (`os.environ` by default) gives.

        Raises:
            ConfigurationError: a variable holds a value it cannot take; the message names it.
        """
        from megaservice.client import ClientSettings
        from megaservice.limits import InputLimits, Limits
        from megaservice.messages import ImageSettings
        from megaservice.resilience import Retry, Timeout, breaker_from_env
        from megaservice.tracing import TracingSettings

        env = dict(os.environ if environ is None else environ)
        switches = _Switches.from_env(env)
        return cls(
            limits=Limits.from_env(env),
            input_limits=InputLimits.from_env(env),
            timeout=Timeout.from_env(env),
            retry=Retry.from_env(env),
            breaker=breaker_from_env(env, "MEGASERVICE_", None),
            client=ClientSettings.from_env(env),
            images=ImageSettings.from_env(env),
            tracing=TracingSettings.from_env(env),
            gc_tuning=switches.gc_tuning,
            http_metrics=switches.http_metrics,
            access_log=switches.access_log,
            environ={k: v for k, v in env.items() if k.startswith("MEGASERVICE_NODE_")},
        )

    def node(
        self,
        name: str,
        *,
        timeout: Timeout | None = None,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> NodeSettings:
        """How to call node `name`: `MEGASERVICE_NODE_<NAME>_*` over the given values (default: these settings')."""
        from megaservice.resilience import Retry, Timeout, breaker_from_env

        prefix = node_prefix(name)
        env = self.environ
        guarding = _Guarding.from_env(env, prefix=prefix)
        return NodeSettings(
            timeout=Timeout.from_env(env, prefix=prefix, base=timeout or self.timeout),
            retry=Retry.from_env(env, prefix=prefix, base=retry or self.retry),
            breaker=breaker_from_env(env, prefix, breaker if breaker is not None else self.breaker),
            fallback_url=_Fallback.from_env(env, prefix=prefix).url,
            fail_open=guarding.fail_open,
            stream_in_flight=guarding.stream_in_flight,
        )


def set_default(name: str, value: str) -> str:
    """The process's environment variable `name`, set to `value` first if it is unset or blank.

    For a native library that reads its configuration from the environment once, when it is loaded
    (OpenMP's `OMP_WAIT_POLICY` for llama.cpp): call it before the library is imported.
    """
    if not os.environ.get(name, "").strip():
        os.environ[name] = value
    return os.environ[name]
