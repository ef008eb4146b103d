"""`ServiceOrchestratorWithYaml`: a pipeline described in YAML, run by the ordinary orchestrator.

OPEA's format:

    opea_micro_services:
      s1:
        endpoint: http://localhost:8081/v1/add
      s2:
        endpoint: http://localhost:8082/v1/add
    opea_mega_service:
      mega_flow:
        - (s1, s2) >> s3 >> (s4, s5)

Each rule chains groups with `>>`; a group is a node or `(a, b, ...)`, and every node of a group
flows to every node of the next. Without `mega_flow` the services are independent roots. Nodes are
named as in the file, and `schedule()` fills `result_dict` as OPEA's does, but runs like any
`ServiceOrchestrator`: concurrently where the graph allows, on the pooled async client, with
timeouts, retries and errors naming the node (OPEA's ran the nodes one by one with blocking
`requests`).
"""

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from megaservice._pipeline.plan import remote_node
from megaservice.constants import ServiceType
from megaservice.dag import DAG
from megaservice.exceptions import ConfigurationError
from megaservice.orchestrator import ServiceOrchestrator
from megaservice.protocol.docs import LLMParams

__all__ = ["ServiceOrchestratorWithYaml"]

_GROUP = re.compile(r"^\((.*)\)$")


class ServiceOrchestratorWithYaml(ServiceOrchestrator):
    """A `ServiceOrchestrator` built from OPEA's YAML pipeline file (module docstring).

    Raises:
        ConfigurationError: the file is not such a pipeline (unknown node, cycle, endpoint not a URL).
    """

    def __init__(self, yaml_file_path: str | Path, **kwargs: Any) -> None:
        import yaml

        super().__init__(**kwargs)
        self.yaml_file_path = str(yaml_file_path)
        self.result_dict: dict[str, Any] = {}
        with Path(yaml_file_path).open(encoding="utf-8") as file:
            self.docs: dict[str, Any] = yaml.safe_load(file) or {}
        services = self.docs.get("opea_micro_services")
        if not isinstance(services, dict) or not services:
            raise ConfigurationError(f"{yaml_file_path}: 'opea_micro_services' must map node names to endpoints")
        for name, spec in services.items():
            self._add_endpoint(str(name), spec)
        flow = (self.docs.get("opea_mega_service") or {}).get("mega_flow") or []
        for rule in flow:
            self._add_rule(str(rule))

    def _add_endpoint(self, name: str, spec: Any) -> None:
        url = str(spec.get("endpoint") or "") if isinstance(spec, dict) else ""
        what = f"{self.yaml_file_path}: the 'endpoint' of node {name!r}"
        self.services[name] = remote_node(name, url, ServiceType.UNDEFINED, what=what)  # named as in the file
        self.add_node_if_not_exists(name)

    def _add_rule(self, rule: str) -> None:
        previous: list[str] = []
        for group in (g.strip() for g in rule.split(">>")):
            match = _GROUP.match(group)
            nodes = [n.strip() for n in match.group(1).split(",")] if match else [group]
            for node in nodes:
                if node not in self.services:
                    raise ConfigurationError(f"{self.yaml_file_path}: rule {rule!r} names {node!r}, not a service")
            for before in previous:
                for after in nodes:
                    self.add_edge(before, after)  # raises on a cycle
            previous = nodes

    async def schedule(
        self, initial_inputs: dict[str, Any] | BaseModel, llm_parameters: LLMParams | None = None, **kwargs: Any
    ) -> tuple[dict[str, Any], DAG]:
        """Run the pipeline; results by node name, also left in `result_dict` (OPEA's attribute)."""
        self.result_dict, graph = await super().schedule(initial_inputs, llm_parameters, **kwargs)
        return self.result_dict, graph

    def get_all_final_outputs(self, result_dict: dict[str, Any] | None = None, runtime_graph: DAG | None = None) -> Any:
        """The leaves' results (of the last `schedule()` by default)."""
        results = self.result_dict if result_dict is None else result_dict
        return {leaf: results[leaf] for leaf in (runtime_graph or self).all_leaves()}
