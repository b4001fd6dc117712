from pathlib import Path

import pytest

# CI clones the repo next to ``shared/``; the real data are a read-only local cache there.
CORTEX_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cortex"


@pytest.fixture(scope="session")
def cortex_dir() -> Path:
    if not (CORTEX_DIR / "cowley2023_v4").is_dir():
        pytest.skip(f"real cortical data not found at {CORTEX_DIR}")
    return CORTEX_DIR.resolve()
