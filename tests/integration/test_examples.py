"""The framework examples (examples/*_rerank.py): each runs offline over SciFact and prints the reranked
documents; the three frameworks print the same documents with the same scores (same BM25 candidates,
same ICR). In-process with a tiny random-weight model (fast), and as scripts with the shipped SmolLM2 (slow)."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
FRAMEWORKS = {"langchain": "langchain_core", "llamaindex": "llama_index.core", "haystack": "haystack"}
ROW = re.compile(r"^(\d+)\. (\S+)  score=(-?[\d.]+)  first_stage_rank=(\d+)  ")


def _rows(text: str, framework: str, top: int, candidates: int) -> list[tuple[str, str, int]]:
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"{framework}: ")))
    rows = [ROW.match(line) for line in lines[start + 1:start + 1 + top]]
    assert all(rows), lines
    assert [int(m.group(1)) for m in rows] == list(range(1, top + 1))
    scores = [float(m.group(3)) for m in rows]
    assert scores == sorted(scores, reverse=True)
    ranks = [int(m.group(4)) for m in rows]
    assert len(set(ranks)) == top and all(1 <= r <= candidates for r in ranks)
    return [(m.group(2), m.group(3), int(m.group(4))) for m in rows]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}_rerank.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_in_process_with_a_tiny_model(tiny_model_dir, data_dir, monkeypatch, capsys):
    for module in FRAMEWORKS.values():
        pytest.importorskip(module)
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the examples import their shared _scifact.py
    printed = {}
    for name in FRAMEWORKS:
        out = _load(name).main(["--model", str(tiny_model_dir), "--docs", "300", "--candidates", "5", "--top", "2"])
        assert len(out) == 2
        printed[name] = _rows(capsys.readouterr().out, name, 2, 5)
    assert printed["langchain"] == printed["llamaindex"] == printed["haystack"]


@pytest.fixture(scope="module")
def shipped_runs(data_dir):
    """Each example as a script with its defaults (SmolLM2-135M, 1,000 abstracts, 8 candidates, top 3)."""
    env = {**os.environ, "ATTNSIFT_DATA": str(data_dir), "HF_HUB_OFFLINE": "1"}
    out = {}
    for name, module in FRAMEWORKS.items():
        if importlib.util.find_spec(module.split(".")[0]) is None:
            continue
        proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}_rerank.py")], capture_output=True, text=True,
                              env=env, timeout=1200, cwd=REPO)
        out[name] = proc
    return out


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_example_runs_with_the_shipped_model(shipped_runs, name):
    if name not in shipped_runs:
        pytest.skip(f"{FRAMEWORKS[name]} is not installed")
    proc = shipped_runs[name]
    if proc.returncode and "smollm2-135m" in proc.stderr and "not" in proc.stderr:
        pytest.skip(f"the shipped model is not available: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout, name, 3, 8)
    assert "A deficiency of vitamin B12" in proc.stdout
    others = [_rows(p.stdout, n, 3, 8) for n, p in shipped_runs.items() if p.returncode == 0]
    assert all(o == rows for o in others)  # every framework: the same documents, scores and first-stage ranks
