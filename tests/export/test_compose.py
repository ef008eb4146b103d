"""`megaservice export compose`: files docker-compose 1.29 and the Compose specification accept, as the seeds ran."""

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from megaservice.export import ExportOptions, write_compose
from megaservice.export.files import read_secrets_file
from megaservice.pipeline import flow_nodes, load_pipeline, parse_pipeline
from tests.export.conftest import PIPELINES, pipelines, run, tool

SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
"""The Compose specification's JSON schema (compose-spec/compose-spec schema/compose-spec.json at 170098b,
Apache-2.0), vendored as test data: the current spec, where docker-compose 1.29 checks against its own older copy."""

SEEDS_DOCKER_PS = {
    # NAMES: (IMAGE, PORTS as host:container) of the seeds' `docker ps` (shared/seeds), and the service here
    "jaeger": ("jaegertracing/all-in-one", ["4317:4317", "4318:4318", "16686:16686"], "jaeger"),
    "retriever-pgvector": ("opea/retriever", ["7000:7000"], "retriever"),
    "clip-embedding-server": ("opea/embedding", ["10203:6000"], "embedding"),
    "multimodal-clip-embedding-server": ("opea/embedding-multimodal-clip", ["6990:6990"], "clip"),
    "guardrails-bias-detection-server": ("opea/guardrails-bias-detection", ["9092:9092"], "guardrail"),
    "pgvector-db": ("pgvector/pgvector", ["5432:5432"], "postgres"),
    "ollama-server": ("ollama/ollama", ["8008:11434"], "ollama"),
}


def export(name: str, directory: Path, options: ExportOptions | None = None) -> dict[str, Any]:
    write_compose(pipelines()[name], directory, options, source=name)
    return yaml.safe_load((directory / "docker-compose.yaml").read_text())


@pytest.mark.parametrize("name", PIPELINES)
def test_the_compose_file_follows_the_compose_specification(name, tmp_path):
    document = export(name, tmp_path)
    jsonschema.Draft7Validator(SCHEMA).validate(document)
    assert "name" not in document and "include" not in document  # docker-compose 1.29 refuses both
    assert "version" not in document  # obsolete in the specification


