"""The segment_mass reference's one-chunk path (the logits computed once, kept for the per-token mass)
gives what the streamed two-pass path gives, on ICR's inputs (causal rows, sliding windows, soft-capping,
GQA)."""
import pytest
import torch

from attnsift.attention_kernels.segment_mass.reference import segment_mass_reference


@pytest.mark.parametrize("softcap", [None, 30.0])
@pytest.mark.parametrize("window", [False, True])
def test_one_chunk_path_equals_streamed_path(softcap, window):
    g = torch.Generator().manual_seed(0)
    R, Hq, Hk, D, N = 5, 6, 2, 16, 97
    q = torch.randn(R, Hq, D, generator=g)
    k = torch.randn(N, Hk, D, generator=g)
    off = torch.tensor([0, 10, 40, 97])
    last = torch.arange(R) + (N - R)
    first = (last - 30).clamp(min=0) if window else None
    one = segment_mass_reference(q, k, off, 0.25, last, "all", True, chunk=4096, key_start=first, softcap=softcap)
    streamed = segment_mass_reference(q, k, off, 0.25, last, "all", True, chunk=16, key_start=first, softcap=softcap)
    for a, b in zip(one, streamed):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    tok = one[2]
    assert torch.all(tok[:, :, N - R + 1:][:, :, 0][0] == 0)  # row 0 sees no key after its own position
    if window:
        assert torch.all(tok[0, :, : int(first[0])] == 0)
    torch.testing.assert_close(tok.sum(-1), torch.ones(R, Hq), rtol=1e-5, atol=1e-5)
    # The masses without the per-token output take the streamed path and agree as well.
    lse, seg, none = segment_mass_reference(q, k, off, 0.25, last, "all", False, key_start=first, softcap=softcap)
    assert none is None
    torch.testing.assert_close(seg, one[1], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(lse, one[0])
