"""`make install` records the data folder in the venv, so a process of that venv finds the data sets
without $ATTNSIFT_DATA (what `make run` followed by the README's commands in the venv needs)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_install_records_the_data_folder_and_the_venv_reads_it(tmp_path):
    venv, data = tmp_path / "venv", tmp_path / "data"
    (data / "toy").mkdir(parents=True)
    # A bare venv that sees this checkout's packages: make's install step finds it up to date (.installed
    # newer than pyproject.toml and the Makefile), so only the data-folder recording runs.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    site.mkdir(parents=True, exist_ok=True)
    (site / "outer.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    (venv / ".installed").touch()
    later = time.time() + 5
    os.utime(venv / ".installed", (later, later))
    env = {k: v for k, v in os.environ.items() if k not in ("ATTNSIFT_DATA", "MAKEFLAGS", "MAKELEVEL")}
    res = subprocess.run(["make", "-C", str(REPO), "install", f"VENV={venv}", f"ATTNSIFT_DATA={data}"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "pip" not in res.stdout  # nothing was reinstalled
    recorded = venv / "etc" / "attnsift" / "data-dir"
    assert recorded.read_text().strip() == str(data)

    code = "import json; from attnsift.eval.datasets import data_folder_info; print(json.dumps(data_folder_info()))"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == {"path": str(data), "source": "install", "exists": True}
    # $ATTNSIFT_DATA still wins
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], env={**env, "ATTNSIFT_DATA": str(tmp_path)},
                         capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout)["source"] == "ATTNSIFT_DATA"
