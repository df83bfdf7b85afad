"""benchmarks/icr_finetune.py: the trained quantity is ICR's raw document mass, and its gradient moves
the query span's attention towards the positive documents."""
from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from helpers import load_benchmark, tiny_llama_and_tokenizer  # noqa: E402

from attnsift.rerank.icr import ICRReranker  # noqa: E402
from attnsift.rerank.prompts import build_icr_prompt  # noqa: E402
from attnsift.types import Candidate, Document, Query, Ranking  # noqa: E402

ft = load_benchmark("icr_finetune")

DOCS = ["vitamin c in citrus fruit prevents scurvy in sailors", "the tides follow the moon",
        "a history of the printing press in europe", "lime juice was given to sailors against scurvy"]
QUERY = "what prevents scurvy?"


def fresh_model():
    m, tok = tiny_llama_and_tokenizer(layers=2, heads=2, seed=0)
    return copy.deepcopy(m), tok  # training must not touch the shared cached model


def test_forward_mass_equals_icr_raw_scores():
    model, tok = fresh_model()
    rr = ICRReranker(model, tokenizer=tok, calibration="none", reverse=False, max_words=100)
    ranking = Ranking(Query("q", QUERY), tuple(Candidate(f"d{i}", 1.0 - i / 10, Document(f"d{i}", t))
                                               for i, t in enumerate(DOCS)))
    raw = rr.score_details(ranking).raw
    lay = build_icr_prompt(tok, QUERY, [(None, t) for t in DOCS], "ie", 100, None, reverse=False)
    model.set_attn_implementation(ft.register())
    with torch.no_grad():
        m = ft.forward_mass(model, lay, [0, 1])
    assert m.shape == (len(DOCS),)
    assert torch.allclose(m, torch.tensor(raw, dtype=m.dtype), rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # one layer alone is a different (smaller) quantity
        m0 = ft.forward_mass(model, lay, [0])
    assert (m0 < m).all()


def test_forward_mass_without_the_attention_implementation_is_an_error():
    model, tok = fresh_model()
    lay = build_icr_prompt(tok, QUERY, [(None, t) for t in DOCS], "ie", 100, None, reverse=False)
    with pytest.raises(RuntimeError, match="not captured"):
        with torch.no_grad():
            ft.forward_mass(model, lay, [0, 1])


def test_training_steps_raise_the_positive_share():
    model, tok = fresh_model()
    model.set_attn_implementation(ft.register())
    model.train()
    lay = build_icr_prompt(tok, QUERY, [(None, t) for t in DOCS], "ie", 100, None, reverse=False)
    pos = torch.tensor([False, True, False, False])
    opt = torch.optim.SGD(model.parameters(), lr=0.5)

    def share() -> float:
        with torch.no_grad():
            m = ft.forward_mass(model, lay, [0, 1])
        return float(m[pos].sum() / m.sum())

    before = share()
    losses = []
    for _ in range(15):
        loss = ft.icr_loss(ft.forward_mass(model, lay, [0, 1]), pos, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    after = share()
    assert after > before + 0.05, (before, after)
    assert losses[-1] < losses[0]
    # the loss is -log(positive share)
    assert losses[0] == pytest.approx(-torch.log(torch.tensor(before)).item(), rel=1e-4)


def test_calibrated_loss_divides_by_the_prior_and_keeps_its_gradient_out():
    m = torch.tensor([0.2, 0.1, 0.4], requires_grad=True)
    prior = torch.tensor([0.4, 0.05, 0.4], requires_grad=True)
    pos = torch.tensor([False, True, False])
    w = torch.tensor([0.5, 2.0, 1.0])  # m / prior
    loss = ft.icr_loss(m, pos, 1.0, prior)
    assert float(loss.detach()) == pytest.approx(-float(torch.log(w[1] / w.sum())), rel=1e-6)
    assert float(ft.icr_loss(m, pos, 1.0).detach()) == pytest.approx(-float(torch.log(m[1].detach() / m.sum().detach())), rel=1e-6)
    loss.backward()
    assert prior.grad is None and m.grad is not None and float(m.grad[1]) < 0


def test_layers_option_and_model_checks_give_clear_errors():
    from types import SimpleNamespace

    assert ft.parse_layers("all", 3) == [0, 1, 2]
    assert ft.parse_layers("2,0,-1", 3) == [0, 2]
    for bad, msg in (("1,x", "comma-separated"), ("3", "out of range"), (",", "none given")):
        with pytest.raises(SystemExit, match=msg):
            ft.parse_layers(bad, 3)
    ft.check_full_attention(SimpleNamespace(sliding_window=None))
    ft.check_full_attention(SimpleNamespace(sliding_window=4096, layer_types=["full_attention"] * 2))
    with pytest.raises(SystemExit, match="full-attention models only"):
        ft.check_full_attention(SimpleNamespace(text_config=SimpleNamespace(
            sliding_window=512, layer_types=["sliding_attention", "full_attention"])))
