#!/usr/bin/env bash
# One command: megaservice vs opea-comps vs the lean baseline, on fake backends.
#   bash benchmarks/run.sh [bench.py options, e.g. --rounds 1 --duration 5]
# Creates (once) .venv with megaservice and .bench/opea-venv with opea-comps 1.5 (its own deps,
# as `pip install opea-comps` gives them). OPEA_PYTHON=/path/to/python reuses an existing one;
# OPEA_PYTHON=none leaves opea-comps out.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q -e '.[testing]'
fi
if [ -z "${OPEA_PYTHON:-}" ]; then
    if [ ! -x .bench/opea-venv/bin/python ]; then
        python3 -m venv .bench/opea-venv
        .bench/opea-venv/bin/pip install -q 'opea-comps==1.5'
    fi
    OPEA_PYTHON=.bench/opea-venv/bin/python
fi
if [ "$OPEA_PYTHON" = none ]; then
    exec .venv/bin/python benchmarks/bench.py "$@"
fi
exec .venv/bin/python benchmarks/bench.py --opea-python "$(cd "$(dirname "$OPEA_PYTHON")" && pwd)/$(basename "$OPEA_PYTHON")" "$@"
