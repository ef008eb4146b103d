"""`python -m megaservice.cli`: the `megaservice` command (what `megaservice up` starts its megaservice with)."""

from megaservice.cli.app import main

__all__: list[str] = []

if __name__ == "__main__":
    main()
