"""The output folder of a BlockRank training run: atomic, resumable checkpoints and the loss log.

Layout::

    OUT/train_config.json          the configuration (a resume must match it)
    OUT/loss.jsonl                 {"step", "loss", "l_lm", "l_aux", "lr", "seconds"} per optimizer step
    OUT/checkpoints/step-000050/   model + tokenizer + trainer_state.pt (step, optimizer, RNG states)
    OUT/model/                     the final model + tokenizer

Every folder is written with :func:`attnsift.io.atomic_dir`: a checkpoint either exists complete or
not at all. The functions here take the training configuration as any dataclass (its fields are what
``train_config.json`` holds and what a resume compares).
"""
from __future__ import annotations

import dataclasses
import errno
import json
import random
import shutil
from pathlib import Path
from typing import Any

__all__ = ["STATE_FILE", "CONFIG_FILE", "LOSS_FILE", "RESUMABLE_CHANGES", "list_checkpoints", "config_dict",
           "check_resume_config", "load_model", "save_checkpoint", "load_state", "restore_state",
           "remove_partial_checkpoints",
           "rewrite_log", "prepare_out"]

STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "train_config.json"
LOSS_FILE = "loss.jsonl"
# Options that may change between a run and its resume (they do not change the result).
RESUMABLE_CHANGES = ("steps", "save_every", "keep_checkpoints", "progress")


def list_checkpoints(out: Path) -> list[Path]:
    """The complete checkpoints in ``out/checkpoints``, oldest first."""
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def config_dict(cfg: Any) -> dict[str, Any]:
    """The configuration dataclass as the dict written to ``train_config.json`` and every checkpoint."""
    return dataclasses.asdict(cfg)


def check_resume_config(saved: dict[str, Any], cfg: Any, out: Path) -> None:
    """Refuse to resume the run in ``out`` with options other than those it was started with.

    Parameters
    ----------
    saved : dict
        The run's ``train_config.json``.
    cfg : dataclass
        The configuration of this call; only ``RESUMABLE_CHANGES`` may differ.
    out : Path
        The run folder (named in the error).

    Raises
    ------
    ValueError
        Some option differs; the message lists each with its old and new value.
    """
    now = config_dict(cfg)
    saved = {"query_sample": "first", **saved}  # runs saved before the option took the first N queries
    diff = sorted(k for k in set(saved) | set(now) if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if diff:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise ValueError(
            f"--resume: the options differ from the run in {out} ({details}); resume with the same options "
            f"(only {', '.join(RESUMABLE_CHANGES)} may change) or start a new run with --overwrite"
        )


def load_model(name_or_dir: str, device: Any) -> tuple[Any, Any]:
    """``(model, tokenizer)``: a fresh float32 copy (never the in-process cache of ``load_causal_lm``:
    training mutates it) of a model alias, folder or checkpoint, on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from attnsift.rerank.llm import resolve_model_path

    path = resolve_model_path(name_or_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.to(device)
    return model, tokenizer


def _rng_state() -> dict[str, Any]:
    import torch

    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, step: int, model: Any, tokenizer: Any, optimizer: Any, cfg: Any,
                    digest: str, keep: int) -> Path:
    """Write ``out/checkpoints/step-NNNNNN`` atomically (model, tokenizer, optimizer and RNG states,
    the configuration, the examples' digest); then delete all but the ``keep`` latest checkpoints."""
    import torch

    from attnsift.io import atomic_dir

    path = out / "checkpoints" / f"step-{step:06d}"
    try:
        with atomic_dir(path) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            torch.save({"step": step, "optimizer": optimizer.state_dict(), "rng": _rng_state(),
                        "config": config_dict(cfg), "examples_digest": digest}, tmp / STATE_FILE)
    except RuntimeError as exc:
        # torch's zip writer reports a failed write (a full disk, say) as a RuntimeError, not an OSError.
        free = shutil.disk_usage(out).free
        raise OSError(errno.EIO, f"could not write the checkpoint ({str(exc).splitlines()[0]}); {free} bytes are "
                      "free there: free space or choose another --out, then rerun with --resume", str(path)) from exc
    for old in list_checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def load_state(checkpoint: Path, digest: str) -> dict[str, Any]:
    """The trainer state of ``checkpoint`` (``step``, ``optimizer``, ``rng``, ...).

    Raises
    ------
    ValueError
        The checkpoint was trained on other prompts than those whose digest is ``digest``.
    """
    import torch

    state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    if state.get("examples_digest") != digest:
        raise ValueError(
            f"--resume: the training prompts differ from those of the checkpoint {checkpoint} (data set or "
            "corpus changed?); start a new run with --overwrite"
        )
    return state


def restore_state(optimizer: Any, state: dict[str, Any]) -> None:
    """Put the optimizer and the torch / Python RNGs back as they were when ``state`` was saved."""
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"])


def remove_partial_checkpoints(out: Path) -> None:
    """Delete the temporary folders of checkpoints that a killed run never finished."""
    if (out / "checkpoints").is_dir():
        for junk in (out / "checkpoints").iterdir():
            if junk.is_dir() and junk.name.startswith(".") and (junk.name.endswith(".tmp") or ".old-" in junk.name):
                shutil.rmtree(junk, ignore_errors=True)


def rewrite_log(path: Path, upto_step: int) -> None:
    """Keep the loss log lines of steps <= ``upto_step`` (a resume redoes the later ones); a torn last
    line is dropped."""
    from attnsift.io import atomic_write_text

    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= upto_step:
            keep.append(line)
    atomic_write_text(path, "".join(f"{x}\n" for x in keep))


def prepare_out(out: str | Path, resume: bool, overwrite: bool, clear: bool = True) -> Path:
    """Check (and with ``overwrite`` and ``clear``, empty) the output folder.

    Raises
    ------
    FileExistsError
        ``out`` exists and neither ``resume`` nor ``overwrite`` is set.
    ValueError
        Both flags; ``out`` is a file; ``overwrite`` on a non-empty folder that is not a training run.
    """
    out = Path(out).expanduser()
    if resume and overwrite:
        raise ValueError("give either --resume (continue the run in --out) or --overwrite (start it again), not both")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the training run")
    if out.exists() and not resume:
        if not overwrite:
            raise FileExistsError(
                f"{out} exists; pass --resume to continue the training run there, or --overwrite to start again"
            )
        if any(out.iterdir()) and not (out / CONFIG_FILE).is_file():
            raise ValueError(
                f"--overwrite refuses to delete {out}: it is not empty and has no {CONFIG_FILE}, so it is not a "
                "BlockRank training run; choose another --out"
            )
        if clear:
            shutil.rmtree(out)
    return out
