"""Loading language models by name: only decoder-only LMs, one-line errors, the checked GGUF cache."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from helpers import tiny_llama_and_tokenizer  # noqa: E402

from attnsift.errors import IndexCorruptedError  # noqa: E402
from attnsift.rerank import llm  # noqa: E402
from attnsift.rerank.llm import load_causal_lm  # noqa: E402
from attnsift.rerank.llm_base import check_causal_lm  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_caches():
    _clear()
    yield
    _clear()


def _clear():
    llm._load_cached.cache_clear()
    getattr(llm, "_VERIFIED", set()).clear()


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def test_sentence_transformers_encoder_is_refused():
    from attnsift.retrieval.encoders import resolve_model

    try:
        folder = resolve_model("minilm")[1]
    except Exception as exc:  # the offline encoder package is missing
        pytest.skip(str(exc))
    with pytest.raises(ValueError, match="bidirectional encoder .*BertModel.*not a decoder-only") as info:
        load_causal_lm(folder, device="cpu")
    assert folder in _one_line(info)


def _save_config(tmp_path: Path, config) -> str:
    folder = tmp_path / config.model_type
    config.save_pretrained(folder)
    return str(folder)


def test_tiny_encoder_and_encoder_decoder_configs_are_refused(tmp_path: Path):
    small = dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    bert = _save_config(tmp_path, transformers.BertConfig(**small))
    with pytest.raises(ValueError, match="bidirectional encoder"):
        load_causal_lm(bert, device="cpu")
    bart = _save_config(tmp_path, transformers.BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1,
                                                          encoder_attention_heads=2, decoder_attention_heads=2,
                                                          encoder_ffn_dim=32, decoder_ffn_dim=32))
    with pytest.raises(ValueError, match="encoder-decoder"):
        load_causal_lm(bart, device="cpu")


def test_loaded_bert_under_its_lm_head_is_refused():
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32)
    with pytest.raises(ValueError, match="BertLMHeadModel is a bidirectional encoder"):
        check_causal_lm(transformers.BertLMHeadModel(cfg))
    check_causal_lm(transformers.BertLMHeadModel(transformers.BertConfig(**{**cfg.to_dict(), "is_decoder": True})))


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "~/no-such-model-xyz/"])
def test_missing_local_path_says_so(name: str):
    with pytest.raises(ValueError, match="does not exist; expected a decoder-only") as info:
        load_causal_lm(name, device="cpu")
    assert "Repo id" not in _one_line(info)


def test_a_file_that_is_not_a_model(tmp_path: Path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(ValueError, match="is a file, not a model"):
        load_causal_lm(str(notes), device="cpu")
    fake = tmp_path / "weights.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ValueError, match="is not a GGUF file") as info:
        load_causal_lm(str(fake), device="cpu")
    _one_line(info)


def test_converted_cache_gets_a_manifest_and_a_flipped_byte_is_an_error(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ATTNSIFT_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    model, tok = tiny_llama_and_tokenizer(layers=1, heads=2, seed=0)
    import hashlib

    key = hashlib.sha256(f"{gguf.resolve()}|{gguf.stat().st_size}|{int(gguf.stat().st_mtime)}".encode()).hexdigest()[:12]
    out = tmp_path / "cache" / "models" / f"tiny-{key}"  # where the cache keeps tiny.gguf's conversion
    assert out == llm.converted_dir(gguf)
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    # A cache converted before manifests existed: trusted on first use, manifest written.
    loaded, _ = load_causal_lm(str(gguf), device="cpu")
    assert (out / "manifest.json").is_file()
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)
    weights = out / "model.safetensors"
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the mtime kept
    _clear()
    with pytest.raises(IndexCorruptedError, match=r"model.safetensors does not match its checksum.*delete the folder") as info:
        load_causal_lm(str(gguf), device="cpu")
    assert str(out) in _one_line(info)
