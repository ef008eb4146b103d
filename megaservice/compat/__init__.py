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


def _public(*modules: types.ModuleType) -> dict[str, object]:
    """The names in the `__all__` of `modules`."""
    return {name: getattr(module, name) for module in modules for name in module.__all__}


def _modules() -> dict[str, dict[str, object]]:
    """What each of OPEA's modules holds, from megaservice's (tests/compat/test_opea_names.py lists OPEA's names)."""
    import megaservice
    from megaservice import constants, dag, microservice, protocol, statistics
    from megaservice.compat import opea, utils
    from megaservice.metrics import OrchestratorMetrics
    from megaservice.protocol import assistants, audio, finetuning, forms, guardrails, openai, rag

    logger = opea.CustomLogger()
    logging_names = {"CustomLogger": opea.CustomLogger, "logger": logger}
    off = {"LOGFLAG": False, "logflag": False, "ENABLE_OPEA_TELEMETRY": False}  # OPEA's import-time env flags
    top = {name: getattr(megaservice, name) for name in megaservice.__all__}
    top.update(_public(opea))
    top["collect_all_statistics"] = statistics.collect_all_statistics
    core_types = {"ServiceRoleType": constants.ServiceRoleType, "ServiceType": constants.ServiceType}
    return {
        "comps": top,
        "comps.version": {"__version__": megaservice.__version__},
        "comps.cores.mega.constants": _public(constants),
        "comps.cores.mega.dag": {"DAG": dag.DAG},
        "comps.cores.mega.micro_service": {
            **_public(microservice),
            **core_types,
            **logging_names,
            "MCPFuncType": constants.MCPFuncType,
            "TextDoc": megaservice.TextDoc,
            "check_ports_availability": utils.check_ports_availability,
            "logflag": off["logflag"],
        },
        "comps.cores.mega.http_service": {
            "BaseService": microservice.BaseService,
            "HTTPService": microservice.HTTPService,
            "collect_all_statistics": statistics.collect_all_statistics,
        },
        "comps.cores.mega.base_service": {"BaseService": microservice.BaseService, **logging_names},
        "comps.cores.mega.orchestrator": {
            "ServiceOrchestrator": megaservice.ServiceOrchestrator,
            "DAG": dag.DAG,
            "LLMParams": megaservice.LLMParams,
            "OrchestratorMetrics": OrchestratorMetrics,
            "ServiceType": constants.ServiceType,
            "opea_telemetry": opea.opea_telemetry,
            "LOGFLAG": off["LOGFLAG"],
            "ENABLE_OPEA_TELEMETRY": off["ENABLE_OPEA_TELEMETRY"],
            **logging_names,
        },
        "comps.cores.mega.base_statistics": _public(statistics),
        "comps.cores.mega.logger": logging_names,
        "comps.cores.mega.utils": {**_public(utils), "CustomLogger": opea.CustomLogger},
        "comps.cores.mega.orchestrator_with_yaml": {
            "ServiceOrchestratorWithYaml": opea.ServiceOrchestratorWithYaml,
            "DAG": dag.DAG,
        },
        "comps.cores.proto.docarray": {
            **{name: getattr(protocol, name) for name in protocol.__all__},
            **_public(guardrails),
        },
        "comps.cores.proto.api_protocol": _public(openai, rag, audio, assistants, finetuning, forms),
        "comps.cores.telemetry.opea_telemetry": {
            "opea_telemetry": opea.opea_telemetry,
            "tracer": opea.tracer,
            "detach_ignore_err": opea.detach_ignore_err,
            "SERVICE_NAME": "opea",
            "telemetry_endpoint": None,
            "ENABLE_OPEA_TELEMETRY": off["ENABLE_OPEA_TELEMETRY"],
            **logging_names,
        },
        "comps.cores.common.component": {**_public(opea), **logging_names},
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
