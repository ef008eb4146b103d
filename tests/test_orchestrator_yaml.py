"""`ServiceOrchestratorWithYaml`: OPEA's YAML pipelines, run by the async orchestrator over real sockets."""

from pathlib import Path

import pytest

from megaservice import ConfigurationError, ServiceOrchestratorWithYaml
from megaservice.testing import FakeGuardrail, FakeService, serve

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("upstream_client")]


def pipeline(tmp_path: Path, services: dict[str, str], flow: list[str] | None = None) -> Path:
    lines = ["opea_micro_services:"]
    for name, url in services.items():
        lines += [f"  {name}:", f"    endpoint: {url}"]
    if flow is not None:
        lines += ["opea_mega_service:", "  mega_flow:", *(f"    - {rule}" for rule in flow)]
    path = tmp_path / "megaservice.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_a_yaml_chain_runs_and_fills_result_dict(tmp_path):
    async with serve(FakeGuardrail(suffix="opea ")) as s1, serve(FakeGuardrail(suffix="project!")) as s2:
        path = pipeline(tmp_path, {"s1": f"{s1}/v1/add", "s2": f"{s2}/v1/add"}, ["s1 >> s2"])
        orchestrator = ServiceOrchestratorWithYaml(yaml_file_path=str(path))
        await orchestrator.schedule(initial_inputs={"text": "Hello, "})
    assert orchestrator.result_dict["s2"]["text"] == "Hello, opea project!"
    assert orchestrator.all_leaves() == ["s2"]
    assert orchestrator.docs["opea_micro_services"]["s1"]["endpoint"] == f"{s1}/v1/add"


async def test_groups_fan_out_and_fan_in(tmp_path):
    fakes = {name: FakeService() for name in ("a", "b", "c", "d", "e")}
    async with serve(fakes["a"]) as a, serve(fakes["b"]) as b, serve(fakes["c"]) as c:
        async with serve(fakes["d"]) as d, serve(fakes["e"]) as e:
            urls = {"a": a, "b": b, "c": c, "d": d, "e": e}
            path = pipeline(tmp_path, urls, ["(a, b) >> c >> (d, e)"])
            orchestrator = ServiceOrchestratorWithYaml(path)
            results, _ = await orchestrator.schedule({"text": "x"})
    assert orchestrator.ind_nodes() == ["a", "b"]
    assert sorted(orchestrator.all_leaves()) == ["d", "e"]
    assert set(results) == {"a", "b", "c", "d", "e"}
    assert fakes["c"].requests == [{"text": "x"}]  # the merged answers of a and b
    assert orchestrator.get_all_final_outputs() == {"d": {"text": "x"}, "e": {"text": "x"}}


async def test_a_bad_pipeline_file_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="not a service"):
        ServiceOrchestratorWithYaml(pipeline(tmp_path, {"s1": "http://h:1/x"}, ["s1 >> s9"]))
    with pytest.raises(ConfigurationError, match="http"):
        ServiceOrchestratorWithYaml(pipeline(tmp_path, {"s1": "not a url"}))
    with pytest.raises(ConfigurationError):
        ServiceOrchestratorWithYaml(pipeline(tmp_path, {"a": "http://h:1/x", "b": "http://h:2/x"}, ["a >> b >> a"]))
    independent = ServiceOrchestratorWithYaml(pipeline(tmp_path, {"a": "http://h:1/x", "b": "http://h:2/x"}))
    assert independent.ind_nodes() == ["a", "b"]
