"""block_sparse_attention: blockwise reference, Triton (interpreter) and FlexAttention vs a float64 oracle."""
import pytest
import torch

from attnsift.attention_kernels.block_sparse import block_sparse_attention, dense_mask


def oracle(q, k, v, off, scale):
    """Dense float64 attention under the dense BlockRank mask."""
    Hq, T, D = q.shape
    G = Hq // k.shape[0]
    m = dense_mask(off, T)
    s = torch.einsum("htd,hnd->htn", q.double(), k.double().repeat_interleave(G, 0)) * scale
    s = s.masked_fill(~m[None], float("-inf"))
    lse = torch.logsumexp(s, -1)
    out = torch.einsum("htn,hnd->htd", torch.exp(s - lse[..., None]), v.double().repeat_interleave(G, 0))
    return out, lse


def make(Hq, Hk, T, D, seed=0, noncontig=False):
    g = torch.Generator().manual_seed(seed)
    if noncontig:
        q = torch.randn(T, Hq, D, generator=g).transpose(0, 1)
        k = torch.randn(T, Hk, D, generator=g).transpose(0, 1)
        v = torch.randn(D, Hk, T, generator=g).permute(1, 2, 0)
        assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    else:
        q, k, v = (torch.randn(h, T, D, generator=g) for h in (Hq, Hk, Hk))
    return q * 1.5, k, v


