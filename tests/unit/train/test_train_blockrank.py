"""BlockRank fine-tuning: InfoNCE, differentiable scores = inference scores, gradient checkpointing,
losses going down, resume = uninterrupted, atomic checkpoints, data sampling and the CLI."""
from __future__ import annotations

import functools
import json
import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from attnsift.train.blockrank import (  # noqa: E402
    TrainConfig,
    TrainExample,
    build_examples,
    differentiable_document_scores,
    enable_gradient_checkpointing,
    encode_example,
    example_losses,
    info_nce,
    train_blockrank,
)
from attnsift.types import Candidate, Document, Query, Ranking  # noqa: E402

WORDS = ("protein cell gene cancer vitamin sleep heart brain risk trial dose water climate soil "
         "neuron memory virus vaccine immune blood sugar insulin muscle bone").split()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine two threads per
    process make these tests ~4x slower (oversubscription); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.lru_cache(maxsize=None)
def tokenizer():
    from attnsift.rerank.llm import load_tokenizer

    try:
        return load_tokenizer("smollm2-135m")
    except ValueError as exc:  # the offline model package is missing
        pytest.skip(str(exc))


def tiny_llama(seed: int = 0, layers: int = 2):
    tok = tokenizer()
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharper attention than the random init, so documents get different scores
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(4.0)
            layer.self_attn.k_proj.weight.mul_(4.0)
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random Llama + SmolLM2's tokenizer saved as a Hugging Face folder."""
    path = tmp_path_factory.mktemp("tiny_llama")
    tiny_llama().save_pretrained(path)
    tokenizer().save_pretrained(path)
    return path


def toy_example(n: int = 5, seed: int = 0, positives=(1, 3)) -> TrainExample:
    import random

    rng = random.Random(seed)
    docs = tuple(Document(f"d{i}", " ".join(rng.choices(WORDS, k=rng.randint(3, 8)))) for i in range(n))
    return TrainExample(Query(f"q{seed}", "does vitamin intake change cancer risk"), docs,
                        tuple(1 if i in positives else 0 for i in range(n)), tuple(i in positives for i in range(n)))


ENC = dict(block_tokens=32, max_words=50, final_offset=16384, max_positions=2048)


def test_info_nce_matches_a_hand_computation():
    s = torch.tensor([0.30, 0.10, 0.25, 0.35])
    pos = torch.tensor([True, False, False, True])
    tau = 0.05
    e = [math.exp(x / tau) for x in s.tolist()]
    expected = -math.log((e[0] + e[3]) / sum(e))
    assert info_nce(s, pos, tau).item() == pytest.approx(expected, rel=1e-5)
    # One positive: plain cross-entropy.
    one = torch.tensor([False, False, True, False])
    assert info_nce(s, one, tau).item() == pytest.approx(
        torch.nn.functional.cross_entropy((s / tau)[None], torch.tensor([2])).item(), rel=1e-5)
    # All positive: nothing to learn.
    assert info_nce(s, torch.ones(4, dtype=torch.bool), tau).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least one positive"):
        info_nce(s, torch.zeros(4, dtype=torch.bool), tau)


def test_answer_text_lists_relevant_ids_best_grade_first():
    ex = TrainExample(Query("q", "x"), tuple(Document(f"d{i}", "t") for i in range(5)), (0, 1, 0, 2, 1),
                      (False, True, False, True, True))
    assert ex.answer_ids() == [3, 1, 4]
    assert ex.answer_text() == "3, 1, 4]"


