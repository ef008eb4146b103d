"""`python -m megaservice.components.embedding`: the same as `megaservice serve embedding`."""

from megaservice.components._shared.runner import main

__all__: list[str] = []

if __name__ == "__main__":
    main("embedding")
