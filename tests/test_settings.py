import ast
import dataclasses
import importlib
import pkgutil
import re
from pathlib import Path
from typing import ClassVar

import pytest

import megaservice
from megaservice.exceptions import ConfigurationError
from megaservice.limits import InputLimits, Limits
from megaservice.resilience import CircuitBreaker, Retry, Timeout
from megaservice.settings import (
    FALSE_WORDS,
    TRUE_WORDS,
    EnvSettings,
    Settings,
    node_prefix,
    parse_bool,
    variable,
)
from megaservice.settings_docs import describe, markdown_table, settings_classes

PACKAGE = Path(megaservice.__file__).parent
DOCS = PACKAGE.parent / "docs" / "configuration.md"


@dataclasses.dataclass(frozen=True, slots=True)
class Sample(EnvSettings):
    env_prefix: ClassVar[str] = "SAMPLE_"

    flag: bool = variable("FLAG", False, help="a switch")
    count: int | None = variable("COUNT", 3, zero_off=True, minimum=0, help="a count")
    ratio: float = variable("RATIO", 0.5, minimum=0, help="a ratio")
    names: tuple[str, ...] = variable("NAMES", (), help="a list")
    endpoint: str = variable("ENDPOINT", "http://localhost:8080", aliases=("OTHER_ENDPOINT",), help="a URL")
    token: str | None = variable("TOKEN", None, secret=True, help="a secret", parse=lambda t: t if t != "x" else int(t))


def test_unset_and_blank_variables_keep_the_defaults():
    assert Sample.from_env({}) == Sample()
    assert Sample.from_env({"SAMPLE_COUNT": "  ", "SAMPLE_FLAG": ""}) == Sample()


def test_values_are_parsed_by_the_field_type():
    settings = Sample.from_env(
        {"SAMPLE_FLAG": "Yes", "SAMPLE_COUNT": "0", "SAMPLE_RATIO": "2.5", "SAMPLE_NAMES": " a, b ,,c"}
    )
    assert settings == Sample(flag=True, count=None, ratio=2.5, names=("a", "b", "c"))


def test_an_alias_is_read_when_the_name_is_unset():
    assert Sample.from_env({"OTHER_ENDPOINT": "http://x"}).endpoint == "http://x"
    assert Sample.from_env({"OTHER_ENDPOINT": "http://x", "SAMPLE_ENDPOINT": "http://y"}).endpoint == "http://y"


def test_one_set_of_boolean_words():
    for word in TRUE_WORDS | {w.upper() for w in TRUE_WORDS}:
        assert parse_bool("X", word) is True
    for word in FALSE_WORDS | {w.upper() for w in FALSE_WORDS}:
        assert parse_bool("X", word) is False
    with pytest.raises(ConfigurationError, match=r"X must be one of .*got 'maybe'"):
        parse_bool("X", "maybe")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SAMPLE_FLAG": "maybe"}, "SAMPLE_FLAG must be one of"),
        ({"SAMPLE_COUNT": "three"}, "SAMPLE_COUNT must be an integer, got 'three'"),
        ({"SAMPLE_COUNT": "-1"}, "SAMPLE_COUNT must be at least 0"),
        ({"SAMPLE_RATIO": "lots"}, "SAMPLE_RATIO must be a number"),
        ({"SAMPLE_TOKEN": "x"}, r"SAMPLE_TOKEN must be .*got \(hidden\)"),
        ({"MEGASERVICE_RETRIES": "-1"}, "MEGASERVICE_RETRIES must be a whole number of retries"),
    ],
)
def test_an_invalid_value_names_the_variable(environ, message):
    with pytest.raises(ConfigurationError, match=message):
        Sample.from_env(environ)
        Settings.from_env(environ)


def test_a_prefix_and_a_base_select_the_variables_of_one_node():
    environ = {"MEGASERVICE_NODE_EMBEDDING_TOTAL_TIMEOUT": "5", "MEGASERVICE_TOTAL_TIMEOUT": "7"}
    settings = Settings.from_env(environ)
    assert settings.timeout.total == 7
    node = settings.node("embedding/MicroService", timeout=Timeout(connect=1))
    assert node.timeout == Timeout(connect=1, total=5)
    assert settings.node("retriever/MicroService").timeout.total == 7
    assert node_prefix("opea_service@embedding/MicroService") == "MEGASERVICE_NODE_OPEA_SERVICE_EMBEDDING_"


