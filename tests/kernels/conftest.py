"""Kernel tests: Triton runs in its CPU interpreter here.

Triton reads TRITON_INTERPRET when ``triton`` and each ``@triton.jit`` module are first imported,
so the variable must be set before anything in the pytest process imports triton. Setting it here
works when tests/kernels is collected first or alone; for the whole suite the same line must sit at
the top of the root tests/conftest.py (otherwise the Triton tests fail with a message saying so).
``setdefault``: on a GPU machine run ``TRITON_INTERPRET=0 pytest -m gpu tests/kernels`` to compile
the kernels for real.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

torch = pytest.importorskip("torch")


def _has_cuda() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):  # noqa: ANN001
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def within_budget():
    """Check a kernel against a float64 oracle with an error budget tied to the float32 reference.

    kernel error (max abs) <= 2 x reference error + eps, eps = 1e-6 x max |oracle| + 1e-7.
    """

    def check(kernel, reference, oracle, what: str) -> None:
        oracle = oracle.double()
        finite = torch.isfinite(oracle)
        assert torch.equal(torch.isfinite(kernel.double()), finite), f"{what}: kernel inf/nan pattern differs"
        assert torch.equal(torch.isfinite(reference.double()), finite), f"{what}: reference inf/nan pattern differs"
        k_err = (kernel.double() - oracle)[finite].abs().max().item() if finite.any() else 0.0
        r_err = (reference.double() - oracle)[finite].abs().max().item() if finite.any() else 0.0
        eps = 1e-6 * (oracle[finite].abs().max().item() if finite.any() else 0.0) + 1e-7
        assert r_err <= 1e-4 * max(1.0, oracle[finite].abs().max().item()), f"{what}: reference off by {r_err}"
        assert k_err <= 2 * r_err + eps, f"{what}: kernel error {k_err:.3e} > 2 x reference error {r_err:.3e} + {eps:.1e}"

    return check
