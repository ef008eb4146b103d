import pytest

from megaservice.components.embedding.minilm import MiniLM


@pytest.fixture(scope="session")
def minilm() -> MiniLM:
    """The packaged MiniLM, loaded once for the whole session (every in-process embedding test shares it)."""
    model = MiniLM()
    model.load()
    return model