def test_training_scores_equal_the_zero_shot_reranker_scores():
    """The differentiable scores of training are BlockRank's inference scores (same prompt, same layer)."""
    from attnsift.rerank.blockrank import BlockRankReranker

    model, tok = tiny_llama(layers=3).eval(), tokenizer()
    ex = toy_example(6)
    enc = encode_example(ex, tok, **ENC)
    assert enc.input_ids[enc.prompt_tokens:] == list(tok(ex.answer_text(), add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        parts = example_losses(model, enc, scoring_layer=1, lambda_aux=0.1, tau=0.05)
    ranking = Ranking(ex.query, tuple(Candidate(d.id, float(10 - i), d) for i, d in enumerate(ex.documents)))
    rr = BlockRankReranker(model, tokenizer=tok, scoring_layer=1, block_tokens=32, max_words=50, impl="reference")
    expected = rr.score(ranking)
    assert parts["scores"].tolist() == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert float(parts["scores"].sum()) == pytest.approx(1.0, abs=1e-5)
    assert max(expected) - min(expected) > 1e-4  # the check is not vacuous
    assert math.isfinite(float(parts["l_lm"])) and math.isfinite(float(parts["l_aux"]))


def test_lm_loss_is_the_cross_entropy_of_the_answer_tokens():
    """L_lm (computed on the kept logits only) equals the cross-entropy read off the full logits."""
    from attnsift.attention_kernels.hf_blockrank import BlockRankCapture, run_capture

    model, tok = tiny_llama(seed=5).eval(), tokenizer()
    enc = encode_example(toy_example(4, positives=(0, 2)), tok, **ENC)
    assert enc.answer_tokens >= 4  # "0, 2]"
    with torch.no_grad():
        parts = example_losses(model, enc, scoring_layer=0, lambda_aux=0.1, tau=0.05)
        cap = BlockRankCapture(torch.tensor(enc.block_offsets), 0, torch.tensor(enc.query_rows), early_exit=False,
                               impl="dense")
        full = run_capture(model, torch.tensor(enc.input_ids), torch.tensor(enc.position_ids), cap).logits[0]
    Tp, T = enc.prompt_tokens, len(enc.input_ids)
    expected = torch.nn.functional.cross_entropy(full[Tp - 1:T - 1], torch.tensor(enc.input_ids[Tp:]))
    assert float(parts["l_lm"]) == pytest.approx(float(expected), rel=1e-4)
    assert float(parts["loss"]) == pytest.approx(float(parts["l_lm"]) + 0.1 * float(parts["l_aux"]), rel=1e-6)


def test_differentiable_scores_handle_gqa_and_give_gradients():
    torch.manual_seed(1)
    q = torch.randn(2, 4, 8, requires_grad=True)  # P=2, Hq=4
    k = torch.randn(20, 2, 8, requires_grad=True)  # T=20, Hk=2
    off = [0, 3, 7, 12, 18, 20]
    s = differentiable_document_scores(q, k, off, 0.35)
    # Oracle: explicit per-head loop with head h reading key head h // 2.
    ref = torch.zeros(3)
    for p in range(2):
        for h in range(4):
            w = torch.softmax(k[3:18, h // 2] @ q[p, h] * 0.35, dim=0)
            ref += torch.stack([w[0:4].sum(), w[4:9].sum(), w[9:15].sum()]) / 8
    assert torch.allclose(s, ref, atol=1e-6)
    s[0].backward()
    assert q.grad.abs().sum() > 0 and k.grad[3:18].abs().sum() > 0
    assert k.grad[:3].abs().sum() == 0 and k.grad[18:].abs().sum() == 0  # only document keys are read


def test_gradient_checkpointing_recomputes_under_the_blockrank_mask():
    """Same gradients with and without checkpointing: the recompute in the backward pass must run the
    block-sparse attention, not the SDPA fallback."""
    ex, tok = toy_example(4), tokenizer()
    enc = encode_example(ex, tok, **ENC)
    grads = []
    for ckpt in (False, True):
        model = tiny_llama(seed=3).train()
        if ckpt:
            enable_gradient_checkpointing(model)
        example_losses(model, enc, scoring_layer=1, lambda_aux=1.0, tau=0.05, backward_scale=1.0)
        grads.append(torch.cat([p.grad.flatten() for p in model.model.layers.parameters()]))
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)


def test_aux_loss_decreases_when_training_on_it():
    ex, tok = toy_example(5), tokenizer()
    enc = encode_example(ex, tok, **ENC)
    model = tiny_llama(seed=2).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    values = []
    for _ in range(10):
        opt.zero_grad()
        parts = example_losses(model, enc, scoring_layer=1, lambda_aux=1.0, tau=0.05)
        parts["l_aux"].backward()
        opt.step()
        values.append(float(parts["l_aux"].detach()))
    assert all(math.isfinite(v) for v in values)
    assert values[-1] < 0.5 * values[0], values


def make_config(model_dir, **kw) -> TrainConfig:
    base = dict(model=str(model_dir), candidates=5, block_tokens=32, max_words=40, scoring_layer=1, lr=1e-3,
                save_every=2, progress=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_total_loss_decreases_and_the_model_loads_back(model_dir, tmp_path):
    from attnsift.rerank.blockrank import BlockRankReranker
    from attnsift.rerank.llm import load_causal_lm

    res = train_blockrank(make_config(model_dir, steps=6, lr=2e-3, save_every=6), tmp_path / "run",
                          examples=[toy_example(4, positives=(1,))])
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    log = [json.loads(line) for line in (tmp_path / "run" / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7))
    assert set(log[0]) == {"step", "loss", "l_lm", "l_aux", "lr", "seconds"}
    model, tok = load_causal_lm(str(res.model_dir))
    assert not model.training
    ex = toy_example(5)
    ranking = Ranking(ex.query, tuple(Candidate(d.id, 1.0 - i / 10, d) for i, d in enumerate(ex.documents)))
    out = BlockRankReranker(model=str(res.model_dir), scoring_layer=1, block_tokens=32).rerank(ranking)
    assert sorted(out.doc_ids) == sorted(ranking.doc_ids)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_resume_equals_an_uninterrupted_run(model_dir, tmp_path):
    examples = [toy_example(4, seed=s, positives=(s % 4,)) for s in range(3)]
    straight = train_blockrank(make_config(model_dir, steps=4), tmp_path / "a", examples=examples)
    train_blockrank(make_config(model_dir, steps=2), tmp_path / "b", examples=examples)
    with pytest.raises(FileExistsError, match="--resume"):
        train_blockrank(make_config(model_dir, steps=4), tmp_path / "b", examples=examples)
    with pytest.raises(ValueError, match="lr"):
        train_blockrank(make_config(model_dir, steps=4, lr=5e-4), tmp_path / "b", resume=True, examples=examples)
    resumed = train_blockrank(make_config(model_dir, steps=4), tmp_path / "b", resume=True, examples=examples)
    assert resumed.start_step == 2 and resumed.steps == 4
    a, b = _weights(straight.model_dir), _weights(resumed.model_dir)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    # the weights did move
    base = _weights(model_dir)
    assert max((a[k] - base[k]).abs().max().item() for k in a) > 1e-4
    log_a = [json.loads(x) for x in (tmp_path / "a" / "loss.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "b" / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_b] == [1, 2, 3, 4]
    assert [r["loss"] for r in log_a] == pytest.approx([r["loss"] for r in log_b], rel=1e-5)
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step-000004"]  # keep_checkpoints=1


def test_checkpoints_are_atomic(model_dir, tmp_path, monkeypatch):
    """A failure while writing a checkpoint leaves the previous one whole and no partial folder."""
    import attnsift.train.blockrank as tb

    real_save = torch.save
    calls = {"n": 0}

    def failing_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint (step 4)
            raise OSError("disk full")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        tb.train_blockrank(make_config(model_dir, steps=4, keep_checkpoints=3), tmp_path / "run",
                           examples=[toy_example(4)])
    ckdir = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckdir.iterdir()) == ["step-000002"]  # no step-000004, no hidden temp folder
    assert (ckdir / "step-000002" / "trainer_state.pt").is_file()
    assert not (tmp_path / "run" / "model").exists()
    monkeypatch.setattr(torch, "save", real_save)
    res = tb.train_blockrank(make_config(model_dir, steps=4, keep_checkpoints=3), tmp_path / "run", resume=True,
                             examples=[toy_example(4)])
    assert res.start_step == 2 and (res.model_dir / "config.json").is_file()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="lr must be a positive"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="lr must be a positive"):
        TrainConfig(lr=-1e-5)
    with pytest.raises(ValueError, match="candidates must be an integer >= 2"):
        TrainConfig(candidates=1)
    with pytest.raises(ValueError, match="tau"):
        TrainConfig(tau=0.0)
    with pytest.raises(ValueError, match="attn_impl"):
        TrainConfig(attn_impl="triton")
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_options({"learning_rate": "1e-5"})
    assert TrainConfig.from_options({"lr": "1e-5", "scoring_layer": "none"}).lr == 1e-5


# ---------------------------------------------------------------------------------------------- data

def write_beir(root, qrels_rows, split="train"):
    """A tiny BEIR folder: 12 documents, 3 queries, the given qrels rows."""
    root.mkdir(parents=True, exist_ok=True)
    import random

    rng = random.Random(0)
    with open(root / "corpus.jsonl", "w") as fh:
        for i in range(12):
            text = " ".join(rng.choices(WORDS, k=10))
            fh.write(json.dumps({"_id": f"D{i}", "title": f"title {i}", "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as fh:
        for i, text in enumerate(["vitamin cancer risk", "sleep and memory", "insulin sugar blood"]):
            fh.write(json.dumps({"_id": f"Q{i}", "text": text}) + "\n")
    (root / "qrels").mkdir(exist_ok=True)
    with open(root / "qrels" / f"{split}.tsv", "w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q, d, g in qrels_rows:
            fh.write(f"{q}\t{d}\t{g}\n")
    return root


QRELS = [("Q0", "D1", 2), ("Q0", "D2", 1), ("Q0", "D3", 1), ("Q1", "D5", 1), ("Q2", "D7", 0)]


def test_build_examples_samples_relevant_plus_bm25_negatives(tmp_path):
    from attnsift.eval.datasets import load_dataset

    ds = load_dataset(str(write_beir(tmp_path / "beir", QRELS)), split="train")
    ex = build_examples(ds, candidates=5, max_positives=2, seed=0)
    assert [e.query.id for e in ex] == ["Q0", "Q1"]  # Q2 has no relevant document (grade 0)
    q0 = ex[0]
    assert len(q0.documents) == 5 and len({d.id for d in q0.documents}) == 5
    pos = [d.id for d, p in zip(q0.documents, q0.positive) if p]
    assert len(pos) == 2 and "D1" in pos  # the grade-2 document comes first
    assert all(d.id not in {"D1", "D2", "D3"} for d, p in zip(q0.documents, q0.positive) if not p)
    assert build_examples(ds, candidates=5, max_positives=2, seed=0) == ex  # deterministic
    orders = {tuple(d.id for d in build_examples(ds, candidates=5, max_positives=2, seed=s)[0].documents)
              for s in range(6)}
    assert len(orders) > 1  # the seed shuffles
    assert len(build_examples(ds, candidates=5, max_positives=2, max_queries=1)) == 1
    assert [e.query.id for e in build_examples(ds, candidates=5, max_positives=2, max_queries=1, sample="first")] == ["Q0"]
    with pytest.raises(ValueError, match="sample must be one of"):
        build_examples(ds, candidates=5, max_positives=2, sample="last")
    none = load_dataset(str(write_beir(tmp_path / "none", [("Q2", "D7", 0)])), split="train")
    with pytest.raises(ValueError, match=r"at least 1 query with a relevant document .* has 0 of its 1 judged"):
        build_examples(none, candidates=5, max_positives=2)


# ----------------------------------------------------------------------------------------------- CLI

def test_cli_train_blockrank(model_dir, tmp_path):
    import typer
    from typer.testing import CliRunner

    from attnsift.cli.train import train_app
    from attnsift.rerank.llm import load_causal_lm

    app = typer.Typer()  # registered as in attnsift.cli.main
    app.add_typer(train_app, name="train")

    beir = write_beir(tmp_path / "beir", QRELS)
    out = tmp_path / "run"
    args = ["train", "blockrank", "--dataset", str(beir), "--split", "train", "--model", str(model_dir), "--out", str(out),
            "--candidates", "4", "--steps", "2", "--block-tokens", "32", "--scoring-layer", "1", "--lr", "1e-4",
            "--threads", "1", "--no-progress"]
    runner = CliRunner()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["steps"] == 2 and summary["examples"] == 2 and summary["scoring_layer"] == 1
    assert len((out / "loss.jsonl").read_text().splitlines()) == 2
    model, _ = load_causal_lm(summary["model"])
    assert model.config.num_hidden_layers == 2

    res = runner.invoke(app, args)  # out exists, no --resume / --overwrite
    assert res.exit_code == 2 and "--resume" in res.output and "--overwrite" in res.output
    res = runner.invoke(app, args + ["--resume"])  # nothing left to do: same result, exit 0
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["start_step"] == 2

    for bad, message in (
        (["--lr", "0"], "lr must be a positive"),
        (["--candidates", "1"], "candidates must be an integer >= 2"),
        (["--dataset", str(tmp_path / "nowhere")], "no data set folder"),
        (["--split", "dev"], "qrels/dev.tsv"),
        # checked before the data set (which does not exist here) is read
        (["--dataset", str(tmp_path / "nowhere"), "--model", "smollm2-135mm"], "did you mean 'smollm2-135m'"),
        (["--dataset", str(tmp_path / "nowhere"), "--device", "gpu0"], "--device 'gpu0' is not a device"),
        (["--dataset", str(tmp_path / "nowhere"), "--max-queries", "0"], "--max-queries"),
    ):
        res = runner.invoke(app, args[:-1] + ["--overwrite", "--no-progress"] + bad)
        assert res.exit_code == 2, res.output
        assert message in res.output, res.output
    none = write_beir(tmp_path / "none", [("Q2", "D7", 0)])
    res = runner.invoke(app, ["train", "blockrank", "--dataset", str(none), "--model", str(model_dir), "--out",
                                    str(tmp_path / "run2"), "--no-progress"])
    assert res.exit_code == 2 and "has 0 of its 1 judged queries" in res.output


def test_max_queries_takes_a_seeded_random_sample_in_file_order(tmp_path):
    from attnsift.eval.datasets import load_dataset

    rows = [(f"Q{i}", f"D{i}", 1) for i in range(3)]
    ds = load_dataset(str(write_beir(tmp_path / "beir", rows)), split="train")
    picks = {s: [e.query.id for e in build_examples(ds, candidates=4, max_positives=1, seed=s, max_queries=2)]
             for s in range(8)}
    assert all(len(p) == 2 and p == sorted(p) for p in picks.values())  # two queries, file order
    assert len({tuple(p) for p in picks.values()}) > 1  # the seed chooses which
    assert picks[3] == [e.query.id for e in build_examples(ds, candidates=4, max_positives=1, seed=3, max_queries=2)]
    first = [e.query.id for e in build_examples(ds, candidates=4, max_positives=1, seed=5, max_queries=2, sample="first")]
    assert first == ["Q0", "Q1"]
    with pytest.raises(ValueError, match="query_sample must be one of"):
        TrainConfig(query_sample="best")


def test_runs_saved_before_query_sample_resume_as_first_n(tmp_path):
    import dataclasses

    from attnsift.train.blockrank import _check_resume_config

    old = dataclasses.asdict(TrainConfig(max_queries=5, query_sample="first"))
    del old["query_sample"]  # a train_config.json written before the option existed
    _check_resume_config(old, TrainConfig(max_queries=5, query_sample="first"), tmp_path)
    with pytest.raises(ValueError, match="query_sample: 'first' -> 'random'"):
        _check_resume_config(old, TrainConfig(max_queries=5), tmp_path)


def test_differentiable_scores_apply_soft_capping_like_inference():
    """Gemma 2 caps its attention logits: the training scores must cap them too, or fine-tuning would
    optimise another function than the one BlockRank reads at inference."""
    torch.manual_seed(2)
    q, k = torch.randn(2, 4, 8) * 3, torch.randn(20, 2, 8) * 3
    off = [0, 3, 7, 12, 18, 20]
    ref = torch.zeros(3)
    for p in range(2):
        for h in range(4):
            s = k[3:18, h // 2] @ q[p, h] * 0.35
            w = torch.softmax(torch.tanh(s / 2.0) * 2.0, dim=0)
            ref += torch.stack([w[0:4].sum(), w[4:9].sum(), w[9:15].sum()]) / 8
    capped = differentiable_document_scores(q, k, off, 0.35, softcap=2.0)
    assert torch.allclose(capped, ref, atol=1e-6)
    assert not torch.allclose(differentiable_document_scores(q, k, off, 0.35), ref, atol=1e-3)


def test_training_scores_equal_inference_scores_on_a_softcapped_family():
    from families import build

    from attnsift.attention_kernels.hf_blockrank import BlockRankCapture, document_scores, run_capture

    model = build("Gemma 2", seed=0, for_blockrank=True).eval()
    if getattr(model.config, "attn_logit_softcapping", None) is None:
        pytest.skip("this transformers' Gemma 2 config has no soft-capping")
    enc = encode_example(toy_example(4), tokenizer(), **ENC)
    layer = model.config.num_hidden_layers - 1
    parts = example_losses(model, enc, scoring_layer=layer, lambda_aux=1.0, tau=0.05)
    cap = BlockRankCapture(block_offsets=torch.tensor(enc.block_offsets), scoring_layer=layer,
                           query_rows=torch.tensor(enc.query_rows), early_exit=True, impl="reference")
    with torch.no_grad():
        run_capture(model, torch.tensor(enc.input_ids[:enc.prompt_tokens]), torch.tensor(enc.position_ids[:enc.prompt_tokens]), cap)
    inference = document_scores(cap, impl="reference")
    assert torch.allclose(parts["scores"].float(), inference.float(), atol=2e-5), (parts["scores"], inference)
