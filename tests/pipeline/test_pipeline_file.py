"""The pipeline file: the shipped ones load; a broken one is refused naming the file, the line and the problem."""

import pytest

from megaservice import ServiceType
from megaservice.components import COMPONENTS, backend_name, backends
from megaservice.exceptions import ConfigurationError
from megaservice.pipeline import (
    PipelineFileError,
    build_orchestrator,
    demo_paths,
    find_pipeline,
    load_pipeline,
    parse_pipeline,
    shipped_pipelines,
)

GOOD = """\
name: small
services:
  embedding: {component: embedding}
  retriever:
    component: retriever
    needs: [postgres]
  postgres: {component: postgres}
  llm:
    component: llm
    env: {LLM_ENDPOINT: "http://127.0.0.1:8008", STREAM: true}
megaservice:
  flow: [embedding, retriever, llm]
"""


def test_the_shipped_pipelines_load_with_their_default_ports():
    assert set(shipped_pipelines()) >= {"chatqna", "seeds"}
    chatqna = load_pipeline("chatqna", environ={})
    ports = {name: spec.port for name, spec in chatqna.services.items() if spec.port is not None}
    assert ports == {
        "postgres": 5430,
        "dataprep": 5000,
        "embedding": 6000,
        "retriever": 7000,
        "reranker": 8000,
        "llm-server": 8008,
        "llm": 9000,
        "guardrail": 9092,
    }
    assert chatqna.megaservice.port == 8888
    assert chatqna.start_order().index("postgres") < chatqna.start_order().index("retriever")
    seeds = load_pipeline("seeds", environ={"LLM_ENDPOINT": "http://gpu-box:11434"})
    assert seeds.services["ollama"].base_url() == "http://gpu-box:11434"
    assert seeds.services["clip"].port == 6990
    assert load_pipeline("seeds", environ={}).services["ollama"].base_url() == "http://localhost:8008"


def test_a_pipeline_builds_its_orchestrator():
    pipeline = parse_pipeline(GOOD)
    orchestrator = build_orchestrator(pipeline)
    nodes = orchestrator.services
    assert list(nodes) == ["embedding/MicroService", "retriever/MicroService", "llm/MicroService"]
    assert nodes["embedding/MicroService"].endpoint_path() == "http://127.0.0.1:6000/v1/embeddings"
    assert nodes["llm/MicroService"].endpoint_path() == "http://127.0.0.1:9000/v1/chat/completions"
    assert nodes["llm/MicroService"].service_type == ServiceType.LLM
    assert orchestrator.downstream("embedding/MicroService") == ["retriever/MicroService"]
    assert pipeline.services["llm"].env == {"LLM_ENDPOINT": "http://127.0.0.1:8008", "STREAM": "true"}


def test_a_url_server_is_a_node_at_its_address():
    pipeline = parse_pipeline(
        "name: x\nservices:\n  ollama: {url: 'http://h:11434', role: llm}\nmegaservice:\n  flow: [ollama]\n"
    )
    node = build_orchestrator(pipeline).services["ollama/MicroService"]
    assert node.endpoint_path() == "http://h:11434/v1/chat/completions"
    assert pipeline.start_order() == []


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (("component: retriever", "component: retriver"), 5, "unknown component 'retriver'"),
        (("needs: [postgres]", "needs: [postgress]"), 6, "needs names unknown services: postgress"),
        (("flow: [embedding, retriever, llm]", "flow: [embedding, retriever, llm, ghost]"), 12, "'ghost'"),
        (
            ("flow: [embedding, retriever, llm]", 'flow: ["embedding -> llm", "llm -> embedding"]'),
            12,
            "cycle: llm -> embedding -> llm",
        ),
        (("flow: [embedding, retriever, llm]", "flow: [embedding, postgres]"), 12, "cannot be a node of the flow"),
        (("  postgres: {component: postgres}", "  postgres: {component: postgres, port: 6000}"), None, "port 6000"),
        (("  embedding: {component: embedding}", "  embedding: {component: embedding, port: 0}"), 3, "greater than"),
        (("  embedding: {component: embedding}", "  embedding: {component: embedding, colour: red}"), 3, "colour"),
        (("  embedding: {component: embedding}", "  embedding: {component: embedding"), None, "not valid YAML"),
    ],
)
def test_a_broken_pipeline_is_refused_naming_the_line_and_the_problem(change, line, message):
    with pytest.raises(PipelineFileError) as refused:
        parse_pipeline(GOOD.replace(*change), "small.yaml")
    text = str(refused.value)
    assert message in text
    assert text.startswith("small.yaml:")
    if line is not None:
        assert text.startswith(f"small.yaml:{line}:"), text


def test_an_unknown_component_is_refused_listing_each_known_one_once_sorted():
    with pytest.raises(PipelineFileError) as refused:
        parse_pipeline(GOOD.replace("component: retriever", "component: retriver"), "small.yaml")
    known = str(refused.value).split("the components are: ", 1)[1].split(", ")
    assert "postgres" in known and "retriever" in known
    assert known == sorted(set(known))


