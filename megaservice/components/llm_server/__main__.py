"""`python -m megaservice.components.llm_server`: serve the model server (as `megaservice serve llm-server`)."""

from megaservice.components._shared.runner import main

__all__: list[str] = []

if __name__ == "__main__":
    main("llm-server")
