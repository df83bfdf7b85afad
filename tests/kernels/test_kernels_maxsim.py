"""maxsim: chunked reference and Triton (interpreter) against a float64 oracle."""
import pytest
import torch

from attnsift.attention_kernels.maxsim import maxsim


def oracle(q, docs, off, qmask):
    B, Lq, _ = q.shape
    w = torch.ones(B, Lq, dtype=torch.float64) if qmask is None else qmask.double()
    out = torch.zeros(B, len(off) - 1, dtype=torch.float64)
    for i in range(len(off) - 1):
        best = torch.einsum("bqd,td->bqt", q.double(), docs[int(off[i]):int(off[i + 1])].double()).amax(-1)
        out[:, i] = (best * w).sum(-1)
    return out


def make(B, Lq, D, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    off = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    return torch.randn(B, Lq, D, generator=g), torch.randn(int(off[-1]), D, generator=g), off


@pytest.mark.parametrize("B,Lq,D,lengths,masked", [
    pytest.param(3, 5, 24, [7, 1, 32, 31, 29], True, id="odd-lengths-masked"),
    pytest.param(1, 32, 64, [100], False, id="one-doc-long"),
    pytest.param(20, 3, 16, [5, 70, 2, 9], True, id="many-queries-several-blocks"),
])
def test_reference_and_triton_match_oracle(B, Lq, D, lengths, masked, within_budget):
    q, docs, off = make(B, Lq, D, lengths)
    qmask = None
    if masked:
        g = torch.Generator().manual_seed(1)
        qmask = torch.rand(B, Lq, generator=g) > 0.3
        qmask[0, 0] = True
        qmask[-1] = False  # a query with no real token scores 0
    o = oracle(q, docs, off, qmask)
    ref = maxsim(q, docs, off, qmask, impl="reference")
    tri = maxsim(q, docs, off, qmask, impl="triton")
    assert ref.shape == (B, len(lengths)) and ref.dtype == torch.float32 and tri.dtype == torch.float32
    within_budget(tri, ref, o, "maxsim")
    if masked:
        assert float(ref[-1].abs().sum()) == 0.0 and float(tri[-1].abs().sum()) == 0.0


def test_reference_chunking_is_exact_and_padding_is_ignored():
    from attnsift.attention_kernels.maxsim.reference import maxsim_reference

    q, docs, off = make(2, 6, 16, [3, 9, 4, 20, 1, 8])
    full = maxsim_reference(q, docs, off, None)
    tiny = maxsim_reference(q, docs, off, None, chunk_tokens=5)  # one document per chunk, some over the cap
    torch.testing.assert_close(full, tiny, rtol=1e-6, atol=1e-6)  # matmul blocking may differ
    # padded tokens with garbage values change nothing when masked
    qpad = torch.cat([q, 1e3 * torch.ones(2, 4, 16)], dim=1)
    mask = torch.cat([torch.ones(2, 6, dtype=torch.bool), torch.zeros(2, 4, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(maxsim(qpad, docs, off, mask, impl="reference"), full, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(maxsim(qpad, docs, off, mask, impl="triton"), full, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_noncontiguous_and_repeats(impl):
    g = torch.Generator().manual_seed(4)
    q = torch.randn(16, 4, 3, generator=g).permute(2, 1, 0)  # [3, 4, 16] non-contiguous
    docs = torch.randn(16, 40, generator=g).t()  # [40, 16] non-contiguous
    off = torch.tensor([0, 13, 14, 40])
    a = maxsim(q, docs, off, impl=impl)
    assert torch.equal(a, maxsim(q, docs, off, impl=impl))
    torch.testing.assert_close(a.double(), oracle(q, docs, off, None), rtol=1e-5, atol=1e-5)


def test_input_errors(monkeypatch):
    q, docs, off = make(2, 4, 8, [3, 5])
    with pytest.raises(ValueError, match="empty document"):
        maxsim(q, docs, torch.tensor([0, 3, 3, 8]))
    with pytest.raises(ValueError, match="dims differ"):
        maxsim(q, torch.randn(8, 7), off)
    with pytest.raises(TypeError, match="bool"):
        maxsim(q, docs, off, query_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="query_mask"):
        maxsim(q, docs, off, query_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="exceeds"):
        maxsim(q, docs, torch.tensor([0, 9]))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        maxsim(q, docs, off, impl="triton")


@pytest.mark.gpu
def test_gpu_half_matches_reference():
    q, docs, off = make(64, 32, 128, [50 + (7 * i) % 200 for i in range(500)], seed=2)
    qc, dc = q.cuda().half(), docs.cuda().half()
    ref = maxsim(qc, dc, off, impl="reference")
    tri = maxsim(qc, dc, off, impl="triton")
    torch.testing.assert_close(tri, ref, rtol=1e-2, atol=1e-1)
