"""ICRReranker behaviour: options, windows, determinism, bad input; listwise parsing and fallback."""
from __future__ import annotations


import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from helpers import tiny_llama_and_tokenizer  # noqa: E402

from attnsift.config import config_from_options  # noqa: E402
from attnsift.rerank.icr import ICRConfig, ICRMasses, ICRReranker, MassCache  # noqa: E402
from attnsift.rerank.listwise import ListwiseConfig, ListwiseReranker, parse_permutation  # noqa: E402
from attnsift.types import Candidate, Document, Query, Ranking, Run  # noqa: E402


def ranking(n: int, words: int = 8, qid: str = "q1") -> Ranking:
    return Ranking(Query(qid, "what prevents scurvy?"), tuple(
        Candidate(f"d{i}", float(100 - i), Document(f"d{i}", " ".join(f"w{i}x{j}" for j in range(words)) + " [ok]\nend"))
        for i in range(n)))


def model_and_tok():
    return tiny_llama_and_tokenizer(layers=2, heads=2, seed=0)


def icr(**options) -> ICRReranker:
    m, t = model_and_tok()
    return ICRReranker(m, tokenizer=t, **options)


def test_config_options_are_parsed_and_unknown_keys_rejected():
    c = config_from_options(ICRConfig, {"calibration": "none", "max_words": "50", "end_layer": "-1",
                                        "max_doc_tokens": "none", "reverse": "false"})
    assert c.calibration == "none" and c.max_words == 50 and c.end_layer == -1
    assert c.max_doc_tokens is None and c.reverse is False
    assert config_from_options(ICRConfig, {"heads": "1:0,0:1"}).heads == ((1, 0), (0, 1))
    assert config_from_options(ICRConfig, {"heads": "auto"}).heads == "auto"
    with pytest.raises(ValueError, match="unknown option.*calibrate.*accepted: calibration"):
        config_from_options(ICRConfig, {"calibrate": "none"})
    with pytest.raises(ValueError, match="calibration must be one of masked_na, na, none; got 'sigma'"):
        ICRConfig(calibration="sigma")
    with pytest.raises(ValueError, match="integer"):
        config_from_options(ICRConfig, {"max_words": "many"})
    with pytest.raises(ValueError, match="outside"):
        icr(end_layer=5)
    with pytest.raises(ValueError, match="heads must be .*'10:3,12:0'"):
        config_from_options(ICRConfig, {"heads": "1-0"})


@pytest.mark.parametrize("options, match", [
    ({"heads": "auto", "calibration": "none"}, "calibration=none is not used with heads=auto"),
    ({"heads": "p.json", "calibration": "na"}, "calibration=na is not used with heads=p.json"),
    ({"fusion_weight": "0.3"}, "fusion_weight=0.3 is not used with fusion=none"),
    ({"start_layer": "3", "end_layer": "1"}, "start_layer=3 is after end_layer=1"),
    ({"heads": "1:0", "start_layer": "0"}, "leave start_layer / end_layer unset"),
    ({"window": "10", "stride": "10"}, "stride must be smaller than window"),
    ({"fusion": "profile"}, "fusion=profile takes its weight from a head profile"),
])
def test_config_rejects_contradictions(options, match):
    with pytest.raises(ValueError, match=match):
        config_from_options(ICRConfig, options)


def test_start_after_end_with_negative_layers_is_caught_on_the_model():
    with pytest.raises(ValueError, match="after end_layer"):
        icr(start_layer=-1, end_layer=0)


def test_uniform_constructor_checks():
    m, t = model_and_tok()
    with pytest.raises(ValueError, match="got config= and options \\(calibration\\); give one of them"):
        ICRReranker(m, tokenizer=t, config=ICRConfig(), calibration="none")
    with pytest.raises(TypeError, match="takes config=ICRConfig"):
        ICRReranker(m, tokenizer=t, config=ListwiseConfig())
    with pytest.raises(ValueError, match="device= and dtype= apply to a model loaded by name"):
        ICRReranker(m, tokenizer=t, device="cpu")
    with pytest.raises(TypeError, match="mass_cache must be a MassCache"):
        ICRReranker(m, tokenizer=t, mass_cache={})


