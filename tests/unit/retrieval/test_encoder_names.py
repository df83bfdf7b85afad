"""Encoder names are checked before any work, and ``encoder=`` is the keyword (``model=`` deprecated)."""
from __future__ import annotations

import warnings

import pytest

from attnsift.errors import AttnsiftDeprecationWarning
from attnsift.retrieval.encoders import MINILM_ALIASES, check_encoder_name
from attnsift.types import Document

DOCS = [Document("a", "Cats purr when they are content."), Document("b", "Interest rates rose again.")]


def _fake_hub_cache(root, repo_id: str, commit: str = "0123abcd"):
    """A Hugging Face hub cache holding one snapshot of ``repo_id`` (the layout huggingface_hub reads)."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}", encoding="utf-8")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    return root


def test_known_aliases_and_folders_pass(tmp_path):
    for name in (*MINILM_ALIASES, "MiniLM"):
        check_encoder_name(name)
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "config.json").write_text("{}", encoding="utf-8")
    check_encoder_name(str(tmp_path / "enc"))


def test_hub_id_in_the_local_cache_passes(tmp_path):
    hub = _fake_hub_cache(tmp_path / "hub", "someone/tiny-encoder")
    check_encoder_name("someone/tiny-encoder", hub_cache=hub)
    with pytest.raises(ValueError, match=r"a hub id in the local cache \(.*hub\)"):
        check_encoder_name("someone/tiny-encodr", hub_cache=hub)


@pytest.mark.parametrize("name", ["minlm", "./models/my-encoder", "no/such/path/enc", "BAAI/bge-small-en-v1.5-typo"])
def test_unknown_names_get_one_line(name, tmp_path):
    with pytest.raises(ValueError) as info:
        check_encoder_name(name, hub_cache=tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"encoder {name!r} is not a known alias (minilm, all-minilm-l6-v2, ")
    assert f"a local folder, or a hub id in the local cache ({tmp_path})" in msg and "check the spelling" in msg
    assert "\n" not in msg and "Repo id must be" not in msg


def test_folder_without_config_and_non_strings(tmp_path):
    with pytest.raises(ValueError, match=r"has no config.json"):
        check_encoder_name(str(tmp_path))
    for bad in ("", "  ", None, 3):
        with pytest.raises(TypeError, match="non-empty string"):
            check_encoder_name(bad)


def test_encoder_and_retrievers_check_the_name_before_work(tmp_path):
    pytest.importorskip("transformers")
    from attnsift.retrieval.dense import DenseRetriever
    from attnsift.retrieval.encoders import Encoder
    from attnsift.retrieval.late_interaction import LateInteractionRetriever

    def corpus_never_read():
        raise AssertionError("the corpus was read before the encoder name was checked")
        yield  # pragma: no cover

    with pytest.raises(ValueError, match="encoder './typo/enc' is not a known alias") as info:
        Encoder("./typo/enc")
    assert "Repo id must be" not in str(info.value)
    with pytest.raises(ValueError, match="encoder 'minlm' is not a known alias"):
        DenseRetriever.from_corpus(corpus_never_read(), "minlm")
    with pytest.raises(ValueError, match="encoder 'minlm' is not a known alias"):
        LateInteractionRetriever.from_corpus(corpus_never_read(), encoder="minlm")
    # Loading: the name is checked before the index folder is read (this one does not exist).
    for cls in (DenseRetriever, LateInteractionRetriever):
        with pytest.raises(ValueError, match="encoder 'minlm' is not a known alias"):
            cls.load(tmp_path / "no-index", encoder="minlm")


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("faiss")
    pytest.importorskip("transformers")
    from attnsift.retrieval.encoders import Encoder

    return Encoder("minilm", device="cpu")


def test_model_keyword_is_deprecated_but_works(minilm, tmp_path):
    from attnsift.retrieval.dense import DenseRetriever
    from attnsift.retrieval.late_interaction import LateInteractionRetriever

    with pytest.warns(AttnsiftDeprecationWarning, match=r"model= is deprecated .* use encoder=") as rec:
        old = DenseRetriever.from_corpus(DOCS, model=minilm, cache=False)
    assert rec[0].filename == __file__  # the warning points at the caller's line
    new = DenseRetriever.from_corpus(DOCS, encoder=minilm, cache=False)
    positional = DenseRetriever.from_corpus(DOCS, minilm, cache=False)
    assert old.encoder is new.encoder is positional.encoder is minilm
    path = new.save(tmp_path / "dense")
    with pytest.warns(AttnsiftDeprecationWarning, match="model="):
        assert DenseRetriever.load(path, model=minilm).num_docs == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spellings, and model=None (what callers pass through), warn nothing
        assert DenseRetriever.load(path, encoder=minilm).num_docs == 2
        assert DenseRetriever.load(path, minilm, verify=False).num_docs == 2
        assert DenseRetriever.load(path, model=None, encoder=minilm).num_docs == 2
    with pytest.raises(ValueError, match="give the encoder once, as encoder="):
        DenseRetriever.from_corpus(DOCS, encoder=minilm, model="minilm")
    with pytest.warns(AttnsiftDeprecationWarning, match="model="):
        late = LateInteractionRetriever.from_corpus(DOCS, model=minilm, cache=False)
    late_path = late.save(tmp_path / "late")
    with pytest.warns(AttnsiftDeprecationWarning, match="model="):
        assert LateInteractionRetriever.load(late_path, model=minilm).doc_ids == ["a", "b"]
    assert LateInteractionRetriever.load(late_path, encoder=minilm).retrieve("cats", k=1).doc_ids == ["a"]


def test_online_an_uncached_hub_id_is_left_to_transformers(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    check_encoder_name("someone/some-encoder", hub_cache=tmp_path)  # downloaded when it loads
    with pytest.raises(ValueError, match="is not a known alias"):
        check_encoder_name("minlm", hub_cache=tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="a hub id in the local cache"):
        check_encoder_name("someone/some-encoder", hub_cache=tmp_path)
