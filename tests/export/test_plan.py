"""The plan of a deployment: each service at its container's name, secrets out of the env, clear refusals."""

import pytest

from megaservice.export import ExportError, ExportOptions, plan_deployment
from megaservice.export.model import Secret
from megaservice.pipeline import flow_nodes, parse_pipeline
from tests.export.conftest import pipelines


def test_the_megaservice_calls_each_flow_node_at_its_container():
    plan = plan_deployment(pipelines()["seeds"])
    inside = parse_pipeline(plan.pipeline_file, "pipeline.yaml", environ={})
    urls = {name: node.endpoint_path() for name, node in flow_nodes(inside).items()}
    assert urls == {
        "guardrail": "http://guardrail:9092/v1/bias",
        "embedding": "http://embedding:6000/v1/embeddings",
        "retriever": "http://retriever:7000/v1/retrieval",
        "ollama": "http://ollama:11434/v1/chat/completions",
    }
    assert inside.megaservice.model == "llama3.2:1b"
    assert inside.megaservice.dataprep == "dataprep"
    assert inside.demo == []


def test_addresses_on_this_machine_become_the_services_with_those_ports():
    chatqna = plan_deployment(pipelines()["chatqna"])
    assert chatqna.container("llm").env["LLM_ENDPOINT"] == "http://llm-server:8008"
    assert chatqna.container("dataprep").env["EMBEDDING_ENDPOINT"] == "http://embedding:6000"
    seeds = plan_deployment(pipelines()["seeds"])
    assert seeds.container("embedding").env["CLIP_EMBEDDING_ENDPOINT"] == "http://clip:6990"


def test_a_default_address_of_a_component_is_rewritten_when_the_pipeline_has_that_port():
    pipeline = parse_pipeline(
        "name: x\nservices:\n"
        "  clip: {component: clip}\n"
        "  embedding: {component: embedding, backend: clip, needs: [clip]}\n"
        "megaservice:\n  flow: [embedding]\n",
        environ={},
    )
    env = plan_deployment(pipeline).container("embedding").env
    assert env["CLIP_EMBEDDING_ENDPOINT"] == "http://clip:6990"  # `megaservice up` relies on its default
    assert "TEI_EMBEDDING_ENDPOINT" not in env  # localhost:8080 is no service here: left to the backend


def test_services_that_store_get_the_pipelines_postgresql_with_the_password_as_a_secret():
    plan = plan_deployment(pipelines()["chatqna"])
    for name in ("retriever", "dataprep"):
        container = plan.container(name)
        assert container.env["PG_CONNECTION_STRING"] == Secret(
            "POSTGRES_PASSWORD", "postgresql://megaservice:{}@postgres:5432/megaservice"
        )
        assert container.needs["postgres"] == "healthy"
    postgres = plan.container("postgres")
    assert postgres.image.startswith("pgvector/pgvector:")
    assert postgres.env["POSTGRES_PASSWORD"] == Secret("POSTGRES_PASSWORD")
    assert plan.secrets == {"POSTGRES_PASSWORD": ""}  # made up when the secrets file is written
    assert plan.init_sql is not None and "CREATE EXTENSION IF NOT EXISTS vector" in plan.init_sql


def test_secret_looking_variables_leave_the_env_and_remote_servers_stay_remote():
    plan = plan_deployment(pipelines()["rag-remote"])
    assert [c.name for c in plan.containers] == ["jaeger", "guard", "embedding", "retriever", "llm", "megaservice"]
    assert plan.secrets == {
        "HF_TOKEN": "hf_not_a_real_token",
        "OPENAI_API_KEY": "sk-not-a-real-key",
        "PG_CONNECTION_STRING": "postgresql://rag:s3cret@db.example.com:5432/rag",
    }
    assert plan.container("retriever").env["PG_CONNECTION_STRING"] == Secret("PG_CONNECTION_STRING")
    llm = plan.container("llm")
    assert llm.env["LLM_ENDPOINT"] == "http://vllm.models.svc:8000"
    assert llm.env["OPENAI_API_KEY"] == Secret("OPENAI_API_KEY")
    assert "vllm" not in llm.needs  # not ours to start or wait for
    assert "s3cret" not in plan.pipeline_file and "sk-not" not in plan.pipeline_file


