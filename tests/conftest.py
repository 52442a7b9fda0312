import os
from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Oracle caches and W&B files of the test session go to a temporary folder, never into the data folders.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
# The test models are tiny: one thread each is faster than two contending ones, also in the `gvt` subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("gvt-cache")
    previous = os.environ.get("GVT_CACHE_DIR")
    os.environ["GVT_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("GVT_CACHE_DIR", None)
    else:
        os.environ["GVT_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real corpora folder ($GVT_DATA_DIR, default ../shared/data next to the project root); tests that read
    the corpora are skipped, with the reason, where it is missing (they are not part of the package)."""
    from modules.data.corpora import DATA_DIR_VARIABLE, data_dir

    folder = data_dir()
    if not folder.is_dir():
        pytest.skip(f"the real corpora are not at {folder}: set {DATA_DIR_VARIABLE} to the folder holding coco/, "
                    "multi30k/ and mr/ (README, Data) to run this test")
    return folder