def test_dense_mask_pattern():
    off = torch.tensor([0, 2, 4, 5, 7])  # prefix [0,2), docs [2,4) and [4,5), final [5,7)
    m = dense_mask(off, 7)
    expect = torch.tensor([
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 0, 0, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(m, expect)


CASES = [
    # Hq, Hk, D, offsets (T = last)
    pytest.param(2, 2, 16, [0, 13, 40, 61, 95, 120], id="mha-docs-odd-lengths"),
    pytest.param(4, 1, 32, [0, 9, 26, 50, 51, 77], id="gqa4-one-token-doc"),
    pytest.param(4, 1, 24, [0, 20, 53], id="gqa4-no-docs-odd-D"),
    pytest.param(2, 2, 16, [0, 37], id="single-block-causal"),
]


@pytest.mark.parametrize("Hq,Hk,D,offsets", CASES)
def test_reference_and_triton_match_oracle(Hq, Hk, D, offsets, within_budget):
    from attnsift.attention_kernels.block_sparse.triton import block_sparse_triton

    off = torch.tensor(offsets)
    T = offsets[-1]
    q, k, v = make(Hq, Hk, T, D)
    out64, lse64 = oracle(q, k, v, off, D ** -0.5)
    ref_o, ref_l = block_sparse_attention(q, k, v, off, impl="reference")
    assert ref_o.shape == (Hq, T, D) and ref_o.dtype == q.dtype and ref_l.dtype == torch.float32
    # small tiles so blocks span several query and key tiles under the interpreter
    tri_o, tri_l = block_sparse_triton(q, k, v, off, D ** -0.5, block_m=16, block_n=16)
    within_budget(tri_o, ref_o, out64, "out")
    within_budget(tri_l, ref_l, lse64, "lse")
    api_o, api_l = block_sparse_attention(q, k, v, off, impl="triton")  # default tile sizes
    within_budget(api_o, ref_o, out64, "out (default tiles)")
    within_budget(api_l, ref_l, lse64, "lse (default tiles)")


def test_reference_row_chunking_and_documents_are_independent():
    from attnsift.attention_kernels.block_sparse.reference import block_sparse_reference

    off = torch.tensor([0, 10, 30, 45, 70, 80])
    q, k, v = make(2, 1, 80, 16, seed=2)
    full, _ = block_sparse_reference(q, k, v, off, 0.25)
    chunked, _ = block_sparse_reference(q, k, v, off, 0.25, max_logits=40)  # a few rows at a time
    torch.testing.assert_close(chunked, full, rtol=1e-6, atol=1e-6)
    # changing a document's keys changes no other document's output (but changes the final block)
    k2 = k.clone()
    k2[:, 30:45] += 1.0
    other, _ = block_sparse_reference(q, k2, v, off, 0.25)
    assert torch.equal(other[:, 45:70], full[:, 45:70]) and torch.equal(other[:, :30], full[:, :30])
    assert not torch.allclose(other[:, 70:], full[:, 70:])


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_noncontiguous_and_bit_identical_repeats(impl):
    off = torch.tensor([0, 11, 29, 48, 60])
    q, k, v = make(4, 2, 60, 16, seed=4, noncontig=True)
    a = block_sparse_attention(q, k, v, off, impl=impl)
    b = block_sparse_attention(q, k, v, off, impl=impl)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    out64, lse64 = oracle(q, k, v, off, 0.25)
    torch.testing.assert_close(a[0].double(), out64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a[1].double(), lse64, rtol=1e-5, atol=1e-5)


def test_flex_and_dense_match_oracle():
    pytest.importorskip("torch.nn.attention.flex_attention")
    off = torch.tensor([0, 16, 48, 80, 112, 128])
    q, k, v = make(4, 2, 128, 16, seed=6)
    out64, lse64 = oracle(q, k, v, off, 0.25)
    for impl in ("flex", "dense"):
        o, l = block_sparse_attention(q, k, v, off, impl=impl)
        torch.testing.assert_close(o.double(), out64, rtol=1e-5, atol=1e-5, msg=impl)
        torch.testing.assert_close(l.double(), lse64, rtol=1e-5, atol=1e-5, msg=impl)


def test_low_precision_output_dtype_and_float32_accumulation():
    off = torch.tensor([0, 10, 40, 70])
    q, k, v = make(2, 2, 70, 16, seed=8)
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    o, l = block_sparse_attention(qb, kb, vb, off, impl="reference")
    assert o.dtype == torch.bfloat16 and l.dtype == torch.float32
    out64, _ = oracle(qb, kb, vb, off, 0.25)
    torch.testing.assert_close(o.double(), out64, rtol=1e-2, atol=1e-2)


def test_input_errors(monkeypatch):
    q, k, v = make(4, 2, 30, 16)
    off = torch.tensor([0, 10, 30])
    with pytest.raises(ValueError, match="empty block"):
        block_sparse_attention(q, k, v, torch.tensor([0, 10, 10, 30]))
    with pytest.raises(ValueError, match="cover"):
        block_sparse_attention(q, k, v, torch.tensor([0, 10, 20]))
    with pytest.raises(ValueError, match="must be 0"):
        block_sparse_attention(q, k, v, torch.tensor([5, 10, 30]))
    with pytest.raises(ValueError, match="multiple"):
        block_sparse_attention(torch.randn(3, 30, 16), k, v, off)
    with pytest.raises(ValueError, match="Hk"):
        block_sparse_attention(q, k, v[:, :20], off)
    with pytest.raises(TypeError, match="dtype"):
        block_sparse_attention(q, k.double(), v, off)
    with pytest.raises(ValueError, match="impl"):
        block_sparse_attention(q, k, v, off, impl="sdpa")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        block_sparse_attention(q, k, v, off, impl="triton")


@pytest.mark.gpu
def test_gpu_bf16_triton_and_flex_match_reference():
    lengths = [200] + [160] * 40 + [90]
    off = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    T = int(off[-1])
    q, k, v = (t.cuda().bfloat16() for t in make(32, 8, T, 128, seed=1))
    ref_o, ref_l = block_sparse_attention(q, k, v, off, impl="reference")
    for impl in ("triton", "flex"):
        o, l = block_sparse_attention(q, k, v, off, impl=impl)
        torch.testing.assert_close(o.float(), ref_o.float(), rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(l, ref_l, rtol=1e-3, atol=1e-2)
