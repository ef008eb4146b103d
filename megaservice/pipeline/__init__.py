"""The pipeline file: one YAML schema that builds the orchestrator, drives `megaservice up` and the deployment export.

model.py     the schema (pydantic): services, the megaservice's flow and routes
loader.py    YAML → `Pipeline`, errors naming the file and line; the shipped files (files/*.yaml)
builder.py   `Pipeline` → `ServiceOrchestrator`
"""

from megaservice.pipeline.builder import build_orchestrator, flow_nodes
from megaservice.pipeline.loader import (
    PipelineFileError,
    demo_paths,
    find_pipeline,
    load_pipeline,
    parse_pipeline,
    shipped_pipelines,
)
from megaservice.pipeline.model import Megaservice, Pipeline, ServiceSpec

__all__ = [
    "Megaservice",
    "Pipeline",
    "PipelineFileError",
    "ServiceSpec",
    "build_orchestrator",
    "demo_paths",
    "find_pipeline",
    "flow_nodes",
    "load_pipeline",
    "parse_pipeline",
    "shipped_pipelines",
]
