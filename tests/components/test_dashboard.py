"""The Grafana dashboard (deploy/grafana/megaservice.json) queries only series that running services export.

Every metric name in its PromQL must be a sample name on `/metrics` of the real services, started
here and sent the requests that make each series move: a renamed series fails this test.
"""

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from megaservice.components.dataprep import DataprepSettings, create_service as dataprep_service
from megaservice.components.dataprep.embedder import load_embedder
from megaservice.components.embedding import EmbeddingSettings, create_service as embedding_service, load_backend
from megaservice.components.embedding.minilm import MODEL_ID, MiniLM
from megaservice.components.guardrails import (
    GuardrailsSettings,
    create_service as guardrails_service,
    load_backend as guardrails_backend,
)
from megaservice.components.retriever import RetrieverSettings, create_service as retriever_service
from megaservice.testing import serve
from megaservice.testing.postgres import EmbeddedPostgres
from tests.components.pgdata import embed
from tests.components.test_metrics_series import wait_ready
from tests.gateway.conftest import QUESTION, run_stack
from tests.scrape import scrape

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "megaservice.json"

_FUNCTIONS = frozenset({"sum", "rate", "increase", "histogram_quantile"})
"""The PromQL functions and aggregations the dashboard uses (any other word in an expression is a metric)."""

_REQUIRED = {
    "http_requests_total",
    "pipeline_node_errors_total",
    "pipeline_node_latency_seconds_bucket",
    "megaservice_request_latency_bucket",
    "megaservice_request_pending",
    "megaservice_first_token_latency_bucket",
    "megaservice_inter_token_latency_bucket",
    "megaservice_pipeline_latency_bucket",
    "megaservice_llm_first_token_latency_bucket",
    "llm_first_token_latency_seconds_bucket",
    "llm_inter_token_latency_seconds_bucket",
    "embedding_texts_total",
    "embedding_batch_size_sum",
    "embedding_batch_size_count",
    "embedding_batch_size_bucket",
    "retrieval_latency_seconds_bucket",
    "retrieval_documents_sum",
    "retrieval_documents_count",
    "dataprep_chunks_embedded_total",
    "dataprep_chunks_total",
    "dataprep_files_total",
    "dataprep_ingest_in_progress",
    "dataprep_failures_total",
    "guardrail_refusals_total",
}
"""What the dashboard must show (issue 18: requests, errors, per-node latency, tokens, the components)."""


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return found


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects: every word left once strings, matchers, ranges and groupings are cut."""
    assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"\b\d+(?:\.\d+)?\b", "", bare)
    return set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare)) - _FUNCTIONS


def test_metric_names_are_what_an_expression_selects():
    expr = 'histogram_quantile(0.99, sum by (node, le) (rate(pipeline_node_latency_seconds_bucket{job=~"$job"}[5m])))'
    assert metric_names(expr) == {"pipeline_node_latency_seconds_bucket"}
    assert metric_names('sum(rate(a_total{x="b c"}[1m])) / sum(rate(b_count[1m]))') == {"a_total", "b_count"}


def test_the_dashboard_is_importable_grafana_json_covering_the_issues_series():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"])
    used = set().union(*map(metric_names, expressions(dashboard)))
    assert used >= _REQUIRED, _REQUIRED - used


@pytest.mark.anyio
@pytest.mark.integration
async def test_every_series_the_dashboard_queries_is_exported_by_a_running_service(
    postgres: EmbeddedPostgres, minilm: MiniLM, upstream_client: None
) -> None:
    used = set().union(*map(metric_names, expressions(json.loads(DASHBOARD.read_text()))))
    exported: set[str] = set()

    def add(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
        exported.update(name for name, _ in samples)

    settings = EmbeddingSettings()
    embedding = embedding_service(settings, load_backend(settings, model=minilm))
    async with run_stack(embedding=embedding.app) as stack:  # gateway, LLM service, embedding (MiniLM)
        await wait_ready(stack.urls["embedding"])
        async with stack.client() as http:
            ask = {"messages": [{"role": "user", "content": QUESTION}], "stream": True}
            assert "4417" in (await http.post("/v1/chat/completions", json=ask)).text
        for name in ("gateway", "llm", "embedding"):
            add(await scrape(stack.url if name == "gateway" else stack.urls[name]))
    async with run_stack(flow=("embedding", "llm"), down=("llm",)) as broken:  # a node that fails: its errors
        async with broken.client() as http:
            assert (await http.post("/v1/chat/completions", json={"messages": QUESTION})).status_code >= 500
        add(await scrape(broken.url))

    rails = GuardrailsSettings.from_env({"GUARDRAILS_BANNED_SUBSTRINGS": "backdoor", "GUARDRAILS_CHECKS": "banned"})
    store = postgres.store_settings(collection=f"dashboard_{uuid.uuid4().hex[:12]}")
    prep = DataprepSettings(store=store)
    services = {
        "guardrails": guardrails_service(rails, guardrails_backend(rails)),
        "dataprep": dataprep_service(prep, embedder=load_embedder(prep, minilm=minilm)),
        "retriever": retriever_service(RetrieverSettings(store=store, model=MODEL_ID)),
    }
    async with serve(services["guardrails"].app) as guard, serve(services["dataprep"].app) as dataprep:
        async with serve(services["retriever"].app) as retriever, httpx.AsyncClient(timeout=60) as http:
            for url in (guard, dataprep, retriever):
                await wait_ready(url)
            refused = await http.post(f"{guard}/v1/guardrails", json={"text": "open the backdoor"})
            assert refused.json()["downstream_black_list"] == [".*"]
            files = [("files", ("safe.txt", b"The launch code is 4417. It is in the blue safe.", "text/plain"))]
            assert (await http.post(f"{dataprep}/v1/dataprep/ingest", files=files)).status_code == 200
            assert (await http.post(f"{dataprep}/v1/dataprep/ingest")).status_code == 400  # a failure
            vector = embed(minilm, ["launch code"])[0].tolist()
            found = await http.post(f"{retriever}/v1/retrieval", json={"text": "code", "embedding": vector})
            assert found.status_code == 200 and found.json()["retrieved_docs"]
            for url in (guard, dataprep, retriever):
                add(await scrape(url))
    assert used <= exported, sorted(used - exported)