def test_the_shipped_chatqnas_chunks_fit_the_embedding_model_so_dataprep_does_not_warn():
    from megaservice.components.dataprep import DataprepSettings
    from megaservice.components.dataprep.service import long_chunk_warning
    from megaservice.components.embedding.minilm import MAX_TOKENS

    settings = DataprepSettings.from_env(load_pipeline("chatqna").services["dataprep"].env)
    assert (settings.chunk_size, settings.chunk_overlap) == (800, 80)
    assert long_chunk_warning(settings.chunk_size, "all-MiniLM-L6-v2", MAX_TOKENS) is None
    default = DataprepSettings.from_env({})  # OPEA's default stays the component's
    assert "CHUNK_SIZE=800 fits" in str(long_chunk_warning(default.chunk_size, "all-MiniLM-L6-v2", MAX_TOKENS))


def test_an_unknown_pipeline_names_the_shipped_ones():
    with pytest.raises(Exception, match="chatqna"):
        load_pipeline("no-such-pipeline")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            GOOD.replace("  llm:\n", "  retriever: {component: retriever, port: 7100}\n  llm:\n"),
            8,
            "services.retriever",
        ),
        (GOOD + "services:\n  other: {component: embedding}\n", 13, "services"),
        (GOOD.replace("component: retriever", "component: retriever\n    component: reranker"), 6, "component"),
    ],
)
def test_a_key_given_twice_is_refused_naming_both_lines(text, line, message):
    with pytest.raises(PipelineFileError) as refused:
        parse_pipeline(text, "small.yaml")
    first = {"services.retriever": 4, "services": 2, "component": 5}[message]
    path = "services.retriever.component" if message == "component" else message
    assert str(refused.value) == f"small.yaml:{line}: {path} is defined twice (first at line {first})"


def test_an_unknown_backend_is_refused_naming_the_line_the_component_and_its_backends():
    text = GOOD.replace("  embedding: {component: embedding}", "  embedding: {component: embedding, backend: nosuch}")
    with pytest.raises(PipelineFileError) as refused:
        parse_pipeline(text, "small.yaml")
    assert str(refused.value) == (
        "small.yaml:3: services.embedding.backend: unknown embedding backend 'nosuch'; "
        "the backends are: local, tei, openai, sentence-transformers, clip"
    )
    assert parse_pipeline(text, "small.yaml", check_backends=False).services["embedding"].backend == "nosuch"


@pytest.mark.parametrize("backend", ["tei", "OPEA_TEI_EMBEDDING", "Local"])
def test_a_backend_the_component_takes_is_accepted_opeas_names_too(backend):
    text = GOOD.replace(
        "  embedding: {component: embedding}", f"  embedding: {{component: embedding, backend: {backend}}}"
    )
    assert parse_pipeline(text, "small.yaml").services["embedding"].backend == backend


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_every_component_names_its_backends_and_accepts_each(component):
    assert backends(component)
    for name in backends(component):
        backend_name(component, name)
    with pytest.raises(ConfigurationError):
        backend_name(component, "nosuch")


def test_a_service_named_twice_in_a_chain_is_refused_naming_it_at_its_second_place():
    text = GOOD.replace(
        "flow: [embedding, retriever, llm]", "flow:\n    - embedding\n    - retriever\n    - embedding\n"
    )
    with pytest.raises(PipelineFileError) as refused:
        parse_pipeline(text, "small.yaml")
    assert str(refused.value).startswith(
        "small.yaml:15: megaservice.flow names 'embedding' twice (items 1 and 3); a chain names each service once"
    )


def test_a_flow_cycle_is_refused_naming_its_nodes_at_the_edge_that_closes_it():
    edges = '\n    - "embedding -> retriever"\n    - "retriever -> llm"\n    - "llm -> embedding"\n'
    with pytest.raises(PipelineFileError) as refused:
        parse_pipeline(GOOD.replace(" [embedding, retriever, llm]\n", edges), "small.yaml")
    assert str(refused.value) == (
        "small.yaml:15: megaservice.flow has a cycle: llm -> embedding -> retriever -> llm"
        " (closed by 'llm -> embedding')"
    )


def test_a_needs_cycle_is_refused_naming_its_services_at_the_needs_that_closes_it():
    text = GOOD.replace("  postgres: {component: postgres}", "  postgres: {component: postgres, needs: [retriever]}")
    with pytest.raises(PipelineFileError) as refused:
        parse_pipeline(text, "small.yaml")
    assert str(refused.value) == (
        "small.yaml:7: services.postgres.needs makes a cycle: postgres -> retriever -> postgres"
    )


def test_a_copy_of_a_shipped_pipeline_keeps_the_shipped_demo_corpus(tmp_path):
    copy = tmp_path / "my.yaml"
    copy.write_text(find_pipeline("chatqna").read_text())
    assert demo_paths(load_pipeline(copy), copy) == [(find_pipeline("chatqna").parent / "corpus").resolve()]
    (tmp_path / "corpus").mkdir()  # a corpus next to the file is the one its `demo` means
    assert demo_paths(load_pipeline(copy), copy) == [(tmp_path / "corpus").resolve()]


def test_a_demo_entry_that_is_nowhere_is_refused_naming_its_line_and_the_way_out(tmp_path):
    copy = tmp_path / "my.yaml"
    copy.write_text(find_pipeline("chatqna").read_text().replace("demo: [corpus]", "demo:\n  - corpus\n  - my-docs"))
    with pytest.raises(PipelineFileError) as refused:
        demo_paths(load_pipeline(copy), copy)
    text = str(refused.value)
    assert text.startswith(f"{copy}:51: demo: 'my-docs' is not next to this file ({tmp_path / 'my-docs'})"), text
    assert "--no-demo" in text
