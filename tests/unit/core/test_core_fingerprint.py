"""attnsift.fingerprint: content hashes, the size/mtime cache, folders, in-memory documents."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from attnsift import fingerprint as fp
from attnsift.types import Document


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNSIFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fp, "RACY_SECONDS", 0.0)


def _old(path, seconds_ago=100):
    t = os.stat(path).st_mtime - seconds_ago
    os.utime(path, (t, t))


def test_file_fingerprint_is_sha256_of_content(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello\n")
    assert fp.file_fingerprint(f) == hashlib.sha256(b"hello\n").hexdigest()
    g = tmp_path / "sub" / "b.txt"
    g.parent.mkdir()
    g.write_bytes(b"hello\n")
    assert fp.file_fingerprint(str(g)) == fp.file_fingerprint(f)  # content, not place


def test_second_call_served_from_cache(tmp_path, monkeypatch):
    f = tmp_path / "a.txt"
    f.write_bytes(b"x" * 1000)
    _old(f)
    first = fp.file_fingerprint(f)
    cache = json.loads((tmp_path / "cache" / "fingerprints.json").read_text())
    assert cache[str(f.resolve())]["sha256"] == first
    calls = []
    monkeypatch.setattr(fp, "sha256_file", lambda p: calls.append(p) or "never")
    assert fp.file_fingerprint(f) == first
    assert calls == []


def test_changed_file_is_rehashed(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"one\n")
    _old(f)
    before = fp.file_fingerprint(f)
    st = os.stat(f)
    f.write_bytes(b"two\n")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert fp.file_fingerprint(f) == hashlib.sha256(b"two\n").hexdigest() != before
    f.write_bytes(b"three\n")  # another size, same mtime
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert fp.file_fingerprint(f) == hashlib.sha256(b"three\n").hexdigest()


def test_recent_file_not_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(fp, "RACY_SECONDS", 3600.0)
    f = tmp_path / "a.txt"
    f.write_bytes(b"fresh")
    fp.file_fingerprint(f)
    assert not (tmp_path / "cache" / "fingerprints.json").exists()


def test_damaged_or_unwritable_cache_is_harmless(tmp_path, monkeypatch):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "fingerprints.json").write_text("{not json")
    f = tmp_path / "a.txt"
    f.write_bytes(b"abc")
    _old(f)
    assert fp.file_fingerprint(f) == hashlib.sha256(b"abc").hexdigest()
    monkeypatch.setenv("ATTNSIFT_CACHE", str(f / "below-a-file"))  # cannot be created
    assert fp.file_fingerprint(f) == hashlib.sha256(b"abc").hexdigest()


def test_file_fingerprint_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        fp.file_fingerprint(tmp_path / "missing")
    with pytest.raises(IsADirectoryError, match="folder_fingerprint"):
        fp.file_fingerprint(tmp_path)
    with pytest.raises(TypeError, match="str or Path"):
        fp.file_fingerprint(3)


def test_folder_fingerprint(tmp_path):
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "a.bin").write_bytes(b"A")
    (d / "sub" / "b.json").write_bytes(b"{}")
    base = fp.folder_fingerprint(d)
    assert fp.folder_fingerprint(str(d)) == base
    (d / "sub" / "b.json").write_bytes(b"[]")
    assert fp.folder_fingerprint(d) != base
    os.rename(d / "a.bin", d / "c.bin")
    assert fp.folder_fingerprint(d) != base  # names count
    files = [d / "c.bin", d / "sub" / "b.json"]
    assert fp.folder_fingerprint(files) == fp.folder_fingerprint(list(reversed(files)))


def test_folder_fingerprint_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        fp.folder_fingerprint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no file"):
        fp.folder_fingerprint(tmp_path / "empty")
    with pytest.raises(ValueError, match="no file"):
        fp.folder_fingerprint([])
    with pytest.raises(TypeError, match="iterable of file paths"):
        fp.folder_fingerprint(42)
    with pytest.raises(TypeError, match="str or Path"):
        fp.folder_fingerprint([1])


def test_combine():
    assert fp.combine("a", {"x": 1, "y": [2]}) == fp.combine("a", {"y": [2], "x": 1})
    assert fp.combine("a", "b") != fp.combine("b", "a")
    assert fp.combine("ab") != fp.combine("a", "b")
    with pytest.raises(TypeError, match="JSON values"):
        fp.combine(object())
    with pytest.raises(TypeError, match="JSON values"):
        fp.combine(float("nan"))


def test_documents_fingerprint():
    docs = [Document("d1", "text one", "T"), Document("d2", "two")]
    base = fp.documents_fingerprint(docs)
    assert fp.documents_fingerprint(iter(docs)) == base
    assert fp.documents_fingerprint([Document("d1", "text one", "T"), Document("d2", "two!")]) != base
    assert fp.documents_fingerprint([Document("d1", "text one"), Document("d2", "two")]) != base  # title
    assert fp.documents_fingerprint([Document("d1", "T"), Document("d2", "two")]) != \
        fp.documents_fingerprint([Document("d1", "", "T"), Document("d2", "two")])
    with pytest.raises(TypeError, match="position 1"):
        fp.documents_fingerprint([docs[0], {"id": "x"}])
