import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared datasets folder, from PARTLEARN_DATA (set by .ci/run); skip when absent."""
    root = os.environ.get("PARTLEARN_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("PARTLEARN_DATA is not set to the shared data folder (.ci/run sets it)")
    return Path(root)
