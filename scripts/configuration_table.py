"""Rewrite the table of environment variables in docs/configuration.md from the settings classes.

    python scripts/configuration_table.py          # rewrite it
    python scripts/configuration_table.py --check  # exit 1 if it is out of date

Every module of the package is imported (those of extras that are not installed are skipped), so
every settings class is found; `tests/test_settings.py` checks the same table.
"""

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

import megaservice
from megaservice.settings_docs import markdown_table, settings_classes

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
BEGIN, END = "<!-- variables: begin -->\n", "<!-- variables: end -->"


def main() -> int:
    """Rewrite (or check) the table; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if the table is out of date")
    args = parser.parse_args()
    for info in pkgutil.walk_packages([str(Path(megaservice.__file__).parent)], "megaservice."):
        try:
            importlib.import_module(info.name)
        except ImportError as exc:
            if exc.name is None or exc.name.startswith("megaservice"):
                raise
    text = DOCS.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    updated = head + BEGIN + markdown_table(settings_classes()) + END + tail
    if args.check:
        return 0 if updated == text else 1
    DOCS.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
