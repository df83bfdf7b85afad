"""`benchmarks/resume_check.py`, run as a script on two tiny `bench quality`-layout folders."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "resume_check.py"


def _folder(root: Path, scores: dict[str, float]) -> Path:
    """A bench --out folder: results.json naming the result folder, metrics.json inside it."""
    rel = f"scifact/bm25/0123456789ab/{len(scores)}q-00000000"
    (root / rel).mkdir(parents=True)
    report = {"per_query": {q: {"nDCG@10": s} for q, s in scores.items()}}
    (root / rel / "metrics.json").write_text(json.dumps({"report": report}))
    (root / "results.json").write_text(json.dumps({"results": [{"dataset": "scifact", "system": "bm25", "folder": rel}]}))
    return root


def _run(*args: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_identical_figures_pass_and_a_difference_fails(tmp_path):
    full = _folder(tmp_path / "full", {"q1": 0.5, "q2": 0.25, "q3": 1.0})
    same = _run(_folder(tmp_path / "resumed", {"q1": 0.5, "q2": 0.25}), full)
    assert same.returncode == 0, same.stderr
    assert "| scifact | bm25 | 2 | 0.0e+00 |" in same.stdout and "identical: True, queries compared: 2" in same.stdout
    differ = _run(_folder(tmp_path / "other", {"q1": 0.5, "q2": 0.75}), full)
    assert differ.returncode == 1 and "| scifact | bm25 | 2 | 5.0e-01 |" in differ.stdout


def test_a_query_missing_from_the_uninterrupted_run_is_an_error(tmp_path):
    proc = _run(_folder(tmp_path / "resumed", {"q9": 0.5}), _folder(tmp_path / "full", {"q1": 0.5}))
    assert proc.returncode != 0 and "lacks query 'q9'" in proc.stderr
