"""`python -m megaservice.components.clip`: the same as `megaservice serve clip`."""

from megaservice.components._shared.runner import main

__all__: list[str] = []

if __name__ == "__main__":
    main("clip")
