"""`megaservice export compose|k8s PIPELINE -o DIR`: the files it wrote on stdout, or why it could not."""

from typer.testing import CliRunner

from megaservice.cli.app import app


def test_export_compose_writes_the_project_and_lists_its_files(tmp_path):
    result = CliRunner().invoke(app, ["export", "compose", "seeds", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        str(tmp_path / name) for name in ("docker-compose.yaml", "pipeline.yaml", "postgres-init.sql", ".env")
    ]


def test_export_k8s_takes_the_image_and_writes_a_kustomization(tmp_path):
    result = CliRunner().invoke(app, ["export", "k8s", "chatqna", "-o", str(tmp_path), "--image", "registry/ms:1"])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "kustomization.yaml") in result.stdout.splitlines()
    assert "image: registry/ms:1" in (tmp_path / "llm.yaml").read_text()


def test_a_pipeline_that_cannot_be_exported_exits_2_saying_why(tmp_path):
    result = CliRunner().invoke(app, ["export", "k8s", "seeds", "-o", str(tmp_path), "--external", "ollama"])
    assert result.exit_code == 2
    assert "megaservice export k8s: services.ollama: " in result.stderr
    assert "pods cannot reach" in result.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nservices:\n  a: {component: nope}\nmegaservice:\n  flow: [a]\n")
    result = CliRunner().invoke(app, ["export", "compose", str(broken), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"{broken}:3: services.a.component: unknown component 'nope'" in result.stderr
    assert not (tmp_path / "out").exists()
