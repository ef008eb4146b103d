from megaservice.components._shared.runner import main

if __name__ == "__main__":  # not on import: tests and docs/configuration.md import every module
    main("bias")
