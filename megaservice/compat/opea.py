"""OPEA names with no megaservice counterpart: `CustomLogger`, the component registry, the telemetry decorator."""

import functools
import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from megaservice import tracing
from megaservice.orchestrator_yaml import ServiceOrchestratorWithYaml

__all__ = [
    "CustomLogger",
    "OpeaComponent",
    "OpeaComponentLoader",
    "OpeaComponentRegistry",
    "ServiceOrchestratorWithYaml",
    "detach_ignore_err",
    "opea_telemetry",
    "tracer",
]

F = TypeVar("F", bound=Callable[..., Any])


class CustomLogger:
    """OPEA's logger facade over `logging.getLogger(name)` (no handlers or levels are forced on you)."""

    def __init__(self, name: str | None = None) -> None:
        self._logger = logging.getLogger(name or "GenAIComps")

    def __getattr__(self, item: str) -> Any:
        return getattr(self._logger, item)

    def train(self, msg: object, *args: Any, **kwargs: Any) -> None:
        """Log at OPEA's TRAIN level (21)."""
        self._logger.log(21, msg, *args, **kwargs)

    def eval(self, msg: object, *args: Any, **kwargs: Any) -> None:
        """Log at OPEA's EVAL level (22)."""
        self._logger.log(22, msg, *args, **kwargs)

    def close(self) -> None:
        """Nothing to close (kept for OPEA code)."""


class _Tracer:
    """OPEA's `tracer`: its spans are megaservice's (`megaservice.tracing.span`), nothing while tracing is off."""

    def start_as_current_span(self, name: str, *args: Any, **kwargs: Any) -> tracing.NoSpan:
        return tracing.span(name)


tracer = _Tracer()


def opea_telemetry(func: F) -> F:
    """OPEA's span decorator: a span named after the function while tracing is on (`megaservice.tracing`)."""
    name = func.__qualname__
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(name):
                return await func(*args, **kwargs)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with tracer.start_as_current_span(name):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class OpeaComponent(ABC):
    """OPEA's base class of a component implementation (a backend of a microservice)."""

    def __init__(self, name: str, type: str, description: str, config: dict[str, Any] | None = None) -> None:
        self.name = name
        self.type = type
        self.description = description
        self.config = dict(config or {})

    def get_meta(self) -> dict[str, Any]:
        """Name, type, description and config."""
        return {"name": self.name, "type": self.type, "description": self.description, "config": self.config}

    def update_config(self, key: str, value: Any) -> None:
        """Set one config value."""
        self.config[key] = value

    @abstractmethod
    def check_health(self) -> bool:
        """Whether the backend works."""

    @abstractmethod
    async def invoke(self, *args: Any, **kwargs: Any) -> Any:
        """Run the component."""


class OpeaComponentRegistry:
    """Name → component class."""

    _registry: ClassVar[dict[str, type]] = {}

    @classmethod
    def register(cls, name: str) -> Callable[[type], type]:
        """Register the decorated class under `name` (`ValueError` if taken)."""

        def decorator(component_class: type) -> type:
            if name in cls._registry:
                raise ValueError(f"A component with the name '{name}' is already registered.")
            cls._registry[name] = component_class
            return component_class

        return decorator

    @classmethod
    def get(cls, name: str) -> type:
        """The class registered under `name` (`KeyError` if none)."""
        if name not in cls._registry:
            raise KeyError(f"No component found with the name '{name}'.")
        return cls._registry[name]

    @classmethod
    def unregister(cls, name: str) -> None:
        """Forget `name`."""
        cls._registry.pop(name, None)


class OpeaComponentLoader:
    """Instantiate the component registered under `component_name` and forward `invoke` to it."""

    def __init__(self, component_name: str, **kwargs: Any) -> None:
        kwargs["name"] = component_name
        self.component = OpeaComponentRegistry.get(component_name)(**kwargs)

    async def invoke(self, *args: Any, **kwargs: Any) -> Any:
        """Call the component."""
        return await self.component.invoke(*args, **kwargs)


def detach_ignore_err(self: Any, token: object) -> None:
    """OPEA's patch of OpenTelemetry's context `detach` (it swallowed errors); megaservice patches nothing."""
