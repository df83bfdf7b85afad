"""Helpers shared by the attention kernels: implementation choice, Triton interpreter support, checks.

Kept free of torch/triton imports at module level so ``import attnsift.attention_kernels`` stays light.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

def triton_available() -> bool:
    """True when ``triton`` can be imported (it may still lack a GPU)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpret_enabled() -> bool:
    """True when ``TRITON_INTERPRET=1`` is set: Triton kernels then run on CPU tensors (slowly)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def check_same_device(names_tensors: Iterable[tuple[str, "Tensor"]]) -> None:
    """Raise ValueError when the given tensors do not all live on one device."""
    items = list(names_tensors)
    devices = {str(t.device) for _, t in items}
    if len(devices) > 1:
        desc = ", ".join(f"{n} on {t.device}" for n, t in items)
        raise ValueError(f"all inputs must be on the same device; got {desc}. Move them with .to(device).")


def resolve_impl(impl: str, device: Any, op: str, allowed: tuple[str, ...] = ("auto", "reference", "triton")) -> str:
    """Map ``impl`` to a concrete implementation name.

    ``auto`` picks ``triton`` for CUDA tensors when triton imports, else ``reference``. An explicit
    choice never falls back silently: ``triton`` on CPU tensors needs ``TRITON_INTERPRET=1``.
    """
    if not isinstance(impl, str) or impl not in allowed:
        raise ValueError(f"{op}: impl must be one of {allowed}, got {impl!r}.")
    on_cuda = getattr(device, "type", str(device)) == "cuda"
    if impl == "auto":
        return "triton" if on_cuda and triton_available() else "reference"
    if impl == "triton":
        from attnsift.errors import require

        require("triton", "kernels", purpose=f"{op}(impl='triton')")
        if not on_cuda and not interpret_enabled():
            raise ValueError(
                f"{op}: impl='triton' needs CUDA tensors, got tensors on {device}. Move the inputs to a GPU, "
                "use impl='reference' (or 'auto'), or set TRITON_INTERPRET=1 to run the kernel in Triton's "
                "CPU interpreter (slow; for tests)."
            )
    return impl


def launchable(kernel: Any, device: Any) -> Any:
    """Return ``kernel`` ready to launch on ``device``, or explain why it cannot run there.

    On CPU tensors the kernel must run in Triton's interpreter. Triton reads ``TRITON_INTERPRET``
    when ``triton`` (and each ``@triton.jit`` module) is first imported, so setting it later in the
    same process is too late; say so instead of failing deep inside the interpreter.
    """
    if getattr(device, "type", str(device)) == "cuda":
        return kernel
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(kernel, InterpretedFunction):
        raise RuntimeError(
            "Triton kernels on CPU tensors need TRITON_INTERPRET=1 set before `triton` is first imported "
            "in this process (triton reads it at import time); it was imported without it. Set the "
            "variable in the environment (or at the very top of the root tests/conftest.py), or use "
            "impl='reference'."
        )
    return kernel


def next_pow2(n: int, minimum: int = 16) -> int:
    """Smallest power of two >= max(n, minimum) (tl.arange and tl.dot need powers of two >= 16)."""
    p = minimum
    while p < n:
        p *= 2
    return p


def check_offsets(offsets: "Tensor", name: str, what: str, total: int | None = None,
                  must_start_at_zero: bool = False, must_cover: bool = False) -> "Tensor":
    """Validate a 1-D increasing offsets tensor and return it as int64 on CPU.

    Parameters
    ----------
    offsets : Tensor
        [S+1] integer tensor; item s spans ``[offsets[s], offsets[s+1])``.
    name, what : str
        Argument name and what one item is (``segment``, ``document``, ``block``), for messages.
    total : int, optional
        Length of the indexed sequence; offsets must lie in ``[0, total]``.
    """
    import torch

    if not isinstance(offsets, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of int64 offsets, got {type(offsets).__name__}.")
    if offsets.dtype.is_floating_point or offsets.dtype == torch.bool or offsets.is_complex():
        raise TypeError(f"{name} must be an integer tensor (int64), got dtype {offsets.dtype}.")
    if offsets.dim() != 1 or offsets.numel() < 2:
        raise ValueError(f"{name} must be 1-D with at least 2 entries ([{what}s+1]), got shape {tuple(offsets.shape)}.")
    off = offsets.detach().to("cpu", torch.int64)
    diffs = off[1:] - off[:-1]
    if bool((diffs < 0).any()):
        raise ValueError(f"{name} must be non-decreasing, got {off.tolist()[:20]}...")
    if bool((diffs == 0).any()):
        bad = torch.nonzero(diffs == 0).flatten()[:5].tolist()
        raise ValueError(
            f"{name} describes empty {what}(s) at index {bad} ({name}[i] == {name}[i+1]); every {what} must "
            f"hold at least one token. Drop empty {what}s before calling."
        )
    if int(off[0]) < 0:
        raise ValueError(f"{name}[0] must be >= 0, got {int(off[0])}.")
    if must_start_at_zero and int(off[0]) != 0:
        raise ValueError(f"{name}[0] must be 0, got {int(off[0])}.")
    if total is not None:
        if int(off[-1]) > total:
            raise ValueError(f"{name}[-1]={int(off[-1])} exceeds the sequence length {total}.")
        if must_cover and int(off[-1]) != total:
            raise ValueError(f"{name}[-1] must equal the sequence length {total} (the {what}s cover every token), got {int(off[-1])}.")
    return off
