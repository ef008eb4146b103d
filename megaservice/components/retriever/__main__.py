"""`python -m megaservice.components.retriever`: the same as `megaservice serve retriever`."""

from megaservice.components._shared.runner import main

__all__: list[str] = []

if __name__ == "__main__":
    main("retriever")
