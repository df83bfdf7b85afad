"""Test-wide settings: where the real data lives, and the Triton interpreter on machines without a GPU."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The real data sets live beside the checkout (../shared/data); never copied into the repository.
if not os.environ.get("ATTNSIFT_DATA"):
    candidate = REPO.parent / "shared" / "data"
    if candidate.is_dir():
        os.environ["ATTNSIFT_DATA"] = str(candidate)


# The test world is offline: a hub id that is not in the local cache is an error before any work
# instead of a download attempt (tests that check the online behaviour unset this).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# OpenMP threads (faiss, torch) that wait by spinning steal the CPU from each other on a shared 2-core
# machine (faiss's k-means ran 10-15x slower); passive waiting costs nothing measurable when it is idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


# Triton reads TRITON_INTERPRET when it is first imported; without a GPU its kernels run on CPU under
# the interpreter (float32, small shapes), which is how CI checks the kernels' logic.
if "TRITON_INTERPRET" not in os.environ and not _has_cuda():
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = os.environ.get("ATTNSIFT_DATA")
    if not d or not Path(d).is_dir():
        pytest.skip("real data not found: set ATTNSIFT_DATA to the shared data folder (../shared/data)")
    return Path(d)


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
