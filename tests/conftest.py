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
def close_llm_engines_at_the_end():
    """Tests that call LLM stages directly (outside an executor, which tears stages
    down) share engines across the session; close them once at its end."""
    yield
    import sys

    llm_stage = sys.modules.get("synth.llm.stage")
    if llm_stage is not None:
        llm_stage.close_engines()
