import ast
import subprocess
import sys
from pathlib import Path

import megaservice

INIT = Path(megaservice.__file__)


def _declared() -> tuple[dict[str, str], dict[str, str], list[str]]:
    """What megaservice/__init__.py declares: its TYPE_CHECKING imports, its lazy map, its __all__."""
    tree = ast.parse(INIT.read_text())
    typed: dict[str, str] = {}
    lazy: dict[str, str] = {}
    exported: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                for alias in statement.names:
                    typed[alias.asname or alias.name] = str(statement.module)
        elif isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "_EXPORTS":
            lazy = ast.literal_eval(node.value)  # type: ignore[arg-type]
        elif isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__all__":
            exported = ast.literal_eval(node.value)
    return typed, lazy, exported


def test_all_the_lazy_map_and_the_type_checking_imports_agree():
    typed, lazy, exported = _declared()
    assert set(exported) - {"__version__"} == set(lazy)
    assert typed == lazy  # same names, from the same modules: what mypy sees is what users get


def test_every_exported_name_resolves_from_its_module():
    _, lazy, _ = _declared()
    for name, module in lazy.items():
        value = getattr(megaservice, name)
        assert value is getattr(sys.modules[module], name), name


def test_an_unknown_name_is_an_attribute_error():
    try:
        megaservice.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("no AttributeError")


def test_importing_the_package_imports_no_framework():
    frameworks = "('fastapi', 'aiohttp', 'pydantic', 'uvicorn')"
    code = f"import sys, megaservice; print(sorted(m for m in {frameworks} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
