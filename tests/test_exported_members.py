import subprocess
import sys

import megaservice


def test_every_exported_name_resolves():
    for name in megaservice.__all__:
        assert getattr(megaservice, name) is not None, name


def test_dir_lists_exactly_the_public_api():
    assert [n for n in dir(megaservice) if not n.startswith("_")] == sorted(
        n for n in megaservice.__all__ if not n.startswith("_")
    )


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
