"""Run unmodified OPEA GenAIComps code on megaservice.

    import megaservice.compat
    megaservice.compat.install()    # from now on `import comps` (and its submodules) is megaservice
    from comps import MicroService, ServiceOrchestrator, ...

or, without touching the code: `python -m megaservice.compat your_megaservice.py [args]`
(or `python -m megaservice.compat -m package.module [args]`).

`install()` also turns on OPEA's one lifecycle quirk that OPEA code relies on: a local
`MicroService` binds its port when it is constructed (OPEA code constructs services, forks, and
expects the port to be taken). Plain megaservice code binds in `start()`.
"""

import sys
import types

__all__ = ["install", "uninstall"]

_MODULE_DUNDERS = frozenset(
    (
        "__name__",
        "__doc__",
        "__file__",
        "__spec__",
        "__loader__",
        "__package__",
        "__path__",
        "__builtins__",
        "__cached__",
    )
)
_PACKAGES = (
    "comps",
    "comps.cores",
    "comps.cores.mega",
    "comps.cores.proto",
    "comps.cores.telemetry",
    "comps.cores.common",
)


def _modules() -> dict[str, dict[str, object]]:
    import megaservice
    from megaservice import constants, dag, microservice, orchestrator, protocol, statistics
    from megaservice.compat import opea, utils
    from megaservice.protocol import assistants, audio, finetuning, forms, openai, rag

    top = {name: getattr(megaservice, name) for name in megaservice.__all__}
    top.update({name: getattr(opea, name) for name in opea.__all__})
    top["collect_all_statistics"] = statistics.collect_all_statistics
    return {
        "comps": top,
        "comps.version": {"__version__": megaservice.__version__},
        "comps.cores.mega.constants": vars(constants),
        "comps.cores.mega.dag": {"DAG": dag.DAG},
        "comps.cores.mega.micro_service": vars(microservice),
        "comps.cores.mega.http_service": vars(microservice),
        "comps.cores.mega.base_service": {"BaseService": microservice.BaseService},
        "comps.cores.mega.orchestrator": {**vars(orchestrator), "opea_telemetry": opea.opea_telemetry},
        "comps.cores.mega.base_statistics": vars(statistics),
        "comps.cores.mega.logger": {"CustomLogger": opea.CustomLogger, "logger": opea.CustomLogger()},
        "comps.cores.mega.utils": vars(utils),
        "comps.cores.mega.orchestrator_with_yaml": {"ServiceOrchestratorWithYaml": opea.ServiceOrchestratorWithYaml},
        "comps.cores.proto.docarray": vars(protocol),
        "comps.cores.proto.api_protocol": {
            **vars(openai),
            **vars(rag),
            **vars(audio),
            **vars(assistants),
            **vars(finetuning),
            **vars(forms),
        },
        "comps.cores.telemetry.opea_telemetry": {"opea_telemetry": opea.opea_telemetry, "tracer": opea.tracer},
        "comps.cores.common.component": {
            name: getattr(opea, name) for name in ("OpeaComponent", "OpeaComponentLoader", "OpeaComponentRegistry")
        },
    }


def install() -> None:
    """Make `import comps` and OPEA's submodules resolve to megaservice (idempotent)."""
    from megaservice import microservice

    microservice._bind_on_construction = True  # OPEA compat: see the module docstring
    from pathlib import Path

    from megaservice import messages

    if messages.get_image_settings().directory is None:  # OPEA reads any local image a message names; here
        messages.set_image_settings(directory=Path.cwd())  # only those under the working directory
    modules = _modules()
    for name in _PACKAGES:
        module = sys.modules.get(name)
        if module is None or not getattr(module, "__megaservice_compat__", False):
            module = types.ModuleType(name, f"megaservice compatibility alias of OPEA's {name}")
            module.__path__ = []
            module.__megaservice_compat__ = True  # type: ignore[attr-defined]
            sys.modules[name] = module
    for name, namespace in modules.items():
        module = sys.modules.get(name)
        if module is None or not getattr(module, "__megaservice_compat__", False):
            module = types.ModuleType(name, f"megaservice compatibility alias of OPEA's {name}")
            module.__megaservice_compat__ = True  # type: ignore[attr-defined]
            sys.modules[name] = module
        module.__dict__.update({k: v for k, v in namespace.items() if k not in _MODULE_DUNDERS})
    for name in [*_PACKAGES, *modules]:
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, sys.modules[name])


def uninstall() -> None:
    """Remove the `comps` alias and go back to binding ports in `start()`."""
    from megaservice import microservice

    microservice._bind_on_construction = False
    for name in list(sys.modules):
        if (name == "comps" or name.startswith("comps.")) and getattr(
            sys.modules[name], "__megaservice_compat__", False
        ):
            del sys.modules[name]
