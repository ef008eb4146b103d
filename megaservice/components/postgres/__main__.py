"""`python -m megaservice.components.postgres`: the same as `megaservice serve postgres`."""

from megaservice.components._shared.runner import main

__all__: list[str] = []

if __name__ == "__main__":
    main("postgres")
