"""The data folder: $ATTNSIFT_DATA, else the folder `make install` recorded under sys.prefix, else
<cache root>/data; and the messages that name it when a data set is not found."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from attnsift.errors import DatasetError

# Runs in a fresh interpreter with sys.prefix pointed at a fake venv (the install file is read from
# sys.prefix at call time), printing data_folder_info() as JSON.
_INFO = textwrap.dedent(
    """
    import json, sys
    sys.prefix = sys.argv[1]
    from attnsift.eval.datasets import data_folder_info
    print(json.dumps(data_folder_info()))
    """
)


def _info(prefix: Path, **env: str) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("ATTNSIFT_DATA", "ATTNSIFT_CACHE")}
    e.update(env)
    res = subprocess.run([sys.executable, "-c", _INFO, str(prefix)], env=e, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


def test_resolution_order_env_then_install_file_then_default(tmp_path):
    prefix, recorded, env_dir, cache = tmp_path / "venv", tmp_path / "recorded", tmp_path / "env", tmp_path / "cache"
    recorded.mkdir()
    # nothing set: the default under the cache root (which does not exist yet)
    assert _info(prefix, ATTNSIFT_CACHE=str(cache)) == {"path": str(cache / "data"), "source": "default", "exists": False}
    # the install-time file
    (prefix / "etc" / "attnsift").mkdir(parents=True)
    (prefix / "etc" / "attnsift" / "data-dir").write_text(f"{recorded}\n", encoding="utf-8")
    assert _info(prefix, ATTNSIFT_CACHE=str(cache)) == {"path": str(recorded), "source": "install", "exists": True}
    # the environment variable wins over both
    assert _info(prefix, ATTNSIFT_CACHE=str(cache), ATTNSIFT_DATA=str(env_dir)) == {
        "path": str(env_dir), "source": "ATTNSIFT_DATA", "exists": False}


def test_an_empty_install_file_falls_back_to_the_default(tmp_path):
    prefix = tmp_path / "venv"
    (prefix / "etc" / "attnsift").mkdir(parents=True)
    (prefix / "etc" / "attnsift" / "data-dir").write_text("\n", encoding="utf-8")
    assert _info(prefix, ATTNSIFT_CACHE=str(tmp_path / "c"))["source"] == "default"


def _beir(folder: Path, qrels: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "cats purr"}\n{"_id": "d2", "text": "dogs bark"}\n',
                                         encoding="utf-8")
    if qrels:
        (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "purring"}\n', encoding="utf-8")
        (folder / "qrels").mkdir()
        (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    return folder


def test_the_default_folder_is_searched_by_name(tmp_path, monkeypatch):
    from attnsift.eval.datasets import data_folder, list_datasets, load_dataset

    monkeypatch.delenv("ATTNSIFT_DATA", raising=False)
    monkeypatch.setenv("ATTNSIFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "no-venv"))
    assert data_folder() == tmp_path / "cache" / "data"
    _beir(tmp_path / "cache" / "data" / "mine")
    ds = load_dataset("mine")
    assert (ds.name, list(ds.queries), len(ds.corpus)) == ("mine", ["q1"], 2)
    assert "mine" in [r["name"] for r in list_datasets()]


def test_unknown_name_says_which_folder_was_searched_and_how_to_change_it(tmp_path, monkeypatch):
    from attnsift.eval.datasets import load_dataset

    monkeypatch.delenv("ATTNSIFT_DATA", raising=False)
    monkeypatch.setenv("ATTNSIFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "no-venv"))
    with pytest.raises(DatasetError) as e:
        load_dataset("no-such-set")
    msg = str(e.value)
    assert str(tmp_path / "cache" / "data") in msg
    assert "the default" in msg and "does not exist" in msg
    assert "export ATTNSIFT_DATA=" in msg

    monkeypatch.setenv("ATTNSIFT_DATA", str(tmp_path))
    with pytest.raises(DatasetError, match=r"from \$ATTNSIFT_DATA"):
        load_dataset("no-such-set")


def test_a_folder_with_only_a_corpus_points_to_index_input(tmp_path):
    from attnsift.eval.datasets import load_dataset

    folder = _beir(tmp_path / "mydocs", qrels=False)
    with pytest.raises(DatasetError) as e:
        load_dataset(str(folder))
    msg = str(e.value)
    assert "queries.jsonl" in msg and "qrels/test.tsv" in msg
    assert "attnsift index --input" in msg


def test_a_split_that_does_not_exist_lists_the_splits(tmp_path):
    from attnsift.eval.datasets import load_dataset

    folder = _beir(tmp_path / "set")
    with pytest.raises(DatasetError) as e:
        load_dataset(str(folder), split="dev")
    msg = str(e.value)
    assert "no split 'dev'" in msg and "splits present: test" in msg
