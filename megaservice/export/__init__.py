"""Deployment generated from the pipeline file: Docker Compose and Kubernetes (`megaservice export`).

plan.py        pipeline -> containers, secrets, the megaservice container's pipeline file
compose.py     plan -> docker-compose.yaml (+ pipeline.yaml, .env)
kubernetes.py  plan -> manifests and kustomization.yaml (`kubectl apply -k DIR`)
files.py       stable YAML, the secrets file kept across exports
"""

from megaservice.export.compose import compose_document, write_compose
from megaservice.export.kubernetes import kubernetes_documents, write_kubernetes
from megaservice.export.model import Exported, ExportError, ExportOptions, Plan
from megaservice.export.plan import plan_deployment

__all__ = [
    "ExportError",
    "ExportOptions",
    "Exported",
    "Plan",
    "compose_document",
    "kubernetes_documents",
    "plan_deployment",
    "write_compose",
    "write_kubernetes",
]