def test_two_values_of_one_secret_get_a_key_each():
    pipeline = parse_pipeline(
        "name: x\nservices:\n"
        "  a: {component: llm, port: 9000, env: {OPENAI_API_KEY: one}}\n"
        "  b: {component: llm, port: 9001, env: {OPENAI_API_KEY: two}}\n"
        "megaservice:\n  flow: [a, b]\n",
        environ={},
    )
    plan = plan_deployment(pipeline)
    assert plan.secrets == {"B_OPENAI_API_KEY": "two", "OPENAI_API_KEY": "one"}
    assert plan.container("b").env["OPENAI_API_KEY"] == Secret("B_OPENAI_API_KEY")


def test_every_service_sends_its_traces_to_jaeger_under_its_own_name():
    plan = plan_deployment(pipelines()["seeds"])
    for container in plan.containers:
        if container.ours:
            assert container.env["TELEMETRY_ENDPOINT"] == "http://jaeger:4318/v1/traces"
            assert container.env["OTEL_SERVICE_NAME"] == container.name
    untraced = plan_deployment(pipelines()["seeds"], ExportOptions(tracing=False))
    assert "jaeger" not in [c.name for c in untraced.containers]
    assert all("TELEMETRY_ENDPOINT" not in c.env for c in untraced.containers)


def test_an_llm_server_on_this_machine_runs_as_ollama_pulling_the_pipelines_model():
    ollama = plan_deployment(pipelines()["seeds"]).container("ollama")
    assert ollama.image == "ollama/ollama"
    assert [(p.host_port, p.port) for p in ollama.published] == [(8008, 11434)]  # as in the seeds
    assert "ollama pull llama3.2:1b" in ollama.args[0]
    assert ollama.health == ["ollama", "show", "llama3.2:1b"]


def test_an_llm_server_elsewhere_is_called_where_it_is():
    pipeline = pipelines()["seeds"].model_copy(deep=True)
    remote = parse_pipeline(
        "name: seeds\nservices:\n  ollama: {url: 'http://gpu-box:11434', role: llm}\nmegaservice:\n  flow: [ollama]\n",
        environ={},
    )
    pipeline.services["ollama"] = remote.services["ollama"]
    plan = plan_deployment(pipeline)
    assert "ollama" not in [c.name for c in plan.containers]
    assert "url: http://gpu-box:11434" in plan.pipeline_file
    assert "ollama" not in plan.container("megaservice").needs


def test_an_external_server_on_this_machine_is_reached_on_the_docker_host():
    plan = plan_deployment(pipelines()["seeds"], ExportOptions(external=frozenset({"ollama"})))
    assert "ollama" not in [c.name for c in plan.containers]
    assert "url: http://host.docker.internal:8008" in plan.pipeline_file
    assert plan.reaches_host
    with pytest.raises(ExportError, match=r"services\.ollama: .* pods cannot reach"):
        plan_deployment(pipelines()["seeds"], ExportOptions(external=frozenset({"ollama"})), target="kubernetes")


@pytest.mark.parametrize(
    ("services", "options", "message"),
    [
        (
            "  tei: {url: 'http://localhost:8080', role: embedding}\n",
            ExportOptions(),
            r"services\.tei: http://localhost:8080/ is a server on this machine.*--external tei",
        ),
        (
            "  tei: {component: llm, env: {LLM_ENDPOINT: 'http://127.0.0.1:8111'}}\n",
            ExportOptions(),
            r"services\.tei\.env\.LLM_ENDPOINT is http://127\.0\.0\.1:8111: .* no service .* has port 8111",
        ),
        (
            "  tei: {component: retriever}\n",
            ExportOptions(),
            r"services\.tei: a retriever needs PostgreSQL: add a `postgres` service .* or set PG_CONNECTION_STRING",
        ),
        (
            "  tei: {component: retriever, env: {PG_CONNECTION_STRING: 'postgresql://u:p@localhost/db'}}\n",
            ExportOptions(),
            r"services\.tei\.env\.PG_CONNECTION_STRING is on this machine",
        ),
        ("  jaeger: {component: llm}\n", ExportOptions(), r"services\.jaeger: .* its own containers 'jaeger'"),
        (
            "  otel: {component: llm, port: 4318}\n",
            ExportOptions(),
            r"services\.otel: port 4318 on the host is also jaeger's",
        ),
        ("  tei: {component: llm}\n", ExportOptions(external=frozenset({"tei"})), r"--external tei: not a `url:`"),
    ],
)
def test_a_pipeline_that_cannot_run_in_containers_is_refused_saying_what_to_change(services, options, message):
    first = services.split(":", 1)[0].strip()
    pipeline = parse_pipeline(f"name: x\nservices:\n{services}megaservice:\n  flow: [{first}]\n", environ={})
    with pytest.raises(ExportError, match=message):
        plan_deployment(pipeline, options)
