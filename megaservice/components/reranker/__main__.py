"""`python -m megaservice.components.reranker`: the same as `megaservice serve reranker`."""

from megaservice.components._shared.runner import main

__all__: list[str] = []

if __name__ == "__main__":
    main("reranker")
