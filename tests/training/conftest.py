import pytest


@pytest.fixture
def restore_env(monkeypatch):
    """seed_everything sets PL_GLOBAL_SEED and PL_SEED_WORKERS in os.environ: undo that after the test."""
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)
    return monkeypatch
