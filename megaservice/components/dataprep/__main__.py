"""`python -m megaservice.components.dataprep`: the same as `megaservice serve dataprep`."""

from megaservice.components._shared.runner import main

__all__: list[str] = []

if __name__ == "__main__":
    main("dataprep")