@pytest.mark.slow
@pytest.mark.parametrize("name", PIPELINES)
def test_docker_compose_accepts_the_file_and_reads_the_secrets_from_env(name, tmp_path):
    docker_compose = tool("docker-compose")  # Debian's 1.29: validates and interpolates, needs no engine
    export(name, tmp_path)
    resolved = yaml.safe_load(run(docker_compose, "config", cwd=tmp_path).stdout)
    secrets = read_secrets_file(tmp_path / ".env")
    for service in resolved["services"].values():
        assert "${" not in json.dumps(service.get("environment", {}))
    if name == "rag-remote":
        env = resolved["services"]["retriever"]["environment"]
        assert env["PG_CONNECTION_STRING"] == "postgresql://rag:s3cret@db.example.com:5432/rag"
        assert resolved["services"]["llm"]["environment"]["OPENAI_API_KEY"] == "sk-not-a-real-key"
        assert resolved["services"]["guard"]["environment"]["GUARDRAILS_BANNED_REGEXES"] == "card number \\d{16}$$"
    else:
        password = secrets["POSTGRES_PASSWORD"]
        assert len(password) >= 24
        assert resolved["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == password
        pg = f"postgresql://megaservice:{password}@postgres:5432/megaservice"
        assert resolved["services"]["retriever"]["environment"]["PG_CONNECTION_STRING"] == pg


def test_the_seeds_compose_runs_the_services_of_the_seeds_docker_ps(tmp_path):
    services = export("seeds", tmp_path)["services"]
    assert set(services) == {service for _, _, service in SEEDS_DOCKER_PS.values()} | {"megaservice", "dataprep"}
    # dataprep is in seeds.yaml (it ingests for the chat page); the seeds' listing ingested some other way
    for image, ports, service in SEEDS_DOCKER_PS.values():
        if not image.startswith("opea/"):  # OPEA's images are ours here: megaservice serve NAME
            assert services[service]["image"].split(":")[0] == image
        container_ports = {p.rsplit(":", 1)[1] for p in ports}
        assert {p.rsplit(":", 1)[1] for p in services[service]["ports"]} == container_ports
    assert "8008:11434" in services["ollama"]["ports"]
    assert services["embedding"]["command"][:2] == ["serve", "embedding"]
    assert services["embedding"]["environment"]["CLIP_EMBEDDING_ENDPOINT"] == "http://clip:6990"
    assert services["embedding"]["depends_on"]["clip"] == {"condition": "service_healthy"}
    assert services["guardrail"]["command"][:2] == ["serve", "bias"]


@pytest.mark.parametrize("name", PIPELINES)
def test_every_service_waits_for_what_it_needs_to_be_healthy(name, tmp_path):
    services = export(name, tmp_path)["services"]
    for service_name, service in services.items():
        assert service["restart"] == "unless-stopped"
        for needed, condition in service.get("depends_on", {}).items():
            expected = "service_started" if needed == "jaeger" else "service_healthy"
            assert condition == {"condition": expected}, (service_name, needed)
            if expected == "service_healthy":
                assert "healthcheck" in services[needed], needed
        if service["image"].startswith("megaservice:"):
            test = service["healthcheck"]["test"]
            port = service["command"][service["command"].index("--port") + 1]
            assert test[:3] == ["CMD", "python", "-c"]
            assert f"http://127.0.0.1:{port}/v1/ready" in test[3]
            assert service["environment"]["TELEMETRY_ENDPOINT"] == "http://jaeger:4318/v1/traces"
    gateway = services["megaservice"]
    assert gateway["command"][:2] == ["gateway", "/pipeline/pipeline.yaml"]
    assert "./pipeline.yaml:/pipeline/pipeline.yaml:ro" in gateway["volumes"]
    flow = pipelines()[name].megaservice.nodes()
    assert [n for n in flow if n in services] == [n for n in gateway["depends_on"] if n in flow]


@pytest.mark.parametrize("name", PIPELINES)
def test_the_megaservice_container_calls_the_flow_at_compose_service_names(name, tmp_path):
    services = export(name, tmp_path)["services"]
    inside = load_pipeline(tmp_path / "pipeline.yaml", environ={})
    for node_name, node in flow_nodes(inside).items():
        host = node.host
        assert host in services or "." in host, (node_name, host)  # a container, or a server elsewhere


def test_postgresql_keeps_its_data_on_a_named_volume(tmp_path):
    document = export("chatqna", tmp_path)
    postgres = document["services"]["postgres"]
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"]
    assert "postgres-data" in document["volumes"]
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert (tmp_path / "postgres-init.sql").read_text() == "CREATE EXTENSION IF NOT EXISTS vector;\n"


def test_secrets_stay_out_of_the_compose_file_and_the_password_survives_a_new_export(tmp_path):
    export("rag-remote", tmp_path)
    text = (tmp_path / "docker-compose.yaml").read_text() + (tmp_path / "pipeline.yaml").read_text()
    for secret in ("s3cret", "sk-not-a-real-key", "hf_not_a_real_token"):
        assert secret not in text
    assert "${OPENAI_API_KEY:-}" in text
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0

    export("chatqna", tmp_path / "chatqna")
    first = read_secrets_file(tmp_path / "chatqna" / ".env")
    (tmp_path / "chatqna" / ".env").write_text((tmp_path / "chatqna" / ".env").read_text() + "EXTRA=kept\n")
    export("chatqna", tmp_path / "chatqna")
    again = read_secrets_file(tmp_path / "chatqna" / ".env")
    assert again["POSTGRES_PASSWORD"] == first["POSTGRES_PASSWORD"]
    assert again["EXTRA"] == "kept"
    assert again["COMPOSE_PROJECT_NAME"] == "chatqna"


@pytest.mark.parametrize("name", PIPELINES)
def test_the_same_pipeline_exports_the_same_bytes(name, tmp_path):
    export(name, tmp_path / "a")
    export(name, tmp_path / "b")
    for file in ("docker-compose.yaml", "pipeline.yaml"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_a_server_kept_on_the_host_is_reached_through_host_docker_internal(tmp_path):
    services = export("seeds", tmp_path, ExportOptions(external=frozenset({"ollama"})))["services"]
    assert "ollama" not in services
    assert services["megaservice"]["extra_hosts"] == ["host.docker.internal:host-gateway"]
    inside = parse_pipeline((tmp_path / "pipeline.yaml").read_text(), environ={})
    assert str(inside.services["ollama"].url) == "http://host.docker.internal:8008/"


def test_dollar_signs_in_the_pipeline_reach_the_container_literally(tmp_path):
    document = export("rag-remote", tmp_path)
    assert document["services"]["guard"]["environment"]["GUARDRAILS_BANNED_REGEXES"] == "card number \\d{16}$$"
    ollama = export("seeds", tmp_path / "seeds")["services"]["ollama"]
    assert "wait $$server" in ollama["command"][0]
