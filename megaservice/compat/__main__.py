"""`python -m megaservice.compat SCRIPT [args]` / `-m MODULE [args]`: run OPEA code on megaservice."""

import runpy
import sys

from megaservice.compat import install


def main(argv: list[str]) -> None:
    """Install the `comps` alias, then run the script or module like `python` would."""
    usage = "usage: python -m megaservice.compat (SCRIPT | -m MODULE) [ARGS...]"
    if not argv:
        raise SystemExit(usage)
    install()
    if argv[0] == "-m":
        if len(argv) < 2:
            raise SystemExit(usage)
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        sys.path.insert(0, str(__import__("pathlib").Path(argv[0]).resolve().parent))
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
