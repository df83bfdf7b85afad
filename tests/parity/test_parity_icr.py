"""ICR scores from the O(N) recording path equal an independent implementation of METHODS.md section 1
on eager attention (``model(..., output_attentions=True)``), the way the paper's code computes them.

Nothing of the library's scoring is used here: the document and query-span tokens are found from the
tokenizer's character offsets of the prompt text, the N/A prompt is the same text with the query
replaced, and the raw, N/A-calibrated and 2-sigma-masked document scores are computed in float64 from
the full attention matrices. Only the prompt text itself (the reranker's input) comes from the library.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from attnsift.rerank.icr import ICRReranker  # noqa: E402
from attnsift.types import Candidate, Document, Query, Ranking  # noqa: E402

TEXTS = [
    "Vitamin C (ascorbic acid) prevents scurvy.\nIt is found in citrus.",
    "Naïve Bayes — a [probabilistic] classifier; 数据 {x}.",
    "Short.",
    "The mitochondria is the powerhouse of the cell. " * 4,
    "Scurvy was common among sailors [1] before citrus rations.",
]
LONG = [(t + " ") * 6 for t in TEXTS]  # long enough documents that the 2-sigma mask drops tokens
QUERY = "what prevents scurvy?"
INSTRUCTION = "Please find information that are relevant to the following query in the paragraphs above."


def ranking(n: int = len(TEXTS), texts=TEXTS) -> Ranking:
    return Ranking(Query("q1", QUERY), tuple(
        Candidate(f"d{i}", 10.0 - i, Document(f"d{i}", t, title="A title" if i == 1 else None))
        for i, t in enumerate(texts[:n])))


@functools.lru_cache(maxsize=None)
def tokenizer():
    from attnsift.rerank.llm import load_tokenizer

    try:
        return load_tokenizer("smollm2-135m")
    except ValueError as exc:
        pytest.skip(str(exc))


@functools.lru_cache(maxsize=None)
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer()), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    return LlamaForCausalLM(cfg).eval()


@functools.lru_cache(maxsize=None)
def tiny_gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(1)
    # A sliding window shorter than the prompt, so the windowed layers really differ from full attention.
    cfg = Gemma3TextConfig(vocab_size=len(tokenizer()), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=24,
                           query_pre_attn_scalar=24, max_position_embeddings=2048,
                           layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"])
    return Gemma3ForCausalLM(cfg).eval()


# ------------------------------------------------------------------ the independent implementation
def token_spans(tok, text: str, rk: Ranking, reverse: bool) -> tuple[list[int], list[tuple[int, int]], int]:
    """Token ids of ``text``, each candidate's token range [start, end) and the query-span start.

    A document is its block ``[i] {title}\n{text}`` (blocks separated by a blank line, the last one
    followed by the late instruction); a token belongs to it when its characters overlap the block, and
    to the query span from the late instruction on."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    instr = text.index(INSTRUCTION)
    q_start = next(t for t, (s, e) in enumerate(offsets) if e > s and e > instr)
    order = list(range(len(rk)))[::-1] if reverse else list(range(len(rk)))  # prompt position -> candidate
    pos, starts = text.index("Here are some paragraphs:"), []
    for number, i in enumerate(order, start=1):
        doc = rk.candidates[i].document
        pos = text.index(f"[{number}] {(doc.title or doc.text)[:12]}", pos)
        starts.append(pos)
    ends = [s - 2 for s in starts[1:]] + [instr - 2]
    assert all(text[e:e + 2] == "\n\n" for e in ends)
    spans: list[tuple[int, int]] = [(0, 0)] * len(rk)
    for i, start, end in zip(order, starts, ends):
        toks = [t for t, (s, e) in enumerate(offsets[:q_start]) if e > s and s < end and e > start]
        assert toks == list(range(toks[0], toks[-1] + 1))
        spans[i] = (toks[0], toks[-1] + 1)
    return list(enc["input_ids"]), spans, q_start


def eager_token_mass(model, ids: list[int], q_start: int, layers, heads, last_token: bool) -> np.ndarray:
    """a(t): over the chosen (layer, head) pairs, the sum of the mean attention of the query-span rows
    (or of the last row) on token t, from the full eager attention matrices; float64."""
    prev = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            att = model(input_ids=torch.tensor([ids]), output_attentions=True, use_cache=False).attentions
    finally:
        model.set_attn_implementation(prev)
    a = np.zeros(len(ids))
    for layer in layers:
        A = att[layer][0].double().numpy()  # (heads, T, T)
        rows = A[:, -1:, :] if last_token else A[:, q_start:, :]
        for h in heads(layer):
            a += rows[h].mean(axis=0)
    return a


