"""The engine protocol without Ray: recipes, the local engine, the pipeline's engine path, the checks."""
from __future__ import annotations

import pickle

import pytest

from helpers import toy_ranking

from attnsift.engines import LocalEngine, RerankerRecipe, make_engine, merge_truncation, recipe_of
from attnsift.pipeline import Pipeline
from attnsift.types import Candidate, Document, Query, Ranking, Run


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama with SmolLM2's tokenizer, saved to a folder (a model a recipe can name)."""
    from helpers import tiny_llama_and_tokenizer

    model, tok = tiny_llama_and_tokenizer(layers=2, heads=2, seed=0)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------ recipes
def test_recipe_normalises_and_pickles_without_a_model():
    a = RerankerRecipe("icr", "smollm2-135m", {"max_words": "30", "calibration": "none"}, device="AUTO")
    b = RerankerRecipe("icr", "smollm2-135m", (("calibration", "none"), ("max_words", "30")))
    assert a == b and hash(a) == hash(b)
    assert a.device is None  # auto: each worker's own default
    assert a.option_dict == {"calibration": "none", "max_words": "30"}
    assert a.name == "icr" and a.needs_text
    assert a.config.max_words == 30 and a.config.calibration == "none"  # checked without loading a model
    object.__setattr__(a, "_built", object())  # a built model never travels
    back = pickle.loads(pickle.dumps(a))
    assert back == a and back._built is None


def test_recipe_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="unknown reranker 'icrr'"):
        RerankerRecipe("icrr")
    with pytest.raises(TypeError, match="mapping"):
        RerankerRecipe("icr", options=["max_words=3"])
    with pytest.raises(ValueError, match="unknown option"):
        RerankerRecipe("icr", options={"no_such": 1}).check()


def test_recipe_of_a_reranker_built_by_name_rebuilds_the_same_config(tiny_model_dir):
    from attnsift.registry import build_reranker

    rr = build_reranker("icr", model=str(tiny_model_dir), options={"max_words": "30", "calibration": "none"})
    recipe = recipe_of(rr)
    assert recipe.kind == "icr" and recipe.model == str(tiny_model_dir)
    # build_reranker records what it was given (built_with): the same options, as given
    assert {k: str(v) for k, v in dict(recipe.options).items()} == {"max_words": "30", "calibration": "none"}
    assert recipe.build().config == rr.config
    del rr.built_with  # without the record: the config fields that differ from the defaults
    assert dict(recipe_of(rr).options) == {"max_words": 30, "calibration": "none"}
    assert recipe_of(rr).build().config == rr.config
    assert recipe_of(recipe) is recipe
    assert recipe_of(build_reranker("none")) == RerankerRecipe("none")


def test_recipe_of_a_loaded_model_or_an_unknown_class_says_what_to_do():
    from helpers import tiny_icr

    with pytest.raises(TypeError, match="loaded model.*RerankerRecipe"):
        recipe_of(tiny_icr())

    class Mine:
        def rerank(self, ranking, k=None):
            return ranking

    with pytest.raises(TypeError, match="not a reranker of the registry"):
        recipe_of(Mine())


# ------------------------------------------------------------------------------------------ the local engine
def _three_queries() -> Run:
    base = toy_ranking(5)
    return Run([Ranking(Query(q, base.query.text), base.candidates) for q in ("qa", "qb", "qc")], name="toy")


def test_local_engine_equals_the_pipeline_without_engine():
    from helpers import tiny_icr

    icr = tiny_icr(max_words=4)
    run = _three_queries()
    plain = Pipeline(run, icr, first_stage_k=5, depth=3).run(None, progress=False)
    engine = LocalEngine()
    via = Pipeline(run, icr, first_stage_k=5, depth=3).run(None, progress=False, engine=engine)
    assert list(via) == list(plain)
    for q in plain:
        assert [c.score for c in via[q].candidates] == [c.score for c in plain[q].candidates]
    assert engine.truncation["documents"] == 9 and engine.truncation["cut"] == 9


