"""The training run folder (attnsift.train.checkpoints): output checks, checkpoint listing, the loss log
after a crash, leftovers of killed runs, the digest check on resume. No model needed."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from attnsift.train.checkpoints import (
    CONFIG_FILE,
    STATE_FILE,
    check_resume_config,
    list_checkpoints,
    load_state,
    prepare_out,
    remove_partial_checkpoints,
    rewrite_log,
)


def test_prepare_out_refuses_what_it_should(tmp_path):
    fresh = prepare_out(tmp_path / "new", resume=False, overwrite=False)
    assert fresh == tmp_path / "new" and not fresh.exists()
    with pytest.raises(ValueError, match="not both"):
        prepare_out(tmp_path, resume=True, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        prepare_out(tmp_path / "file", resume=False, overwrite=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--resume"):
        prepare_out(other, resume=False, overwrite=False)
    with pytest.raises(ValueError, match="not a BlockRank training run"):
        prepare_out(other, resume=False, overwrite=True)
    assert (other / "notes.txt").is_file()
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_FILE).write_text("{}")
    assert prepare_out(run, resume=False, overwrite=True, clear=False) == run and run.exists()
    prepare_out(run, resume=False, overwrite=True)
    assert not run.exists()


def test_list_checkpoints_orders_by_step_and_skips_incomplete(tmp_path):
    root = tmp_path / "checkpoints"
    for name, complete in (("step-000010", True), ("step-000002", True), ("step-000020", False),
                           (".step-000030.tmp", True)):
        (root / name).mkdir(parents=True)
        if complete:
            (root / name / STATE_FILE).write_bytes(b"x")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002", "step-000010"]
    remove_partial_checkpoints(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["step-000002", "step-000010", "step-000020"]
    assert list_checkpoints(tmp_path / "absent") == []


def test_rewrite_log_keeps_steps_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    log = tmp_path / "loss.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "lo')
    rewrite_log(log, 2)
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2]
    rewrite_log(tmp_path / "absent.jsonl", 2)  # nothing to do
    assert not (tmp_path / "absent.jsonl").exists()


@dataclass(frozen=True)
class _Cfg:
    lr: float = 1e-5
    steps: int = 4
    query_sample: str = "random"


def test_check_resume_config_allows_only_resumable_changes(tmp_path):
    saved = {"lr": 1e-5, "steps": 2, "query_sample": "random"}
    check_resume_config(saved, _Cfg(steps=8), tmp_path)  # steps may grow
    with pytest.raises(ValueError, match=r"lr: 1e-05 -> 0\.001"):
        check_resume_config(saved, _Cfg(lr=1e-3), tmp_path)


def test_load_state_checks_the_examples_digest(tmp_path):
    torch = pytest.importorskip("torch")
    ck = tmp_path / "step-000002"
    ck.mkdir()
    torch.save({"step": 2, "examples_digest": "abc"}, ck / STATE_FILE)
    assert load_state(ck, "abc")["step"] == 2
    with pytest.raises(ValueError, match="training prompts differ"):
        load_state(ck, "def")


@dataclass
class _LrOnly:
    lr: float = 0.1


def test_a_checkpoint_write_that_fails_inside_torch_is_an_oserror_naming_the_checkpoint(tmp_path, monkeypatch):
    """torch.save reports a full disk as RuntimeError ("unexpected pos ..."): the CLI only turns OSError into
    a one-line exit-2 error, so the checkpoint writer must raise one (found by benchmarks/faults.py)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from helpers import tiny_llama_and_tokenizer

    from attnsift.train.checkpoints import save_checkpoint

    model, tok = tiny_llama_and_tokenizer(layers=1, heads=2, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def full_disk(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 19040832 vs 19040720")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as info:
        save_checkpoint(tmp_path, 2, model, tok, opt, _LrOnly(), "digest", keep=2)
    assert info.value.filename == str(tmp_path / "checkpoints" / "step-000002")
    assert "could not write the checkpoint" in str(info.value) and "--resume" in str(info.value)
    assert list_checkpoints(tmp_path) == [] and not any(p.name.endswith(".tmp") for p in (tmp_path / "checkpoints").iterdir())
