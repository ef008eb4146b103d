"""`python -m megaservice.components.llm`: serve the LLM service (the same as `megaservice serve llm`)."""

from megaservice.components._shared.runner import main

__all__: list[str] = []

if __name__ == "__main__":
    main("llm")
