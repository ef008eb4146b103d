"""`megaservice gateway PIPELINE`: the megaservice of a pipeline file, as its own process."""

import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from megaservice.cli import app
from megaservice.testing import unused_url


def test_an_unknown_pipeline_is_refused_naming_it():
    result = CliRunner().invoke(app, ["gateway", "no-such-pipeline"])
    assert result.exit_code == 2
    assert "no-such-pipeline" in result.output


@pytest.mark.slow
def test_it_serves_the_pipelines_megaservice_on_the_port_given(tmp_path):
    pipeline = tmp_path / "mine.yaml"
    pipeline.write_text(
        "name: mine\nservices:\n  llm: {url: 'http://127.0.0.1:9', role: llm}\nmegaservice:\n  flow: [llm]\n"
    )
    url = unused_url()
    port = url.rsplit(":", 1)[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from megaservice.cli import main; main()",
            "gateway",
            str(pipeline),
            "--port",
            port,
            "--host",
            "127.0.0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        models = None
        for _ in range(300):
            try:
                models = httpx.get(f"{url}/v1/models", timeout=1).json()
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    break
                time.sleep(0.05)
        assert models is not None, process.stdout.read().decode() if process.poll() is not None else "no answer"
        assert [m["id"] for m in models["data"]] == ["mine"]
        down = httpx.post(f"{url}/v1/chat/completions", json={"messages": "hi"}, timeout=10)
        assert down.status_code == 502 and down.json()["node"] == "llm"
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()
