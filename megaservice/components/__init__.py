"""The component services a pipeline is made of, each OPEA-compatible (routes, shapes, env names, ports).

Every component is a folder with the same parts:

    __init__.py    exports <Name>Settings, <Name>Backend, load_backend, create_service
    backend.py     the backend Protocol, the settings (`megaservice.settings.variable` fields), load_backend()
    service.py     create_service(settings, backend=None) -> MicroService: the HTTP routes over a backend
    <backend>.py   one file per backend (its optional dependencies imported there, and only there)
    __main__.py    python -m megaservice.components.<name>  (the same as `megaservice serve <name>`)

A component's settings have at least `host`, `port` and `backend` (the CLI's `--host`, `--port`,
`--backend` replace them). Model inference and blocking libraries run in worker threads
(`_shared.blocking`), never on the event loop; `/v1/ready` answers 503 until the backend is ready.
"""

import importlib
from types import ModuleType

__all__ = ["COMPONENTS", "backend_name", "backends", "component_module"]

COMPONENTS: dict[str, str] = {
    "embedding": "megaservice.components.embedding",
    "clip": "megaservice.components.clip",
    "retriever": "megaservice.components.retriever",
    "dataprep": "megaservice.components.dataprep",
    "reranker": "megaservice.components.reranker",
    "llm": "megaservice.components.llm",
    "llm-server": "megaservice.components.llm_server",
    "bias": "megaservice.components.bias",
    "guardrails": "megaservice.components.guardrails",
    "postgres": "megaservice.components.postgres",
}
"""`megaservice serve NAME`: the component package of each NAME."""


def component_module(name: str) -> ModuleType:
    """The package of component `name` (`KeyError` naming the known ones if there is none)."""
    try:
        path = COMPONENTS[name]
    except KeyError:
        raise KeyError(f"no component {name!r}; the components are: {', '.join(COMPONENTS)}") from None
    return importlib.import_module(path)


def backends(component: str) -> tuple[str, ...]:
    """The backend names component `component` accepts (its `backend.BACKENDS`).

    Imports the component's package, not its backends' optional dependencies.
    """
    return tuple(_backend_module(component).BACKENDS)


def backend_name(component: str, name: str) -> str:
    """Component `component`'s own name of backend `name` (OPEA's names mapped), as its `--backend` takes it.

    Raises:
        ConfigurationError: the component has no backend `name` (the message names its environment variable).
    """
    found = _backend_module(component).backend_name(name)
    assert isinstance(found, str)
    return found


def _backend_module(component: str) -> ModuleType:
    return importlib.import_module(f"{component_module(component).__name__}.backend")
