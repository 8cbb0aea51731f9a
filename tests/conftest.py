import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SYNTH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared test data not found at {SHARED_DATA} (set SYNTH_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def llm_engines_shared_by_the_session():
    """Runs tear their stages down, which closes engines; the tests keep them open
    across runs instead (one start per engine per session), closed once at the end."""
    from synth.llm.stage import engines_kept_open

    with engines_kept_open():
        yield
