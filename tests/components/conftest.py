import pytest

from megaservice.components.embedding.minilm import MiniLM


@pytest.fixture(scope="session")
def minilm() -> MiniLM:
    """The packaged MiniLM, loaded once for the whole session (every in-process embedding test shares it)."""
    model = MiniLM()
    model.load()
    return model


# TEMPORARY (comp-dataprep): until comp-store's session fixture lands here; then this one goes.
@pytest.fixture(scope="session")
def pg_store_settings(tmp_path_factory: pytest.TempPathFactory):
    """The session's embedded PostgreSQL (started once, held by a lease), as `StoreSettings` of its data directory."""
    from megaservice.components._store import StoreSettings
    from megaservice.components.postgres.embedded import join_or_start

    data_dir = tmp_path_factory.mktemp("pgdata")
    lease = join_or_start(data_dir, timeout=120.0, idle_stop=2.0)
    yield StoreSettings(data_dir=data_dir, collection="unused")
    lease.release()