def test_rerank_is_well_formed_and_deterministic_across_batches():
    rr = icr()
    a = rr.rerank(ranking(6), k=4)
    assert sorted(a.doc_ids) == sorted(ranking(6).doc_ids)
    assert a.doc_ids[4:] == ["d4", "d5"]  # the tail keeps first-stage order below the reranked head
    run = rr.rerank_batch(Run([ranking(3, qid="q0"), ranking(6), ranking(2, qid="q2")]), k=4)
    assert run["q1"].scores() == a.scores()
    assert rr.score(ranking(6).top(4)) == rr.score(ranking(6).top(4))


def test_windows_when_the_prompt_exceeds_the_budget():
    rr = icr(max_context_tokens=260, window=4, stride=2, calibration="none")
    det = rr.score_details(ranking(9, words=12))
    assert det.windows > 1
    # Positional scores n - position: a permutation of 1..n, hence a well-formed ranking.
    assert sorted(det.scores) == [float(i) for i in range(1, 10)]
    out = rr.rerank(ranking(9, words=12))
    assert sorted(out.doc_ids) == sorted(ranking(9).doc_ids)
    assert all(x == x for x in det.raw)  # every candidate scored at least once


def test_single_candidate_and_document_longer_than_the_context():
    rr = icr(max_context_tokens=120)
    one = ranking(1, words=2000)  # far longer than the budget: cut by tokens to fit
    det = rr.score_details(one)
    assert det.num_tokens <= 120 and len(det.scores) == 1
    assert rr.rerank(one).doc_ids == ["d0"]


def test_bad_input():
    rr = icr()
    empty = Ranking(Query("q", "x"), ())
    assert len(rr.rerank(empty)) == 0
    with pytest.raises(ValueError, match="at least one candidate"):
        rr.score_details(empty)
    no_text = Ranking(Query("q", "x"), (Candidate("d1", 1.0),))
    with pytest.raises(ValueError, match="with_documents"):
        rr.rerank(no_text)
    with pytest.raises(TypeError):
        rr.rerank([("d1", 1.0)])
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    with pytest.raises(ValueError, match="not a causal language model"):
        ICRReranker(bert, tokenizer=model_and_tok()[1])
    with pytest.raises(TypeError, match="tokenizer"):
        ICRReranker(model_and_tok()[0])


def test_parse_permutation_is_robust():
    assert parse_permutation("[2] > [1] > [3]", 3) == [1, 0, 2]
    assert parse_permutation("[3] > [3] > [9] > junk", 4) == [2, 0, 1, 3]
    assert parse_permutation("I cannot rank these.", 3) == [0, 1, 2]
    assert parse_permutation("2 > 1", 2) == [1, 0]


def test_listwise_with_a_random_model_gives_a_well_formed_ranking():
    m, t = model_and_tok()
    lw = ListwiseReranker(m, tokenizer=t, window=4, stride=2, max_new_tokens=6)
    out = lw.rerank(ranking(7, words=4))
    assert sorted(out.doc_ids) == sorted(ranking(7).doc_ids)
    assert len(lw.last_outputs) == 3  # windows [3,7), [1,5), [0,4)
    with pytest.raises(ValueError, match="stride must be smaller than window"):
        ListwiseReranker(m, tokenizer=t, window=4, stride=4)
    with pytest.raises(ValueError, match="unknown option.*accepted: max_new_tokens, max_words, stride, window"):
        ListwiseReranker(m, tokenizer=t, windows=4)
    assert config_from_options(ListwiseConfig, {"max_new_tokens": "none", "window": "30"}) == ListwiseConfig(window=30)
    assert ListwiseReranker(m, tokenizer=t).score(ranking(1)) == [1.0]


def _count_passes(monkeypatch) -> list:
    from attnsift.rerank import icr as icr_mod

    calls = []
    real = icr_mod.span_masses

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(icr_mod, "span_masses", counting)
    return calls


