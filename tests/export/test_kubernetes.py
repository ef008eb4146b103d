"""`megaservice export k8s`: manifests that pass `kubernetes-validate --strict` and hang together under kustomize."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from megaservice.export import ExportError, ExportOptions, write_kubernetes
from megaservice.export.files import read_secrets_file
from megaservice.pipeline import flow_nodes, parse_pipeline
from tests.export.conftest import PIPELINES, pipelines, run, tool


def export(name: str, directory: Path, options: ExportOptions | None = None) -> list[Path]:
    return write_kubernetes(pipelines()[name], directory, options, source=name).files


def render(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl apply -k DIRECTORY` would send: the kustomization built by kubectl's kustomize."""
    output = run(tool("kubectl"), "kustomize", directory).stdout
    return [document for document in yaml.safe_load_all(output) if document]


def manifests(directory: Path) -> list[dict[str, Any]]:
    """The resources of the export's own files (the Secret is made by the kustomization)."""
    documents = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


@pytest.mark.slow
@pytest.mark.parametrize("name", PIPELINES)
def test_the_manifests_pass_kubernetes_validate_strict(name, tmp_path):
    validate = tool("kubernetes-validate")
    files = [p for p in export(name, tmp_path) if p.suffix == ".yaml" and p.name != "kustomization.yaml"]
    rendered = tmp_path / "rendered" / "all.yaml"  # what `kubectl apply -k` sends, the generated Secret with it
    rendered.parent.mkdir()
    rendered.write_text(run(tool("kubectl"), "kustomize", tmp_path).stdout)
    result = run(validate, "--strict", *files, rendered)
    assert result.stdout.count(" passed for resource ") == len(manifests(tmp_path)) + len(render(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("name", PIPELINES)
def test_every_reference_in_the_kustomization_resolves(name, tmp_path):
    export(name, tmp_path)
    documents = render(tmp_path)
    config_maps = by_kind(documents, "ConfigMap")
    secrets = by_kind(documents, "Secret")
    workloads = by_kind(documents, "Deployment") | by_kind(documents, "StatefulSet")
    for workload in workloads.values():
        pod = workload["spec"]["template"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        for container in pod["spec"]["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
            for entry in container.get("env", []):
                if "valueFrom" in entry:
                    ref = entry["valueFrom"]["secretKeyRef"]
                    assert ref["key"] in secrets[ref["name"]].get("data", {}), ref
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims, mount
                if "subPath" in mount:
                    assert mount["subPath"] in config_maps[volumes[mount["name"]]["configMap"]["name"]]["data"]
            names = {port["name"] for port in container.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                assert port is None or isinstance(port, int) or port in names
    for service in by_kind(documents, "Service").values():
        selected = [w for w in workloads.values() if service["spec"]["selector"].items() <= _pod_labels(w).items()]
        assert len(selected) == 1, service["metadata"]["name"]
        ports = {p["name"] for c in selected[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    for autoscaler in by_kind(documents, "HorizontalPodAutoscaler").values():
        assert autoscaler["spec"]["scaleTargetRef"]["name"] in by_kind(documents, "Deployment")


def _pod_labels(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("name", PIPELINES)
def test_our_containers_are_probed_on_our_routes_and_ask_for_resources(name, tmp_path):
    export(name, tmp_path)
    deployments = by_kind(manifests(tmp_path), "Deployment")
    ours = {
        n: d
        for n, d in deployments.items()
        if d["spec"]["template"]["spec"]["containers"][0]["image"].startswith("megaservice:")
    }
    assert set(ours) == {
        n for n, s in pipelines()[name].services.items() if s.url is None and s.component != "postgres"
    } | {"megaservice"}
    for deployment in ours.values():
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/v1/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/v1/health_check"
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}
        assert pod["securityContext"]["runAsNonRoot"] is True
    for deployment in deployments.values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert "readinessProbe" in container and "livenessProbe" in container, deployment["metadata"]["name"]
        assert "requests" in container["resources"]


@pytest.mark.parametrize("name", PIPELINES)
def test_stateless_services_scale_and_postgresql_is_a_stateful_set_with_its_own_volume(name, tmp_path):
    export(name, tmp_path)
    documents = manifests(tmp_path)
    autoscaled = set(by_kind(documents, "HorizontalPodAutoscaler"))
    stateless = {n for n, s in pipelines()[name].services.items() if s.component not in (None, "postgres")}
    assert autoscaled == stateless | {"megaservice"}
    stateful = by_kind(documents, "StatefulSet")
    if name == "rag-remote":
        assert stateful == {}
        return
    postgres = stateful["postgres"]
    assert postgres["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert by_kind(documents, "Service")[postgres["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    mounts = postgres["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "postgres-data", "mountPath": "/var/lib/postgresql/data"} in mounts


def test_the_password_and_api_keys_come_from_the_secret(tmp_path):
    export("rag-remote", tmp_path)
    text = "".join(p.read_text() for p in tmp_path.glob("*.yaml"))
    for secret in ("s3cret", "sk-not-a-real-key", "hf_not_a_real_token"):
        assert secret not in text
    assert read_secrets_file(tmp_path / "secrets.env")["OPENAI_API_KEY"] == "sk-not-a-real-key"
    llm = by_kind(manifests(tmp_path), "Deployment")["llm"]["spec"]["template"]["spec"]["containers"][0]
    assert {
        "name": "OPENAI_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "megaservice-secrets", "key": "OPENAI_API_KEY"}},
    } in llm["env"]

    export("chatqna", tmp_path / "chatqna")
    retriever = by_kind(manifests(tmp_path / "chatqna"), "Deployment")["retriever"]
    env = retriever["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [entry["name"] for entry in env]
    assert names.index("POSTGRES_PASSWORD") < names.index("PG_CONNECTION_STRING")  # $(VAR) needs it defined first
    assert {
        "name": "PG_CONNECTION_STRING",
        "value": "postgresql://megaservice:$(POSTGRES_PASSWORD)@postgres:5432/megaservice",
    } in env


def test_the_megaservice_reads_its_pipeline_from_the_config_map(tmp_path):
    export("seeds", tmp_path)
    documents = manifests(tmp_path)
    config = by_kind(documents, "ConfigMap")["megaservice-pipeline"]["data"]["pipeline.yaml"]
    inside = parse_pipeline(config, environ={})
    services = set(by_kind(documents, "Service"))
    assert {node.host for node in flow_nodes(inside).values()} <= services
    gateway = by_kind(documents, "Deployment")["megaservice"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["args"][:2] == ["gateway", "/pipeline/pipeline.yaml"]
    assert {
        "name": "megaservice-pipeline",
        "mountPath": "/pipeline/pipeline.yaml",
        "subPath": "pipeline.yaml",
        "readOnly": True,
    } in gateway["volumeMounts"]


def test_a_new_configuration_rolls_the_pods(tmp_path):
    export("chatqna", tmp_path / "a")
    changed = pipelines()["chatqna"].model_copy(deep=True)
    changed.services["llm"].env["LLM_MODEL_ID"] = "another"
    write_kubernetes(changed, tmp_path / "b")

    def annotation(directory: Path, name: str) -> str:
        deployment = by_kind(manifests(directory), "Deployment")[name]
        return deployment["spec"]["template"]["metadata"]["annotations"]["megaservice.export/config"]

    assert annotation(tmp_path / "a", "llm") != annotation(tmp_path / "b", "llm")
    assert annotation(tmp_path / "a", "retriever") == annotation(tmp_path / "b", "retriever")


@pytest.mark.parametrize("name", PIPELINES)
def test_the_same_pipeline_exports_the_same_manifests(name, tmp_path):
    first = {p.name: p.read_bytes() for p in export(name, tmp_path / "a") if p.suffix == ".yaml"}
    second = {p.name: p.read_bytes() for p in export(name, tmp_path / "b") if p.suffix == ".yaml"}
    assert first == second


def test_a_server_on_this_machine_cannot_be_kept_external_in_a_cluster(tmp_path):
    with pytest.raises(ExportError, match="pods cannot reach"):
        export("seeds", tmp_path, ExportOptions(external=frozenset({"ollama"})))
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_a_service_name_kubernetes_refuses_is_refused_before_anything_is_written(tmp_path):
    pipeline = parse_pipeline(
        "name: x\nservices:\n  llm-: {component: llm}\nmegaservice:\n  flow: [llm-]\n", environ={}
    )
    with pytest.raises(ExportError, match=r"services\.llm-: Kubernetes names are lowercase letters"):
        write_kubernetes(pipeline, tmp_path)
    assert list(tmp_path.iterdir()) == []
