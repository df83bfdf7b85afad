"""benchmarks/rerank_gpu_cost.py at toy shapes on CPU: the code a lent GPU runs at Mistral-7B shapes."""
import pytest
from helpers import load_benchmark

pytest.importorskip("torch")
pytest.importorskip("transformers")


def _load():
    return load_benchmark("rerank_gpu_cost")


def test_synthetic_tokenizer_has_a_chat_template_and_one_token_per_word():
    tok = _load().synthetic_tokenizer(vocab=100)
    assert len(tok("w1 w2 w3", add_special_tokens=False)["input_ids"]) == 3
    text = tok.apply_chat_template([{"role": "user", "content": "w7"}], tokenize=False, add_generation_prompt=True)
    assert text == "<s>[INST] w7 [/INST]"


def test_cost_benchmark_runs_both_rerankers_and_blockrank_grows_linearly(tmp_path):
    bench = _load()
    res = bench.main(["--shape", "tiny", "--device", "cpu", "--candidates", "2", "4", "6", "--doc-tokens", "8",
                      "--repeats", "1", "--out", str(tmp_path)])
    rows = {(r["system"], r["candidates"]): r for r in res["rows"]}
    assert not [r for r in res["rows"] if "error" in r]
    assert set(rows) == {(s, n) for s in ("blockrank", "icr") for n in (2, 4, 6)}
    t2, t4, t6 = (rows[("blockrank", n)]["tokens"] for n in (2, 4, 6))
    assert t4 - t2 == t6 - t4 >= 2 * 8  # every document adds the same block (8 words + its ID frame)
    assert rows[("blockrank", 2)]["scoring_layer"] == 2  # middle of the tiny model's 4 layers
    md = (tmp_path / "rerank_cost_tiny_cpu.md").read_text()
    assert "| blockrank | 6 |" in md and "ICR time / BlockRank time" in md
