"""transformers integration: an attention function that records query-span attention mass.

``ATTN_NAME`` ("attnsift_icr") is registered with transformers' ``AttentionInterface`` (and the matching
mask builder with ``AttentionMaskInterface``), so any model that dispatches attention through the
interface (Llama, Mistral, Qwen2/3, Gemma 2/3, ...) can be loaded or switched with
``model.set_attn_implementation(ATTN_NAME)``.

Outside a :func:`recording` block the function is plain attention (:func:`plain_attention`: SDPA, or the
model's own eager attention for what SDPA cannot apply: Gemma 2's logit soft-capping, gpt-oss's sinks).
Inside one:

- ``mode="prefix"``: plain attention (the KV cache is being filled); after ``last_layer`` a controlled
  :class:`EarlyExit` stops the forward pass (layers above it are not needed).
- ``mode="query"``: the forward pass runs only the query-span tokens on top of the cached prefix. For
  every selected layer their softmax rows against all keys they may see (causal, and the window of a
  sliding-window layer) come from the :func:`~attnsift.attention_kernels.segment_mass.segment_mass` op
  (per-token mass; PyTorch reference on CPU, Triton on CUDA) — rows x keys per head, never keys x
  keys — and are reduced to the mass per key token (mean over span rows, or the last row), kept per
  head. The layer output is those probabilities times the values (exact). Soft-capping is applied to the
  span rows' logits, and attention sinks scale each row by ``1 / (1 + exp(sink - logsumexp))``.

Memory is linear in the prompt length: ``heads x span_rows x keys`` per layer plus
``layers x heads x keys`` for the recorded masses.

:func:`span_probabilities` is the same softmax in plain, differentiable PyTorch (for training code).
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Any, Iterator

ATTN_NAME = "attnsift_icr"
_ACTIVE: contextvars.ContextVar["Recorder | None"] = contextvars.ContextVar("attnsift_recorder", default=None)
_REGISTERED_NAMES: set[str] = set()


class EarlyExit(Exception):
    """Raised after the last needed layer to skip the rest of the model (caught by :func:`run_layers`)."""


@dataclass
class Recorder:
    """What the attention function records during one forward pass.

    Attributes
    ----------
    layers : set[int] or None
        Layers whose mass is recorded (None: all).
    last_layer : int or None
        Stop the forward pass after this layer (None: run the whole model).
    mode : "prefix" | "query"
    span : "span_mean" | "last_token"
    total_len : int
        Prefix + span length (to place the keys of sliding-window layers, which see only the last keys).
    impl : "auto" | "reference" | "triton"
        The ``segment_mass`` implementation.
    mass : dict[int, Tensor]
        layer -> (batch, heads, total_len) float32 mass of the span rows on every token.
    """

    layers: set[int] | None = None
    last_layer: int | None = None
    mode: str = "prefix"
    span: str = "span_mean"
    total_len: int = 0
    impl: str = "auto"
    mass: dict[int, Any] = field(default_factory=dict)


def register_with_sdpa_masks(name: str, fn: Any) -> str:
    """Register attention function ``fn`` under ``name`` with transformers, with SDPA's mask builder
    (boolean, True = attend; or None when plain causal is enough). Idempotent; returns ``name``."""
    if name in _REGISTERED_NAMES:
        return name
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, fn)
    AttentionMaskInterface.register(name, sdpa_mask)
    _REGISTERED_NAMES.add(name)
    return name


def register() -> str:
    """Register :data:`ATTN_NAME` with transformers (idempotent); returns the name."""
    return register_with_sdpa_masks(ATTN_NAME, icr_attention_forward)


@contextlib.contextmanager
def activate(var: contextvars.ContextVar, value: Any) -> Iterator[Any]:
    """Set context variable ``var`` to ``value`` for the block (what an attention function reads)."""
    token = var.set(value)
    try:
        yield value
    finally:
        var.reset(token)


def recording(recorder: Recorder) -> Any:
    """Make ``recorder`` the active one for :func:`icr_attention_forward` inside the block."""
    return activate(_ACTIVE, recorder)


def cache_kwarg(fn: Any) -> str:
    """The name under which ``fn`` (a model's ``forward``) takes a KV cache: ``"cache"`` from
    transformers 5.24 on (``past_key_values`` is deprecated there, to be removed in 5.40), else
    ``"past_key_values"``."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def run_layers(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` (a model forward); an :class:`EarlyExit` ends it quietly (returns None)."""
    try:
        return fn(*args, **kwargs)
    except EarlyExit:
        return None


def span_probabilities(
    query: Any, key: Any, attention_mask: Any, scaling: float, num_key_value_groups: int = 1, softcap: float | None = None
) -> Any:
    """Softmax attention rows of ``query`` against ``key`` in float32.

    Parameters
    ----------
    query : Tensor (batch, heads, rows, dim)
    key : Tensor (batch, kv_heads, keys, dim)
    attention_mask : Tensor (batch, 1, rows, >=keys) bool (True = attend) or additive float, or None
        None means causal, bottom-right aligned: row ``i`` sees keys ``<= keys - rows + i``.

    Returns
    -------
    Tensor (batch, heads, rows, keys) float32
    """
    import torch

    if num_key_value_groups > 1:
        key = key.repeat_interleave(num_key_value_groups, dim=1)
    logits = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scaling  # (B, H, R, K)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    rows, keys = logits.shape[-2], logits.shape[-1]
    if attention_mask is None:
        pos = torch.arange(keys, device=logits.device)
        limit = torch.arange(rows, device=logits.device) + (keys - rows)
        logits = logits.masked_fill(pos[None, :] > limit[:, None], float("-inf"))
    else:
        mask = attention_mask[..., :keys]
        if mask.dtype == torch.bool:
            logits = logits.masked_fill(~mask, float("-inf"))
        else:
            logits = logits + mask.float()
    return torch.softmax(logits, dim=-1)


def row_key_bounds(attention_mask: Any, batch: int, rows: int, keys: int, device: Any) -> tuple[Any, Any]:
    """The keys each query row may see, as ``(last, first)`` key indices ([rows] int64; ``first`` None
    when every row starts at key 0), from a transformers attention mask.

    ``attention_mask`` is None (causal, bottom-right aligned: row ``i`` sees keys ``<= keys - rows + i``),
    or (batch or 1, 1, rows, >=keys) boolean (True = attend) or additive float (0 = attend, very negative =
    masked). The allowed keys of every row must be one contiguous band (causal, sliding window).

    Raises
    ------
    ValueError
        A mask that is not a band per row, or an additive mask holding biases other than 0 / -inf.
    """
    import torch

    if attention_mask is None:
        return torch.arange(rows, device=device) + (keys - rows), None
    m = attention_mask[min(batch, attention_mask.shape[0] - 1), 0, :, :keys]  # (rows, keys)
    if m.dtype == torch.bool:
        allowed = m
    else:
        allowed = m == 0
        if bool((~allowed & (m > torch.finfo(m.dtype).min / 2)).any()):
            raise ValueError("ICR's attention recording takes masks of 0 / -inf only; this model adds attention "
                             "biases (e.g. ALiBi), which the segment_mass op does not apply")
    idx = torch.arange(keys, device=allowed.device)
    last = torch.where(allowed, idx, -1).amax(dim=-1)
    first = torch.where(allowed, idx, keys).amin(dim=-1)
    if bool((last < 0).any()) or bool((allowed.sum(dim=-1) != last - first + 1).any()):
        raise ValueError("ICR's attention recording needs each query row to see one contiguous band of keys "
                         "(causal or sliding-window attention); this model's mask is not of that form")
    return last.to(device), (first.to(device) if bool((first > 0).any()) else None)


def span_attention_rows(query: Any, key: Any, attention_mask: Any, scaling: float, softcap: float | None = None,
                        impl: str = "auto", sinks: Any = None) -> Any:
    """Softmax attention rows of ``query`` against ``key`` through the ``segment_mass`` op.

    Parameters
    ----------
    query : Tensor (batch, heads, rows, dim)
    key : Tensor (batch, kv_heads, keys, dim); GQA: query head h reads kv head ``h // (heads // kv_heads)``
    attention_mask : see :func:`row_key_bounds`
    impl : "auto" | "reference" | "triton"
    sinks : Tensor (heads,), optional
        Attention sinks (gpt-oss): one extra logit per head in every row's denominator, attending to
        nothing; each row's probabilities are scaled by ``1 / (1 + exp(sink - logsumexp(row)))``.

    Returns
    -------
    Tensor (batch, heads, rows, keys) float32: each row's probabilities (0 on keys it may not see).
    """
    import torch

    from attnsift.attention_kernels.segment_mass import segment_mass

    batch, _, rows, _ = query.shape
    keys = key.shape[2]
    whole = torch.tensor([0, keys], dtype=torch.int64)  # one segment: only the per-token mass is used
    out = []
    for b in range(batch):
        last, first = row_key_bounds(attention_mask, b, rows, keys, query.device)
        # float32 inputs: the calibrated scores subtract two close masses, so the logits keep full precision
        # (the Triton kernel then multiplies in IEEE fp32, not TF32), as the plain-PyTorch rows did.
        res = segment_mass(query[b].transpose(0, 1).float(), key[b].transpose(0, 1).float(), whole, scale=scaling,
                           q_positions=last, key_start=first, softcap=softcap, return_token_mass=True, impl=impl)
        mass = res.token_mass.transpose(0, 1)  # (heads, rows, keys)
        if sinks is not None:
            lse = res.lse.transpose(0, 1)  # (heads, rows)
            mass = mass * torch.sigmoid(lse - sinks.float().to(lse.device)[:, None])[..., None]
        out.append(mass)
    return torch.stack(out)


#: Attention arguments SDPA cannot apply: a layer given one runs its model's own eager attention instead.
EAGER_ONLY = ("softcap", "s_aux")


def attention_sinks(module: Any, kwargs: dict) -> Any:
    """The layer's attention sinks (gpt-oss: ``s_aux``, the module's ``sinks``), or None."""
    if kwargs.get("s_aux") is not None:
        return kwargs["s_aux"]
    return getattr(module, "sinks", None)


def plain_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                    scaling: float | None = None, **kwargs: Any) -> tuple[Any, Any]:
    """The layer's attention without recording: SDPA, or, when the layer passes something SDPA cannot apply
    (:data:`EAGER_ONLY`: Gemma 2's logit soft-capping, gpt-oss's sinks), the model's own
    ``eager_attention_forward`` (found in its modeling module), given the additive form of the boolean mask.

    Shapes as :func:`icr_attention_forward`; returns ((B, Q, H, D), weights or None).
    """
    if not any(kwargs.get(name) is not None for name in EAGER_ONLY) and getattr(module, "sinks", None) is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    import sys

    import torch

    eager = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if eager is None:
        names = [n for n in EAGER_ONLY if kwargs.get(n) is not None] or ["sinks"]
        raise ValueError(f"{type(module).__name__} passes {', '.join(names)} to its attention and its module has no "
                         "eager_attention_forward to apply it; this architecture is not supported")
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        attention_mask = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device).masked_fill(
            ~attention_mask, torch.finfo(query.dtype).min)
    elif attention_mask is None and query.shape[2] > 1:
        # SDPA's mask builder leaves plain causal masks out (None); eager needs them written.
        q_len, k_len = query.shape[2], key.shape[2]
        rows = torch.arange(q_len, device=query.device)[:, None] + (k_len - q_len)
        blocked = torch.arange(k_len, device=query.device)[None, :] > rows
        attention_mask = torch.zeros(q_len, k_len, dtype=query.dtype, device=query.device).masked_fill(
            blocked, torch.finfo(query.dtype).min)[None, None]
    return eager(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


def icr_attention_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Any, None]:
    """The registered attention function (see the module docstring). Shapes follow transformers:
    query (B, H, Q, D), key/value (B, KV_H, K, D); returns ((B, Q, H, D), None)."""
    rec = _ACTIVE.get()
    layer = getattr(module, "layer_idx", None)
    if rec is None or layer is None:
        return plain_attention(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if rec.mode == "prefix":
        # The cache was updated before this call; the last needed layer's output itself is not needed.
        if rec.last_layer is not None and layer >= rec.last_layer:
            raise EarlyExit
        return plain_attention(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if rec.layers is not None and layer not in rec.layers:
        out = plain_attention(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    else:
        import torch

        if scaling is None:
            scaling = query.shape[-1] ** -0.5
        probs = span_attention_rows(query, key, attention_mask, scaling, kwargs.get("softcap"), rec.impl,
                                    attention_sinks(module, kwargs))  # (B, H, Q, K)
        rows = probs if rec.span == "span_mean" else probs[:, :, -1:]
        m = rows.mean(dim=2)  # (B, H, K)
        keys = m.shape[-1]
        full = m.new_zeros(m.shape[0], m.shape[1], rec.total_len)
        # Sliding-window layers see only the last `keys` positions.
        full[..., rec.total_len - keys:] = m
        rec.mass[layer] = full
        groups = getattr(module, "num_key_value_groups", 1)
        v = value.repeat_interleave(groups, dim=1) if groups > 1 else value
        out = torch.matmul(probs.to(v.dtype), v).transpose(1, 2).contiguous()  # (B, Q, H, D)
        out = (out, None)
    if rec.last_layer is not None and layer >= rec.last_layer:
        raise EarlyExit
    return out
