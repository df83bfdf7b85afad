"""segment_mass: reference and Triton (interpreter) against a float64 dense oracle."""
import pytest
import torch

from attnsift.attention_kernels.segment_mass import SegmentMass, segment_mass


def oracle(q, k, off, scale, qpos, mode, kstart=None, softcap=None):
    """Dense float64 softmax over the allowed keys; returns (lse, seg_mass, token_mass)."""
    R, Hq, D = q.shape
    N, Hk, _ = k.shape
    ke = k.double().repeat_interleave(Hq // Hk, dim=1)  # [N, Hq, D]
    s = torch.einsum("rhd,nhd->rhn", q.double(), ke) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    allowed = torch.ones(R, N, dtype=torch.bool)
    if qpos is not None:
        allowed &= torch.arange(N)[None] <= qpos[:, None]
    if kstart is not None:
        allowed &= torch.arange(N)[None] >= kstart[:, None]
    if mode == "segments":
        inside = torch.zeros(N, dtype=torch.bool)
        inside[int(off[0]):int(off[-1])] = True
        allowed &= inside[None]
    s = s.masked_fill(~allowed[:, None], float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.nan_to_num(torch.exp(s - lse[..., None]), nan=0.0)
    seg = torch.stack([p[..., int(off[i]):int(off[i + 1])].sum(-1) for i in range(len(off) - 1)], -1)
    return lse, seg, p


def make(R, Hq, Hk, D, N, seed=0, noncontig=False):
    g = torch.Generator().manual_seed(seed)
    if noncontig:  # transposed views: strides are not the contiguous ones
        q = torch.randn(Hq, R, D, generator=g).transpose(0, 1)
        k = torch.randn(D, N, Hk, generator=g).permute(1, 2, 0)
        assert not q.is_contiguous() and not k.is_contiguous()
    else:
        q = torch.randn(R, Hq, D, generator=g)
        k = torch.randn(N, Hk, D, generator=g)
    return q * 1.5, k  # sharper softmax than unit logits


CASES = [
    # R, Hq, Hk, D, N, offsets, q_positions
    pytest.param(3, 4, 4, 32, 150, [0, 150], None, id="one-segment-mha"),
    pytest.param(3, 4, 1, 32, 150, [10, 37, 90, 141], [60, 120, 149], id="gqa4-causal-gaps"),
    pytest.param(2, 8, 2, 24, 173, [0, 5, 19, 33, 40, 61, 62, 90, 101, 130, 150, 170, 173], None,
                 id="gqa4-many-segments-odd-D"),
    pytest.param(5, 2, 2, 16, 97, [3, 50, 96], [96, 40, 0, 70, 55], id="mha-causal-odd-N"),
]


@pytest.mark.parametrize("mode", ["all", "segments"])
@pytest.mark.parametrize("R,Hq,Hk,D,N,offsets,qpos", CASES)
def test_reference_and_triton_match_oracle(R, Hq, Hk, D, N, offsets, qpos, mode, within_budget):
    q, k = make(R, Hq, Hk, D, N)
    off = torch.tensor(offsets)
    qp = None if qpos is None else torch.tensor(qpos)
    scale = D ** -0.5
    lse64, seg64, tok64 = oracle(q, k, off, scale, qp, mode)
    ref = segment_mass(q, k, off, q_positions=qp, softmax_over=mode, return_token_mass=True, impl="reference")
    tri = segment_mass(q, k, off, q_positions=qp, softmax_over=mode, return_token_mass=True, impl="triton")
    for res in (ref, tri):
        assert isinstance(res, SegmentMass)
        assert res.lse.shape == (R, Hq) and res.lse.dtype == torch.float32
        assert res.segment_mass.shape == (R, Hq, len(offsets) - 1) and res.segment_mass.dtype == torch.float32
        assert res.token_mass.shape == (R, Hq, N)
    within_budget(tri.lse, ref.lse, lse64, "lse")
    within_budget(tri.segment_mass, ref.segment_mass, seg64, "segment_mass")
    within_budget(tri.token_mass, ref.token_mass, tok64, "token_mass")
    # without per-token output the segment sums are the same computation
    tri2 = segment_mass(q, k, off, q_positions=qp, softmax_over=mode, impl="triton")
    assert tri2.token_mass is None
    torch.testing.assert_close(tri2.segment_mass, tri.segment_mass, rtol=0, atol=1e-7)


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_noncontiguous_inputs_and_repeats_are_bit_identical(impl):
    q, k = make(3, 4, 2, 16, 90, seed=3, noncontig=True)
    off = torch.tensor([0, 30, 31, 77])
    qp = torch.tensor([89, 50, 20])
    a = segment_mass(q, k, off, q_positions=qp, return_token_mass=True, impl=impl)
    b = segment_mass(q, k, off, q_positions=qp, return_token_mass=True, impl=impl)
    assert torch.equal(a.lse, b.lse) and torch.equal(a.segment_mass, b.segment_mass)
    assert torch.equal(a.token_mass, b.token_mass)
    c = segment_mass(q.contiguous(), k.contiguous(), off, q_positions=qp, return_token_mass=True, impl=impl)
    torch.testing.assert_close(a.segment_mass, c.segment_mass, rtol=1e-6, atol=1e-7)
    lse64, seg64, _ = oracle(q, k, off, 16 ** -0.5, qp, "all")
    torch.testing.assert_close(a.segment_mass.double(), seg64, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_mass_sums_to_one_over_allowed_keys(impl):
    q, k = make(2, 4, 1, 16, 64, seed=5)
    off = torch.tensor([4, 20, 50])
    # "segments": the segment masses of a row sum to 1
    r = segment_mass(q, k, off, softmax_over="segments", impl=impl)
    torch.testing.assert_close(r.segment_mass.sum(-1), torch.ones(2, 4), rtol=0, atol=1e-5)
    # "all": tokens outside the segments take the rest, so segments sum to < 1 and tokens to 1
    r = segment_mass(q, k, off, return_token_mass=True, impl=impl)
    assert bool((r.segment_mass.sum(-1) < 1).all())
    torch.testing.assert_close(r.token_mass.sum(-1), torch.ones(2, 4), rtol=0, atol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_row_that_sees_no_segment_key(impl):
    q, k = make(2, 2, 1, 16, 40, seed=7)
    off = torch.tensor([20, 30, 40])
    qp = torch.tensor([10, 35])  # row 0 ends before the first segment
    r = segment_mass(q, k, off, q_positions=qp, softmax_over="segments", return_token_mass=True, impl=impl)
    assert bool(torch.isneginf(r.lse[0]).all()) and bool(torch.isfinite(r.lse[1]).all())
    assert float(r.segment_mass[0].abs().sum()) == 0.0 and float(r.token_mass[0].abs().sum()) == 0.0
    torch.testing.assert_close(r.segment_mass[1].sum(-1), torch.ones(2), rtol=0, atol=1e-5)


def test_low_precision_input_accumulates_in_float32():
    q, k = make(2, 4, 2, 32, 300, seed=11)
    off = torch.tensor([0, 100, 200, 300])
    r = segment_mass(q.bfloat16(), k.bfloat16(), off, impl="reference")
    assert r.segment_mass.dtype == torch.float32
    _, seg64, _ = oracle(q.bfloat16().double(), k.bfloat16().double(), off, 32 ** -0.5, None, "all")
    torch.testing.assert_close(r.segment_mass.double(), seg64, rtol=1e-5, atol=1e-6)


def test_auto_on_cpu_is_reference_and_chunking_does_not_change_results():
    from attnsift.attention_kernels.segment_mass.reference import segment_mass_reference

    q, k = make(2, 4, 1, 16, 200, seed=13)
    off = torch.tensor([0, 70, 140, 200])
    auto = segment_mass(q, k, off, return_token_mass=True)
    small = segment_mass_reference(q, k, off, 0.25, None, "all", True, chunk=17)
    torch.testing.assert_close(auto.segment_mass, small[1], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(auto.lse, small[0], rtol=1e-6, atol=1e-6)


def test_input_errors(monkeypatch):
    q, k = make(2, 4, 2, 16, 50)
    off = torch.tensor([0, 10, 50])
    with pytest.raises(ValueError, match="empty segment"):
        segment_mass(q, k, torch.tensor([0, 10, 10, 50]))
    with pytest.raises(ValueError, match="multiple"):
        segment_mass(torch.randn(2, 3, 16), k, off)
    with pytest.raises(ValueError, match="exceeds"):
        segment_mass(q, k, torch.tensor([0, 60]))
    with pytest.raises(ValueError, match="non-decreasing"):
        segment_mass(q, k, torch.tensor([0, 30, 20]))
    with pytest.raises(TypeError, match="integer"):
        segment_mass(q, k, torch.tensor([0.0, 10.0]))
    with pytest.raises(ValueError, match="softmax_over"):
        segment_mass(q, k, off, softmax_over="docs")
    with pytest.raises(ValueError, match="impl"):
        segment_mass(q, k, off, impl="cuda")
    with pytest.raises(ValueError, match="q_positions"):
        segment_mass(q, k, off, q_positions=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="head dims"):
        segment_mass(q, torch.randn(50, 2, 8), off)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        segment_mass(q, k, off, impl="triton")


@pytest.mark.gpu
def test_gpu_bf16_matches_reference():
    q, k = make(16, 32, 8, 128, 5000, seed=1)
    off = torch.arange(100, 4901, 160)
    qc, kc = q.cuda().bfloat16(), k.cuda().bfloat16()
    ref = segment_mass(qc, kc, off, impl="reference")
    tri = segment_mass(qc, kc, off, impl="triton")
    torch.testing.assert_close(tri.segment_mass, ref.segment_mass, rtol=2e-2, atol=1e-4)
    torch.testing.assert_close(tri.lse, ref.lse, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_sliding_window_rows_and_softcap_match_oracle(softcap, within_budget):
    # What ICR needs on sliding-window layers (Gemma 2/3): row r sees keys [key_start[r], q_positions[r]].
    R, Hq, Hk, D, N = 4, 4, 2, 16, 83
    q, k = make(R, Hq, Hk, D, N, seed=13)
    off = torch.tensor([0, N])
    qp = torch.tensor([79, 80, 81, 82])
    ks = torch.tensor([56, 57, 58, 59])  # a 24-key window
    lse64, seg64, tok64 = oracle(q, k, off, D ** -0.5, qp, "all", ks, softcap)
    ref = segment_mass(q, k, off, q_positions=qp, key_start=ks, softcap=softcap, return_token_mass=True,
                       impl="reference")
    tri = segment_mass(q, k, off, q_positions=qp, key_start=ks, softcap=softcap, return_token_mass=True,
                       impl="triton")
    assert float(ref.token_mass[:, :, :56].abs().sum()) == 0.0  # keys before the window get nothing
    within_budget(tri.lse, ref.lse, lse64, "lse")
    within_budget(tri.token_mass, ref.token_mass, tok64, "token_mass")
    if softcap is not None:  # the cap changes the answer: the check can fail
        _, _, plain = oracle(q, k, off, D ** -0.5, qp, "all", ks, None)
        assert not torch.allclose(plain, tok64, atol=1e-4)


def test_window_and_softcap_bad_input():
    q, k = make(2, 2, 1, 8, 10)
    off = torch.tensor([0, 10])
    with pytest.raises(ValueError, match="key_start must have shape"):
        segment_mass(q, k, off, key_start=torch.tensor([1]))
    with pytest.raises(TypeError, match="key_start must be an integer"):
        segment_mass(q, k, off, key_start=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="softcap must be a positive"):
        segment_mass(q, k, off, softcap=0.0)


def test_icr_through_the_triton_kernel_matches_the_reference():
    # ICR's attention mass goes through this op: the Triton path (interpreter here) gives ICR's scores.
    pytest.importorskip("transformers")
    from helpers import tiny_llama_and_tokenizer

    from attnsift.rerank.icr import ICRReranker
    from attnsift.types import Candidate, Document, Query, Ranking

    model, tok = tiny_llama_and_tokenizer(layers=2, heads=2, seed=3)
    rk = Ranking(Query("q", "what prevents scurvy?"), tuple(
        Candidate(f"d{i}", 5.0 - i, Document(f"d{i}", f"document {i} on citrus and vitamin C, sailors {i}"))
        for i in range(3)))
    ref = ICRReranker(model, tokenizer=tok, impl="reference").score_details(rk)
    tri = ICRReranker(model, tokenizer=tok, impl="triton").score_details(rk)
    torch.testing.assert_close(torch.tensor(tri.raw), torch.tensor(ref.raw), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(tri.head_raw, ref.head_raw, rtol=1e-5, atol=1e-7)
    scale = max(ref.raw)
    assert max(abs(a - b) for a, b in zip(tri.scores, ref.scores)) <= 1e-5 * scale