def expected_scores(model, rk: Ranking, layers=None, pairs=None, last_token=False, reverse=True, max_words=300,
                    tok=None) -> dict:
    """Raw, N/A-calibrated and masked-N/A ICR scores per candidate (caller's order), from METHODS.md."""
    from attnsift.rerank.prompts import build_icr_prompt  # the prompt text only: the input, not the formula

    tok = tok or tokenizer()
    docs = [(c.document.title, c.document.text) for c in rk.candidates]
    text = build_icr_prompt(tok, QUERY, docs, "ie", max_words, None, reverse).text
    q_at = text.rindex(f"Query: {QUERY}")
    na_text = text[:q_at] + "Query: N/A" + text[q_at + len(f"Query: {QUERY}"):]
    ids, spans, q_start = token_spans(tok, text, rk, reverse)
    na_ids, na_spans, na_q_start = token_spans(tok, na_text, rk, reverse)
    assert (na_spans, na_q_start) == (spans, q_start) and na_ids[:q_start] == ids[:q_start]
    n_layers = model.config.num_hidden_layers
    n_heads = model.config.num_attention_heads
    if pairs is not None:
        layers = sorted({l for l, _ in pairs})
        heads = lambda l: [h for ll, h in pairs if ll == l]  # noqa: E731
    else:
        layers = range(n_layers) if layers is None else layers
        heads = lambda l: range(n_heads)  # noqa: E731
    a_q = eager_token_mass(model, ids, q_start, layers, heads, last_token)
    a_na = eager_token_mass(model, na_ids, q_start, layers, heads, last_token)
    out = {"none": [], "na_mass": [], "na": [], "masked_na": []}
    for s, e in spans:
        c = a_q[s:e] - a_na[s:e]
        keep = c > c.mean() - 2 * c.std(ddof=1) if e - s > 1 else np.ones(1, dtype=bool)
        out["none"].append(a_q[s:e].sum())
        out["na_mass"].append(a_na[s:e].sum())
        out["na"].append(c.sum())
        out["masked_na"].append(c[keep].sum())
    return out


def assert_close(got, want, scale: float, tol: float = 2e-6) -> None:
    """Within ``tol`` of the largest raw score (calibrated scores are differences of close numbers)."""
    err = np.max(np.abs(np.asarray(got, dtype=np.float64) - np.asarray(want)))
    assert err <= tol * scale, f"max abs error {err:.3e} > {tol} x {scale:.3e}: got {got}, want {want}"


# ------------------------------------------------------------------ the tests
@pytest.mark.parametrize("span", ["span_mean", "last_token"])
def test_tiny_llama_raw_calibrated_and_masked_match_eager(span):
    rk = ranking(texts=LONG)
    want = expected_scores(tiny_llama(), rk, last_token=span == "last_token")
    scale = max(want["none"])
    for calibration in ("masked_na", "na", "none"):
        d = ICRReranker(tiny_llama(), tokenizer=tokenizer(), calibration=calibration, span=span).score_details(rk)
        assert_close(d.scores, want[calibration], scale)
    assert_close(d.raw, want["none"], scale)
    assert_close(d.na, want["na_mass"], scale)
    assert_close(d.calibrated, want["na"], scale)
    assert_close(d.masked, want["masked_na"], scale)
    # The 2-sigma mask really drops tokens here: masked differs from the plain calibrated sum.
    assert sum(abs(m - c) > 1e-7 for m, c in zip(want["masked_na"], want["na"])) >= 3


@pytest.mark.parametrize("options, layers, pairs", [
    ({"start_layer": 1, "end_layer": 1}, [1], None),
    ({"end_layer": 0}, [0], None),
    ({"start_layer": -2}, [1, 2], None),
    ({"heads": ((0, 1), (2, 3))}, None, [(0, 1), (2, 3)]),
])
def test_layer_range_early_exit_and_heads_match(options, layers, pairs):
    want = expected_scores(tiny_llama(), ranking(), layers=layers, pairs=pairs)
    d = ICRReranker(tiny_llama(), tokenizer=tokenizer(), calibration="none", **options).score_details(ranking())
    scale = max(want["none"])
    assert_close(d.raw, want["none"], scale)
    assert_close(d.na, want["na_mass"], scale)
    assert_close(d.masked, want["masked_na"], scale)


def test_per_head_masses_sum_to_the_scores():
    d = ICRReranker(tiny_llama(), tokenizer=tokenizer(), calibration="none").score_details(ranking())
    assert d.head_raw.shape == (3, 4, len(TEXTS))
    assert_close(d.head_raw.sum(dim=(0, 1)).tolist(), d.raw, max(d.raw), 1e-5)


def test_prompt_order_is_followed():
    want = expected_scores(tiny_llama(), ranking(), reverse=False)
    d = ICRReranker(tiny_llama(), tokenizer=tokenizer(), reverse=False).score_details(ranking())
    assert_close(d.scores, want["masked_na"], max(want["none"]))


@pytest.mark.parametrize("calibration", ["masked_na", "none"])
def test_tiny_gemma3_sliding_window_matches_eager(calibration):
    want = expected_scores(tiny_gemma3(), ranking())
    d = ICRReranker(tiny_gemma3(), tokenizer=tokenizer(), calibration=calibration).score_details(ranking())
    assert d.num_tokens > 24 * 3  # the window is exceeded
    assert_close(d.scores, want[calibration], max(want["none"]))


@pytest.mark.slow
def test_smollm2_matches_eager():
    from attnsift.rerank.llm import load_causal_lm

    model, tok = load_causal_lm("smollm2-135m", device="cpu")
    want = expected_scores(model, ranking(3), tok=tok)
    for calibration in ("masked_na", "none"):
        d = ICRReranker(model, tokenizer=tok, calibration=calibration).score_details(ranking(3))
        assert_close(d.scores, want[calibration], max(want["none"]))


@pytest.mark.model  # real Gemma 3 in CI: its 512-key sliding window exceeded on the real model (a few seconds)
def test_gemma3_270m_beyond_its_sliding_window_matches_eager():
    from attnsift.rerank.llm import load_causal_lm

    model, tok = load_causal_lm("gemma3-270m", device="cpu")
    assert any(t == "sliding_attention" for t in model.config.layer_types)
    long = ranking(texts=[(t + " ") * 12 for t in TEXTS])
    want = expected_scores(model, long, max_words=150, tok=tok)
    for calibration in ("masked_na", "none"):
        d = ICRReranker(model, tokenizer=tok, calibration=calibration, max_words=150).score_details(long)
        assert d.num_tokens > model.config.sliding_window  # the windowed layers really drop keys
        assert_close(d.scores, want[calibration], max(want["none"]))
