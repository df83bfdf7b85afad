"""`benchmarks/faults.py` as a subprocess on a tiny setting: one writer, one kill, no disk faults."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "faults.py"


def test_index_overwrite_killed_once_resumes_identically(tmp_path):
    data = os.environ.get("ATTNSIFT_DATA")
    if not data or not (Path(data) / "scifact").is_dir():
        pytest.skip("set ATTNSIFT_DATA to a folder holding scifact")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--writers", "index-overwrite", "--kills", "1", "--no-disk",
                           "--work", str(tmp_path / "work"), "--out", str(tmp_path / "res")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    res = json.loads((tmp_path / "res" / "faults.json").read_text())
    kill = res["writers"]["index-overwrite"]["kill"]
    assert kill["trials"] == 1 and kill["kills"] + kill["finished_before_kill"] == 1
    assert kill["identical"] == 1 and kill["temporaries_left"] == 0 and kill["name_missing_polls"] == 0
    md = (tmp_path / "res" / "faults.md").read_text()
    assert "| index-overwrite | 1 |" in md and "attnsift index --dataset scifact" in md
