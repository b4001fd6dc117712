from pathlib import Path

import pytest

from neurovar.cortex import cache

# CI clones the repo next to ``shared/``; the real data are a read-only local cache there.
CORTEX_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cortex"


@pytest.fixture(scope="session")
def cortex_dir() -> Path:
    if not (CORTEX_DIR / "cowley2023_v4").is_dir():
        pytest.skip(f"real cortical data not found at {CORTEX_DIR}")
    return CORTEX_DIR.resolve()


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """No test may download: any fetch that would reach the network fails loudly."""

    def refuse(url, dest):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(cache, "_download", refuse)