class _Backwards:
    """An engine (the protocol, no Ray) that returns the results last first, or in order when asked."""

    name = "backwards"

    def __init__(self):
        self.seen = None

    def rerank_stream(self, reranker, rankings, depth, *, ordered=True):
        self.seen = [r.query.id for r in rankings]
        from attnsift.engines import EngineResult

        order = range(len(rankings)) if ordered else reversed(range(len(rankings)))
        for i in order:
            yield EngineResult(i, Ranking(rankings[i].query, tuple(Candidate(c.doc_id, -c.score, c.document)
                                                                   for c in rankings[i].candidates)), 0.5)


def _with_an_empty_one() -> Run:
    doc = Document("d1", "text")
    return Run([Ranking(Query("q1", "a"), (Candidate("d1", 1.0, doc),)), Ranking(Query("q2", "b"), ()),
                Ranking(Query("q3", "c"), (Candidate("d1", 2.0, doc),))], name="r")


@pytest.mark.parametrize("ordered", [True, False])
def test_pipeline_hands_the_non_empty_rankings_to_the_engine(ordered):
    from attnsift.engines import RerankerRecipe

    engine = _Backwards()
    pipe = Pipeline(_with_an_empty_one(), RerankerRecipe("none"), first_stage_k=5)
    out = list(pipe.stream(None, progress=False, engine=engine, ordered=ordered))
    assert engine.seen == ["q1", "q3"]  # the empty ranking stays here
    ids = [r.query.id for r in out]
    assert ids == (["q1", "q2", "q3"] if ordered else ["q2", "q3", "q1"])
    by_id = {r.query.id: r for r in out}
    assert by_id["q1"].ranking.candidates[0].score == -1.0 and by_id["q1"].rerank_seconds == 0.5
    assert len(by_id["q2"].ranking) == 0 and by_id["q2"].rerank_seconds == 0.0


def test_pipeline_refuses_an_engine_without_rerank_stream():
    with pytest.raises(TypeError, match="rerank_stream"):
        Pipeline(_with_an_empty_one(), RerankerRecipe("none")).run(None, engine="ray")


# ------------------------------------------------------------------------------------------ helpers
def test_merge_truncation_adds_counts_and_keeps_the_extremes():
    def fig(docs, cut, limit, longest):
        return {"documents": docs, "cut": cut, "unit": "words" if cut else None, "limit": limit, "longest": longest,
                "words": {"cut": cut, "limit": limit, "longest": longest},
                "tokens": {"cut": 0, "limit": None, "longest": None}}

    merged = merge_truncation([fig(5, 2, 30, 80), None, fig(5, 0, None, None), fig(5, 1, 20, 300)])
    assert merged["documents"] == 15 and merged["cut"] == 3
    assert merged["unit"] == "words" and merged["limit"] == 20 and merged["longest"] == 300
    assert merge_truncation([None]) is None


def test_make_engine_checks_before_any_work():
    assert isinstance(make_engine("local"), LocalEngine)
    with pytest.raises(ValueError, match="unknown engine 'spark'; choose one of: local, ray"):
        make_engine("spark")
    with pytest.raises(ValueError, match="--ray-address is for --engine ray"):
        make_engine("local", "10.0.0.1:6379")
    with pytest.raises(ValueError, match="not a Ray address"):
        make_engine("ray", "http://head")
    with pytest.raises(ValueError, match="num_workers"):
        make_engine("ray", num_workers=0)
    engine = make_engine("ray", "10.0.0.1:6379", num_workers=3)  # constructed, nothing started
    assert engine.address == "10.0.0.1:6379" and engine.num_workers == 3 and not engine._started


def test_recipe_of_prefers_what_the_reranker_was_built_with():
    class Built:
        built_with = {"name": "icr", "model": "smollm2-135m", "options": {"max_words": "50"}, "device": "cuda",
                      "dtype": None}

    assert recipe_of(Built()) == RerankerRecipe("icr", "smollm2-135m", {"max_words": "50"}, "cuda")
