"""attnsift.io under faults: permissions from the umask, overwrite without a window, stale temporaries."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from attnsift import io as aio
from attnsift.errors import IndexCorruptedError
from attnsift.io import atomic_dir, atomic_file, read_manifest, write_manifest


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield 0o022
    os.umask(old)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_dir_gets_the_umask_mode(tmp_path: Path, umask022):
    with atomic_dir(tmp_path / "idx") as d:
        (d / "a.bin").write_bytes(b"1")
    assert stat.S_IMODE((tmp_path / "idx").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "idx" / "a.bin").stat().st_mode) == 0o644


def test_atomic_file_gets_the_umask_mode_binary(tmp_path: Path, umask022):
    with atomic_file(tmp_path / "a.npy", "wb") as fh:
        fh.write(b"x")
    assert stat.S_IMODE((tmp_path / "a.npy").stat().st_mode) == 0o644


def test_overwrite_leaves_no_moment_without_the_folder(tmp_path: Path, monkeypatch):
    target = tmp_path / "idx"
    with atomic_dir(target) as d:
        (d / "v").write_text("1")
    seen = []
    for name in ("replace", "rename"):
        real = getattr(os, name)

        def spy(src, dst, *a, _real=real, **kw):
            _real(src, dst, *a, **kw)
            seen.append(target.is_dir())

        monkeypatch.setattr(aio.os, name, spy)
    with atomic_dir(target) as d:
        (d / "v").write_text("2")
    monkeypatch.undo()
    assert (target / "v").read_text() == "2"
    assert all(seen), f"the folder was missing after a rename: {seen}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_overwrite_fallback_without_exchange_restores_on_failure(tmp_path: Path, monkeypatch):
    target = tmp_path / "idx"
    with atomic_dir(target) as d:
        (d / "v").write_text("1")
    monkeypatch.setattr(aio, "_exchange", lambda a, b: False)
    with atomic_dir(target) as d:
        (d / "v").write_text("2")
    assert (target / "v").read_text() == "2"
    real = os.replace
    calls = []

    def failing_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(aio.os, "replace", failing_second)
    with pytest.raises(OSError):
        with atomic_dir(target) as d:
            (d / "v").write_text("3")
    monkeypatch.undo()
    assert (target / "v").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_stale_temporaries_of_dead_runs_are_cleaned_on_the_next_write(tmp_path: Path):
    dead, alive = _dead_pid(), os.getppid()
    stale_dir = tmp_path / f".idx.{dead}-0a1b2c3d.tmp"
    stale_dir.mkdir()
    (stale_dir / "data.npy").write_bytes(b"half")
    stale_file = tmp_path / f".run.trec.{dead}-0a1b2c3d.tmp"
    stale_file.write_text("half")
    live = tmp_path / f".idx.{alive}-0a1b2c3d.tmp"
    live.mkdir()
    other = tmp_path / f".other.{dead}-0a1b2c3d.tmp"
    other.mkdir()
    with atomic_dir(tmp_path / "idx") as d:
        (d / "v").write_text("1")
    with atomic_file(tmp_path / "run.trec") as fh:
        fh.write("q 0 d 1 1 x\n")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert stale_dir.name not in names and stale_file.name not in names
    assert live.name in names and other.name in names  # a running writer's, and another target's


def test_failed_dir_write_removes_its_temporary(tmp_path: Path):
    with pytest.raises(OSError):
        with atomic_dir(tmp_path / "idx") as d:
            (d / "a").write_text("x")
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_read_manifest_names_what_and_how_to_rebuild(tmp_path: Path):
    with atomic_dir(tmp_path / "m") as d:
        (d / "w.bin").write_bytes(b"abc")
        write_manifest(d, "model-cache")
    (tmp_path / "m" / "w.bin").write_bytes(b"abd")
    with pytest.raises(IndexCorruptedError, match=r"converted model.*delete the folder") as info:
        read_manifest(tmp_path / "m", "model-cache", what="converted model",
                      fix=f"delete the folder {tmp_path / 'm'} and run again to rebuild it")
    assert "\n" not in str(info.value) and "index" not in str(info.value)
