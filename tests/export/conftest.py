"""What the export tests share: the third pipeline (next to the shipped `chatqna` and `seeds`), the validators."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from megaservice.pipeline import Pipeline, load_pipeline, parse_pipeline

REMOTE = """\
# A pipeline whose model servers and database run elsewhere: TEI, vLLM and a PostgreSQL of its own,
# a guardrail, and a flow written as edges.
name: rag-remote
description: "guardrails -> embedding (TEI) -> retriever (external PostgreSQL) -> llm (vLLM)"
services:
  guard:
    component: guardrails
    port: 9090
    env:
      GUARDRAILS_CHECKS: banned
      GUARDRAILS_BANNED_REGEXES: 'card number \\d{16}$'
  embedding:
    component: embedding
    backend: tei
    port: 6000
    env:
      TEI_EMBEDDING_ENDPOINT: http://tei.models.svc:8080
      HF_TOKEN: hf_not_a_real_token
  retriever:
    component: retriever
    port: 7000
    env:
      PG_CONNECTION_STRING: postgresql://rag:s3cret@db.example.com:5432/rag
  llm:
    component: llm
    port: 9000
    needs: [vllm]
    env:
      LLM_ENDPOINT: http://vllm.models.svc:8000
      LLM_MODEL_ID: Qwen/Qwen2.5-0.5B-Instruct
      OPENAI_API_KEY: sk-not-a-real-key
  vllm:
    url: http://vllm.models.svc:8000
    role: llm
megaservice:
  port: 8080
  flow: ["guard -> embedding", "embedding -> retriever", "retriever -> llm"]
"""


def pipelines() -> dict[str, Pipeline]:
    """The three pipelines every export test runs on, loaded as with an empty environment."""
    return {
        "chatqna": load_pipeline("chatqna", environ={}),
        "seeds": load_pipeline("seeds", environ={}),
        "rag-remote": parse_pipeline(REMOTE, "rag-remote.yaml", environ={}),
    }


PIPELINES = list(pipelines())


def tool(name: str) -> str:
    """The path of command-line tool `name`: the venv's first, then PATH's; skipped if absent (failed on CI)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed (see docs/deploy.md: how the exports are checked)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a validator; its output in the assertion message when it fails."""
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(map(str, argv))}\n{result.stdout}\n{result.stderr}"
    return result