def test_the_breaker_is_off_unless_set_and_zero_turns_it_off_per_node():
    assert Settings.from_env({}).breaker is None
    settings = Settings.from_env({"MEGASERVICE_BREAKER_FAILURES": "3", "MEGASERVICE_NODE_LLM_BREAKER_FAILURES": "0"})
    assert settings.breaker == CircuitBreaker(failures=3)
    assert settings.node("llm").breaker is None
    assert settings.node("rerank").breaker == CircuitBreaker(failures=3)
    assert Settings.from_env({"MEGASERVICE_BREAKER_RESET": "2"}).breaker == CircuitBreaker(reset_after=2)


def test_process_settings_come_from_one_environment():
    environ = {
        "MEGASERVICE_MAX_INFLIGHT": "0",
        "MEGASERVICE_API_KEYS": "k1, k2",
        "MEGASERVICE_MAX_TOKENS": "4096",
        "MEGASERVICE_RETRIES": "2",
        "MEGASERVICE_MAX_RESPONSE_BYTES": "1024",
        "MEGASERVICE_ALLOW_PRIVATE_URLS": "on",
        "MEGASERVICE_GC_TUNING": "off",
        "MEGASERVICE_NODE_X_RETRIES": "1",
    }
    settings = Settings.from_env(environ)
    assert settings.limits == Limits(max_inflight=None, api_keys=("k1", "k2"))
    assert settings.input_limits == InputLimits(max_tokens=4096)
    assert settings.retry == Retry(attempts=3)
    assert settings.client.max_response_bytes == 1024
    assert settings.images.allow_private_urls is True
    assert settings.gc_tuning is False
    assert settings.node("x").retry == Retry(attempts=2)
    assert Settings() == Settings.from_env({})


def _package_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages([str(PACKAGE)], "megaservice.")]


def _import_all() -> None:
    for name in _package_modules():
        try:
            importlib.import_module(name)
        except ImportError as exc:  # a module of an optional extra that is not installed
            if exc.name is None or exc.name.startswith("megaservice"):
                raise


def test_docs_list_every_variable_with_its_default():
    _import_all()
    text = DOCS.read_text()
    begin, end = "<!-- variables: begin -->\n", "<!-- variables: end -->"
    assert begin in text and end in text
    table = text[text.index(begin) + len(begin) : text.index(end)]
    assert table == markdown_table(settings_classes()), "regenerate with: python scripts/configuration_table.py"


def test_a_variable_two_components_read_is_listed_with_each_ones_description_whatever_the_order():
    from megaservice.components.embedding import EmbeddingSettings
    from megaservice.components.llm import LLMSettings

    table = markdown_table([LLMSettings, EmbeddingSettings])
    assert table == markdown_table([EmbeddingSettings, LLMSettings])
    (row,) = [line for line in table.splitlines() if line.startswith("| `OPENAI_API_KEY` |")]
    for component, cls in (("embedding", EmbeddingSettings), ("llm", LLMSettings)):
        (described,) = [r for r in describe(cls) if r.name == "OPENAI_API_KEY"]
        assert f"`{component}`: {described.help}" in row


def test_no_other_module_reads_the_environment():
    readers = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "settings.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb", "putenv"):
                readers.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "os"
                and any(alias.name in ("environ", "getenv", "environb") for alias in node.names)
            ):
                readers.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert readers == []


def test_no_module_reads_the_environment_at_import(tmp_path):
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "def ours():\n"
        "    return 'megaservice' in sys._getframe(2).f_code.co_filename\n"
        "class Spy(dict):\n"
        "    def __getitem__(self, k):\n"
        "        if ours(): raise SystemExit('read ' + k)\n"
        "        return dict.__getitem__(self, k)\n"
        "    def get(self, k, d=None):\n"
        "        if ours(): raise SystemExit('read ' + k)\n"
        "        return dict.get(self, k, d)\n"
        "os.environ = Spy(os.environ)\n"
        f"for name in {_package_modules()!r}:\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ImportError:\n"
        "        pass\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout.strip().splitlines()[-1:] == ["ok"], result.stdout + result.stderr


def test_variable_names_follow_one_spelling():
    _import_all()
    for cls in settings_classes():
        for item in dataclasses.fields(cls):  # type: ignore[arg-type]  # every settings class is a dataclass
            meta = item.metadata.get("megaservice.env")
            if meta is not None:
                assert re.fullmatch(r"[A-Z][A-Z0-9_]*", meta.name), (cls, meta.name)
