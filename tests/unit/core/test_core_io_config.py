import dataclasses
from pathlib import Path
from typing import Literal, Optional

import pytest

from attnsift.config import config_from_options, parse_option_strings
from attnsift.errors import IndexCorruptedError, MissingDependencyError, require
from attnsift.io import atomic_dir, atomic_file, read_manifest, write_manifest
from attnsift.registry import build_reranker, build_retriever


def test_atomic_file_leaves_nothing_on_failure(tmp_path: Path):
    target = tmp_path / "run.trec"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as fh:
            fh.write("partial")
            raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.trec"]  # no temp file left


def test_atomic_file_has_ordinary_permissions(tmp_path: Path):
    import os
    import stat

    with atomic_file(tmp_path / "a.txt") as fh:
        fh.write("x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask


def test_atomic_dir_replaces_only_on_success(tmp_path: Path):
    target = tmp_path / "idx"
    with atomic_dir(target) as d:
        (d / "a.bin").write_bytes(b"1")
    assert (target / "a.bin").read_bytes() == b"1"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "a.bin").write_bytes(b"2")
            raise RuntimeError("boom")
    assert (target / "a.bin").read_bytes() == b"1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    with pytest.raises(FileExistsError):
        with atomic_dir(target, overwrite=False):
            pass


def test_manifest_detects_corruption_and_kind(tmp_path: Path):
    with atomic_dir(tmp_path / "idx") as d:
        (d / "data.bin").write_bytes(b"abcdef")
        write_manifest(d, "bm25", docs=2)
    m = read_manifest(tmp_path / "idx", "bm25")
    assert m["docs"] == 2 and "data.bin" in m["files"]
    with pytest.raises(IndexCorruptedError, match="faiss"):
        read_manifest(tmp_path / "idx", "faiss")
    (tmp_path / "idx" / "data.bin").write_bytes(b"abcdeX")
    with pytest.raises(IndexCorruptedError, match="checksum"):
        read_manifest(tmp_path / "idx", "bm25")
    (tmp_path / "idx" / "data.bin").unlink()
    with pytest.raises(IndexCorruptedError, match="missing"):
        read_manifest(tmp_path / "idx", "bm25")
    with pytest.raises(IndexCorruptedError, match="build one"):
        read_manifest(tmp_path / "nothing", "bm25")
    (tmp_path / "idx" / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorruptedError, match="JSON"):
        read_manifest(tmp_path / "idx", "bm25")


def test_require_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"attnsift\[kernels\]") as info:
        require("surely_not_a_module_xyz", "kernels")
    assert isinstance(info.value.__cause__, ImportError)


@dataclasses.dataclass(frozen=True)
class _Cfg:
    depth: int = 10
    temperature: float = 1.0
    mode: Literal["a", "b"] = "a"
    flag: bool = False
    layer: Optional[int] = None
    heads: tuple = ()


def test_config_from_options_coerces_and_rejects():
    cfg = config_from_options(_Cfg, parse_option_strings(["depth=3", "temperature=0.5", "mode=b", "flag=true",
                                                          "layer=none", "heads=1,2"]))
    assert cfg == _Cfg(3, 0.5, "b", True, None, ("1", "2"))
    with pytest.raises(ValueError, match="accepted: depth"):
        config_from_options(_Cfg, {"dept": "3"})
    with pytest.raises(ValueError, match="integer"):
        config_from_options(_Cfg, {"depth": "three"})
    with pytest.raises(ValueError, match="one of"):
        config_from_options(_Cfg, {"mode": "c"})
    with pytest.raises(ValueError, match="key=value"):
        parse_option_strings(["depth"])


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown reranker 'nope'"):
        build_reranker("nope")
    with pytest.raises(ValueError, match="unknown retriever 'nope'"):
        build_retriever("nope", [])
    with pytest.raises(ValueError, match="takes no model"):
        build_reranker("none", model="x")
