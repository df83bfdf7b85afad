"""The package-dir mapping must work from a built wheel, not only from the editable install."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy: an in-place build writes build/ into the checkout and can race other builds.
    src = tmp_path_factory.mktemp("src") / "attnsift"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "benchmarks", "experiments", "docs", "tests"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheels = list(out.glob("attnsift-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_contains_subpackages_under_one_import_name(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    for sub in ("retrieval", "rerank", "attention_kernels", "indexes", "eval", "cli"):
        assert f"attnsift/{sub}/__init__.py" in names, sub
    # the shipped head profiles (heads=auto) travel with the package
    assert "attnsift/rerank/profiles/icr-smollm2-135m.json" in names
    assert "attnsift/rerank/profiles/icr-gemma3-270m.json" in names
    # never top-level `eval` or `cli` modules
    assert not any(n.startswith(("eval/", "cli/", "retrieval/")) for n in names)


def test_import_from_wheel(wheel: Path, tmp_path: Path):
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = (
        "import attnsift, attnsift.eval, attnsift.cli.main, attnsift.rerank.base, attnsift.retrieval;"
        "import attnsift.attention_kernels.maxsim, sys;"
        "print(attnsift.__file__); print(attnsift.rerank.base.__file__);"
        "print('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.split()
    assert lines[0].startswith(str(target)) and lines[1].startswith(str(target))
    assert lines[2] == "False"  # importing the package and its CLI does not pull torch
