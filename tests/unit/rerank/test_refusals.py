"""Models whose attention cannot be read are refused with one line that says why, before any work: an
encoder, a seq2seq model, state-space / recurrent models and their hybrids with attention, and a file
that is not a model. Built offline from configs (tests/families.py: REFUSED)."""
from __future__ import annotations

from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("torch")

import families as F  # noqa: E402  (tests/ is on sys.path)
from attnsift.rerank.llm import attention_problem, causal_lm_problem, load_causal_lm  # noqa: E402

WHY = {
    "encoder": "bidirectional encoder",
    "seq2seq": "encoder-decoder",
    "state-space": "state-space/recurrent model .*no attention over the documents to read",
    "hybrid": "hybrid of attention and state-space",
    "recurrent": "hybrid of attention and state-space",
    "linear-attention hybrid": "hybrid of attention and state-space, recurrent or linear-attention layers",
}


def _one_line(info: pytest.ExceptionInfo) -> str:
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("kind", sorted(F.REFUSED))
def test_refused_kind_from_a_saved_config(kind: str, tmp_path: Path):
    config = F.refused_config(kind)
    folder = tmp_path / kind.replace(" ", "-")
    config.save_pretrained(folder)
    with pytest.raises(ValueError, match=WHY[kind]) as info:
        load_causal_lm(str(folder), device="cpu")
    msg = _one_line(info)
    assert str(folder) in msg


@pytest.mark.parametrize("kind", ["state-space", "hybrid"])
def test_refused_kind_as_a_loaded_model(kind: str):
    """A model object handed to a reranker is refused the same way (before any prompt is built)."""
    import torch

    from attnsift.rerank.icr import ICRReranker

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(F.refused_config(kind)).eval()
    with pytest.raises(ValueError, match=WHY[kind]) as info:
        ICRReranker(model, tokenizer=object())
    assert type(model).__name__ in _one_line(info)


def test_a_file_that_is_not_a_model(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_text("not a model")
    with pytest.raises(ValueError, match="is a file, not a model") as info:
        load_causal_lm(str(path), device="cpu")
    assert str(path) in _one_line(info)
    fake = tmp_path / "weights.gguf"
    fake.write_bytes(b"nope")
    with pytest.raises(ValueError, match="is not a GGUF file"):
        load_causal_lm(str(fake), device="cpu")


def test_every_shipped_recurrent_or_hybrid_type_is_refused_and_checked_families_are_not():
    """Every model type transformers ships whose default config has non-attention layer types is refused;
    the families of the table are accepted."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from attnsift.rerank.llm import ATTENTION_LAYER_TYPES, HYBRID_TYPES, RECURRENT_TYPES

    for t in sorted((HYBRID_TYPES | RECURRENT_TYPES) & set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)):
        try:
            config = CONFIG_MAPPING[t]()
        except Exception:  # noqa: BLE001 - some configs need arguments; the name list still refuses them
            continue
        assert attention_problem(config), t
    for name in ("mamba", "mamba2", "falcon_mamba", "rwkv", "jamba", "falcon_h1", "recurrent_gemma", "zamba",
                 "zamba2", "bamba", "qwen3_next", "granitemoehybrid", "nemotron_h", "lfm2"):
        if name in CONFIG_MAPPING:
            assert causal_lm_problem(CONFIG_MAPPING[name]()), name
    for f in F.FAMILIES:
        config = f.config(100)
        assert causal_lm_problem(config) is None, (f.model_type, causal_lm_problem(config))
        assert set(getattr(config, "layer_types", None) or []) <= ATTENTION_LAYER_TYPES


def test_alibi_and_differential_attention_are_refused():
    bloom = transformers.BloomConfig(hidden_size=32, n_layer=1, n_head=2)
    assert "ALiBi" in attention_problem(bloom)
    falcon = transformers.FalconConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, alibi=True)
    assert "ALiBi" in attention_problem(falcon)
    assert attention_problem(transformers.FalconConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2)) is None
    assert "differential" in attention_problem(transformers.DiffLlamaConfig(hidden_size=32, num_hidden_layers=1,
                                                                            num_attention_heads=2))