def test_masses_once_then_scores_of_several_calibrations(monkeypatch):
    calls = _count_passes(monkeypatch)
    rk = ranking(4)
    rr = icr(calibration="masked_na")
    m = rr.masses(rk)
    assert isinstance(m, ICRMasses) and len(calls) == 1 and m.seconds > 0
    assert rr.scores(m) == list(m.masked)
    none, na = rr.with_options(calibration="none"), rr.with_options(calibration="na")
    assert none.model is rr.model and none.mass_cache is rr.mass_cache and rr.config.calibration == "masked_na"
    assert none.scores(m) == list(m.raw) and na.scores(m) == list(m.calibrated)
    # The siblings find the masses in the shared cache: no second pass, same numbers.
    assert none.score(rk) == list(m.raw) and na.score(rk) == list(m.calibrated)
    assert len(calls) == 1
    # A reranker with its own cache computes again and gets the same numbers.
    assert icr(calibration="none").score(rk) == list(m.raw)
    assert len(calls) == 2


def test_shared_cache_reports_what_the_pass_cost(monkeypatch):
    calls = _count_passes(monkeypatch)
    cache = MassCache()
    m, t = model_and_tok()
    first = ICRReranker(m, tokenizer=t, mass_cache=cache).rerank_detailed(ranking(4), k=3)
    second = ICRReranker(m, tokenizer=t, mass_cache=cache, calibration="none").rerank_detailed(ranking(4), k=3)
    assert len(calls) == 1 and len(cache) == 1
    assert second.seconds == first.seconds > 0  # a cache hit reports the pass it reused, not a lookup
    assert second.ranking.doc_ids[3:] == ["d3"]
    # A masses-shaping option is a different pass.
    ICRReranker(m, tokenizer=t, mass_cache=cache, max_words=3).score(ranking(4))
    assert len(calls) == 2 and len(cache) == 2
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError, match="positive integer"):
        MassCache(0)


def test_masses_refuse_a_list_that_needs_windows_and_scores_check_their_input():
    rr = icr(max_context_tokens=260, window=4, stride=2)
    with pytest.raises(ValueError, match="sliding windows with score_details"):
        rr.masses(ranking(9, words=12))
    with pytest.raises(TypeError, match="ICRMasses"):
        rr.scores([1.0, 2.0])


def test_a_list_of_one_window_that_does_not_fit_is_one_prompt_with_documents_cut():
    # 9 candidates of 40 words do not fit 300 tokens; with window 10 the list is one window anyway:
    # one prompt with the documents cut by tokens, real scores and per-head masses (head analysis needs them).
    rr = icr(max_context_tokens=300, window=10, stride=5)
    long = ranking(9, words=40)
    det = rr.score_details(long)
    assert det.windows == 1 and det.num_tokens <= 300
    assert det.head_raw is not None and tuple(det.head_raw.shape)[-1] == 9
    assert sorted(det.scores) != [float(i) for i in range(1, 10)]  # not positions


def test_cache_kwarg_follows_the_installed_transformers():
    from attnsift.attention_kernels.hf import cache_kwarg

    def new(input_ids=None, cache=None, use_cache=None, **kwargs): ...
    def old(input_ids=None, past_key_values=None, use_cache=None, **kwargs): ...

    assert cache_kwarg(new) == "cache" and cache_kwarg(old) == "past_key_values"
    # The model in use: its name must be one the forward pass really takes (a KV cache passed under a
    # name that lands in **kwargs would be ignored silently).
    m, _ = model_and_tok()
    import inspect

    assert cache_kwarg(m.model.forward) in inspect.signature(m.model.forward).parameters


def test_no_deprecated_cache_argument_warning():
    import warnings

    rr = icr(calibration="masked_na")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        rr.score(ranking(3))


def test_a_shared_cache_never_serves_another_models_masses(monkeypatch):
    calls = _count_passes(monkeypatch)
    cache = MassCache()
    m1, t = tiny_llama_and_tokenizer(layers=2, heads=2, seed=0)
    m2, _ = tiny_llama_and_tokenizer(layers=2, heads=2, seed=1)
    m2.config._name_or_path = "another-model"
    a = ICRReranker(m1, tokenizer=t, mass_cache=cache, calibration="none").score(ranking(4))
    b = ICRReranker(m2, tokenizer=t, mass_cache=cache, calibration="none").score(ranking(4))
    assert len(calls) == 2 and len(cache) == 2
    assert a != b


def test_a_query_without_text_is_refused_before_any_pass(monkeypatch):
    calls = _count_passes(monkeypatch)
    rk = ranking(3)
    textless = Ranking(Query("q7"), rk.candidates)
    with pytest.raises(ValueError, match="no query text for 'q7'"):
        icr().rerank(textless)
    assert calls == []
