"""Fault injection on attnsift's writers: SIGKILL at random moments, then resume; a full disk; a read-only folder.

    ATTNSIFT_DATA=/work/shared/data python benchmarks/faults.py --kills 30      # writes results/faults.{md,json}

Every writer runs as a subprocess of the installed ``attnsift`` CLI (``sys.executable -m attnsift.cli.main``);
nothing of the library is imported. Writers (``--writers``, all by default):

- ``bench-bm25``: ``attnsift bench quality --dataset scifact --systems bm25 --max-queries 300 --no-plots``
- ``bench-icr``: the same with ``bm25+icr:TINY[depth=5;max_words=20]`` on ``--icr-queries`` queries, where TINY is
  a random-weight two-layer Llama (hidden size 32) with SmolLM2's tokenizer, built and saved by this script;
- ``index``: ``attnsift index --dataset scifact --out X --retriever bm25``;
- ``index-overwrite``: the same with ``--overwrite`` onto an existing index at X (a poller checks, during
  every run, that ``X/manifest.json`` never disappears);
- ``train``: ``attnsift train blockrank`` on nfcorpus with TINY (6 queries, 4 candidates, ``--train-steps``
  steps, a checkpoint every 2), resumed with ``--resume``.

For each writer: one uninterrupted run gives the reference output and the duration D; then ``--kills``
times (seeded): a fresh start, SIGKILL at a moment drawn uniformly in [0, D], the state after the kill
checked (index: the name is absent or whole; index-overwrite: the name is whole), then the resume command
(bench: the same command; index: the same command unless the kill came after the index was in place;
index-overwrite: the same command; train: ``--resume``) run to completion, and every output file compared
with the reference. Comparisons are byte for byte except for the fields that are legitimately
run-dependent, which are dropped before comparing (``RUN_DEPENDENT`` below: wall-clock seconds, the date,
torch's random per-save serialization id and the unseeded Python ``random`` state inside
``trainer_state.pt``). The bench lock file ``.bench.lock`` (a persistent advisory lock holding the last
writer's pid) is not an output. Leftover temporaries (``.NAME.PID-XXXX.tmp``) anywhere in or beside the
output count as a failure.

Disk faults (``--no-disk`` skips them; needs root for ``mount``): each writer writes into (a) a 2 MiB
tmpfs (index-overwrite: 2 MiB beside the old index) filled up to 8 KiB free before the start, (b) a tmpfs sized at 70 % of the writer's reference output (a disk that fills up mid-run;
index-overwrite: the old index plus 70 % of a new one), (c) a read-only tmpfs (``mount -o remount,ro``;
index-overwrite: holding the old index). Expected: exit code 2, one ``error:`` line, no traceback, no
temporary left, and nothing under a final name that differs from the reference.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CLI = [sys.executable, "-m", "attnsift.cli.main"]
WRITERS = ("bench-bm25", "bench-icr", "index", "index-overwrite", "train")
TEMP = re.compile(r"^\..+\.\d+-[a-z]*[0-9a-f]{8}\.tmp$")  # attnsift.io's temporaries
NOT_OUTPUT = {".bench.lock"}
FREE = 8 << 10  # bytes left free on the "full disk"
APPEND_LOGS = {"progress.jsonl": "qid", "loss.jsonl": "step"}  # one record per line, keyed
# What is dropped before comparing, and why: these differ between two uninterrupted runs of the same command.
RUN_DEPENDENT = {
    "results.json": "metadata.date, metadata.wall_seconds, results[].seconds_per_query (wall clock)",
    "results.md": "the Date of the run and the s/query column (wall clock)",
    "metrics.json": "seconds_per_query, report.metadata.eval_seconds (wall clock)",
    "progress.jsonl": "each line's seconds (wall clock); lines compared per query id",
    "loss.jsonl": "each line's seconds (wall clock)",
    "trainer_state.pt": "torch's random per-save serialization id and rng.python (the global Python random "
                        "state, never seeded nor used by training): compared as loaded objects without them",
}


# ----------------------------------------------------------------------------------------------- helpers

def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def tree(root: Path) -> dict[str, Path]:
    """Every file under ``root`` by relative path (empty when ``root`` is missing)."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def temporaries(*roots: Path) -> list[str]:
    """Leftover attnsift temporaries in or directly beside each root."""
    found = []
    for root in roots:
        for base in (root, root.parent):
            if base.is_dir():
                walk = base.rglob("*") if base == root else base.iterdir()
                found += [str(p) for p in walk if TEMP.match(p.name)]
    return sorted(set(found))


def _drop(obj, paths: list[list[str]]):
    for path in paths:
        cur = [obj]
        for i, key in enumerate(path):
            nxt = []
            for c in cur:
                if key == "[]" and isinstance(c, list):
                    nxt += c
                elif isinstance(c, dict) and key in c:
                    if i == len(path) - 1:
                        del c[key]
                    else:
                        nxt.append(c[key])
            cur = nxt
    return obj


def normalize(name: str, data: bytes):
    """The comparable form of one output file (bytes unless ``name`` has run-dependent fields)."""
    if name == "results.json":
        return _drop(json.loads(data), [["metadata", "date"], ["metadata", "wall_seconds"],
                                        ["results", "[]", "seconds_per_query"]])
    if name == "metrics.json":
        return _drop(json.loads(data), [["seconds_per_query"], ["report", "metadata", "eval_seconds"]])
    if name == "results.md":
        out, s_col = [], None
        for line in data.decode("utf-8").splitlines():
            line = re.sub(r"^Date: [^;]*;", "Date: -;", line)
            line = re.sub(r"--out \S+", "--out -", line)  # the disk cases write elsewhere
            if line.startswith("|"):
                cells = line.split("|")
                if "s/query" in line:
                    s_col = [c.strip() for c in cells].index("s/query")
                elif s_col is not None and not line.startswith("|---"):
                    cells[s_col] = " - "
                    line = "|".join(cells)
            else:
                s_col = None if line.strip() else s_col
            out.append(line)
        return out
    if name in APPEND_LOGS:
        return log_records(name, data)[0]
    if name == "trainer_state.pt":
        import io

        import torch

        state = torch.load(io.BytesIO(data), weights_only=False, map_location="cpu")
        state.get("rng", {}).pop("python", None)
        return _tensors_to_bytes(state)
    return data


def _tensors_to_bytes(obj):
    import torch

    if isinstance(obj, dict):
        return {k: _tensors_to_bytes(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_tensors_to_bytes(v) for v in obj]
    if torch.is_tensor(obj):
        return (str(obj.dtype), tuple(obj.shape), obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                if obj.numel() else b"")
    return obj


def log_records(name: str, data: bytes) -> tuple[dict, bool]:
    """``({key: record without seconds}, whether the last line is partial)`` of an append log."""
    records, partial = {}, False
    lines = data.decode("utf-8", errors="replace").split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            partial = True if i == len(lines) - 1 else partial
            records[f"<damaged line {i + 1}>"] = line
            continue
        rec.pop("seconds", None)
        records[str(rec.get(APPEND_LOGS[name]))] = rec
    return records, partial


def compare(out: Path, ref: Path, allow_missing: bool = False, allow_partial_logs: bool = False) -> list[str]:
    """Differences between two output trees ([] when identical after dropping run-dependent fields)."""
    mine, theirs = tree(out), tree(ref)
    diffs = [f"unexpected file {r}" for r in mine if r not in theirs and Path(r).name not in NOT_OUTPUT]
    for rel, p in theirs.items():
        if Path(rel).name in NOT_OUTPUT:
            continue
        if rel not in mine:
            if not allow_missing:
                diffs.append(f"missing {rel}")
            continue
        name = Path(rel).name
        a, b = mine[rel].read_bytes(), p.read_bytes()
        if a == b:
            continue
        if allow_partial_logs and name in APPEND_LOGS:  # a log cut short: every whole line must match
            got, want = log_records(name, a)[0], log_records(name, b)[0]
            bad = [k for k, v in got.items() if want.get(k) != v and not k.startswith("<damaged")]
            if bad:
                diffs.append(f"{rel}: records {bad[:3]} differ")
            continue
        try:
            same = normalize(name, a) == normalize(name, b)
        except (ValueError, UnicodeDecodeError, RuntimeError) as exc:
            same = False
            diffs.append(f"{rel}: unreadable ({type(exc).__name__}: {str(exc)[:80]})")
            continue
        if not same:
            diffs.append(f"{rel} differs")
    return diffs


def error_lines(stderr: str) -> list[str]:
    return [s.strip() for s in re.split(r"[\r\n]", stderr) if s.strip().lower().startswith("error")]


# ------------------------------------------------------------------------------------------------ writers

@dataclass
class Writer:
    name: str
    target: Path
    argv: list[str]
    resume: list[str]
    prepare: object = None  # callable(target) run before each start (index-overwrite: put the old index there)

    def start(self, env) -> subprocess.Popen:
        return subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                start_new_session=True, text=True)


def build_tiny_model(path: Path, env) -> None:
    code = (
        "import sys, torch, transformers\n"
        "from attnsift.rerank.llm import load_tokenizer\n"
        "tok = load_tokenizer('smollm2-135m')\n"
        "torch.manual_seed(0)\n"
        "cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,"
        " num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096)\n"
        "m = transformers.LlamaForCausalLM(cfg).eval()\n"
        "m.save_pretrained(sys.argv[1]); tok.save_pretrained(sys.argv[1])\n"
    )
    # load_tokenizer only finds the locally packaged SmolLM2 tokenizer; no attnsift code runs in this process.
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=env, capture_output=True, text=True)


def make_writers(names, work: Path, tiny: Path, args) -> list[Writer]:
    out = []
    for name in names:
        target = work / name / "out"
        if name in ("bench-bm25", "bench-icr"):
            system = "bm25" if name == "bench-bm25" else f"bm25+icr:{tiny}[depth=5;max_words=20]"
            n = args.bm25_queries if name == "bench-bm25" else args.icr_queries
            argv = CLI + ["bench", "quality", "--dataset", "scifact", "--systems", system, "--max-queries", str(n),
                          "--out", str(target), "--no-plots"]
            out.append(Writer(name, target, argv, argv))
        elif name in ("index", "index-overwrite"):
            argv = CLI + ["index", "--dataset", "scifact", "--out", str(target), "--retriever", "bm25"]
            if name == "index-overwrite":
                argv = argv + ["--overwrite"]
            out.append(Writer(name, target, argv, argv))
        elif name == "train":
            argv = CLI + ["train", "blockrank", "--dataset", "nfcorpus", "--model", str(tiny), "--out", str(target),
                          "--max-queries", "6", "--candidates", "4", "--steps", str(args.train_steps),
                          "--save-every", "2", "--block-tokens", "32", "--max-words", "20", "--scoring-layer", "1",
                          "--lr", "1e-4", "--threads", "1", "--no-progress"]
            out.append(Writer(name, target, argv, argv + ["--resume"]))
        else:
            raise SystemExit(f"unknown writer {name!r}; choose from {', '.join(WRITERS)}")
    return out


def run_done(argv, env) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    return proc, time.monotonic() - t0


class Poller(threading.Thread):
    """Counts the moments at which ``target/manifest.json`` is absent while a process runs."""

    def __init__(self, target: Path):
        super().__init__(daemon=True)
        self.path, self.stop, self.polls, self.missing = target / "manifest.json", threading.Event(), 0, 0

    def run(self):
        while not self.stop.is_set():
            self.polls += 1
            if not os.path.isfile(self.path):
                self.missing += 1
            time.sleep(0.0005)


def reset(w: Writer, ref_old: Path | None) -> None:
    if w.target.exists():
        shutil.rmtree(w.target)
    for t in temporaries(w.target):
        p = Path(t)
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    if ref_old is not None:
        shutil.copytree(ref_old, w.target)


def kill_trials(w: Writer, ref: Path, ref_old: Path | None, duration: float, kills: int, rng: random.Random,
                env) -> dict:
    trials = []
    for i in range(kills):
        reset(w, ref_old)
        at = rng.uniform(0.0, duration)
        poller = Poller(w.target) if ref_old is not None else None
        proc = w.start(env)
        if poller:
            poller.start()
        t0 = time.monotonic()
        killed = False
        while proc.poll() is None:
            if time.monotonic() - t0 >= at:
                os.killpg(proc.pid, signal.SIGKILL)  # the session this script started for the writer
                killed = True
                break
            time.sleep(0.005)
        _, err = proc.communicate()
        if poller:
            poller.stop.set()
            poller.join()
        rec = {"trial": i, "kill_at_s": round(at, 3), "killed": killed and proc.returncode == -signal.SIGKILL,
               "exit_before_kill": None if killed else proc.returncode}
        if poller:
            rec["polls"], rec["name_missing_polls"] = poller.polls, poller.missing
        after_kill = {}
        if w.name.startswith("index"):  # the name holds no index, or a whole one
            present = (w.target / "manifest.json").is_file() or w.target.exists()
            after_kill["present"] = present
            after_kill["diffs"] = compare(w.target, ref) if present else []
        rec["after_kill"] = after_kill
        if w.name == "index" and after_kill.get("present"):
            rec["resumed"] = False  # the kill came after the swap: rerunning without --overwrite would refuse
        else:
            res, secs = run_done(w.resume, env)
            rec["resumed"], rec["resume_rc"], rec["resume_s"] = True, res.returncode, round(secs, 2)
            if res.returncode != 0:
                rec["resume_error"] = (error_lines(res.stderr) or res.stderr.strip().splitlines()[-1:] or [""])[-1]
                rec["resume_traceback"] = "Traceback" in res.stderr
        rec["diffs"] = compare(w.target, ref)
        rec["temporaries"] = temporaries(w.target)
        rec["identical"] = not rec["diffs"] and (not rec.get("resumed") or rec.get("resume_rc") == 0)
        trials.append(rec)
        print(f"  {w.name} #{i}: kill at {at:.2f}s killed={rec['killed']} identical={rec['identical']} "
              f"temps={len(rec['temporaries'])}" + (f" diffs={rec['diffs'][:2]}" if rec["diffs"] else ""),
              file=sys.stderr, flush=True)
    return {
        "kills": sum(t["killed"] for t in trials),
        "finished_before_kill": sum(not t["killed"] for t in trials),
        "resumes": sum(bool(t.get("resumed")) for t in trials),
        "resume_failures": sum(bool(t.get("resumed")) and t.get("resume_rc") != 0 for t in trials),
        "identical": sum(t["identical"] for t in trials),
        "trials": len(trials),
        "temporaries_left": sum(bool(t["temporaries"]) for t in trials),
        "name_missing_polls": sum(t.get("name_missing_polls", 0) for t in trials) if ref_old is not None else None,
        "polls": sum(t.get("polls", 0) for t in trials) if ref_old is not None else None,
        "missing_after_kill": (sum(not t["after_kill"].get("present", True) for t in trials)
                               if ref_old is not None else None),
        "whole_after_kill": (sum(t["after_kill"].get("present", False) and not t["after_kill"]["diffs"]
                                 for t in trials) if w.name.startswith("index") else None),
        "detail": trials,
    }


# -------------------------------------------------------------------------------------------- disk faults

def du(root: Path) -> int:
    return sum(p.stat().st_size for p in tree(root).values())


def mount_tmpfs(mnt: Path, size_bytes: int) -> str | None:
    mnt.mkdir(parents=True, exist_ok=True)
    size_k = max(64, size_bytes // 1024)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_k}k", "tmpfs", str(mnt)], capture_output=True,
                       text=True)
    return None if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")


def umount(mnt: Path) -> None:
    subprocess.run(["umount", str(mnt)], capture_output=True)


def disk_case(w: Writer, ref: Path, ref_old: Path | None, case: str, size: int, mnt: Path, env) -> dict:
    err = mount_tmpfs(mnt, size)
    if err:
        return {"case": case, "skipped": f"mount refused: {err}"}
    try:
        target = mnt / "out"
        if ref_old is not None:
            shutil.copytree(ref_old, target)
        if case.startswith("full disk"):  # fill all but FREE bytes
            st = os.statvfs(mnt)
            with open(mnt / "filler", "wb") as fh:
                fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - FREE))
        if case == "read-only":
            r = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True, text=True)
            if r.returncode != 0:
                return {"case": case, "skipped": f"remount ro refused: {r.stderr.strip()}"}
        argv = [str(target) if a == str(w.target) else a for a in w.argv]
        res, secs = run_done(argv, env)
        errs = error_lines(res.stderr)
        (mnt / "filler").unlink(missing_ok=True) if case != "read-only" else None
        diffs = compare(target, ref, allow_missing=ref_old is None, allow_partial_logs=True)
        partial_logs = [rel for rel, p in tree(target).items()
                        if p.name in APPEND_LOGS and log_records(p.name, p.read_bytes())[1]]
        rec = {"case": case, "tmpfs_bytes": size, "rc": res.returncode, "seconds": round(secs, 2),
               "traceback": "Traceback" in res.stderr, "error_lines": len(errs),
               "message": errs[-1] if errs else (res.stderr.strip().splitlines() or [""])[-1][-300:],
               "temporaries": temporaries(target), "final_name_diffs": diffs, "partial_log_lines": partial_logs,
               "left": sorted(tree(target))}
        rec["ok"] = (res.returncode == 2 and not rec["traceback"] and len(errs) == 1 and not rec["temporaries"]
                     and not diffs)
        print(f"  {w.name} {case}: rc={res.returncode} ok={rec['ok']} {rec['message'][:160]}", file=sys.stderr,
              flush=True)
        return rec
    finally:
        umount(mnt)


def disk_faults(w: Writer, ref: Path, ref_old: Path | None, mnt: Path, env) -> list[dict]:
    new = du(ref)
    old = du(ref_old) if ref_old is not None else 0
    cases = [(f"full disk (tmpfs with {FREE // 1024} KiB free)", old + (2 << 20)),
             ("disk filling up mid-run (tmpfs at 70% of the output)", old + int(0.7 * new)),
             ("read-only", old + (1 << 20))]
    return [disk_case(w, ref, ref_old, c, s, mnt, env) for c, s in cases]


# ------------------------------------------------------------------------------------------------ reports

def report_md(res: dict) -> str:
    L = ["# Fault injection: SIGKILL and resume, full disk, read-only folder", "",
         f"Command: `{res['command']}`", "",
         f"Machine: {res['machine']}. Date: {res['date']}. attnsift {res['attnsift']}. Seed {res['seed']}. "
         f"Whole run: {res['wall_minutes']} min.", "",
         "Every writer runs as a subprocess of the installed CLI. Per writer: one uninterrupted reference run "
         "(duration D), then N trials: a fresh start, SIGKILL at a moment drawn uniformly in [0, D], the "
         "resume command run to completion, every output file compared with the reference. See the script's "
         "docstring for the exact setting; the writer commands were:", ""]
    for name, w in res["writers"].items():
        L.append(f"- `{name}`: `{w['command']}` (resume: `{w['resume']}`); reference D = {w['reference_s']} s")
    L += ["", "## Kill and resume", "",
          "| writer | trials | killed | finished before the kill | resumed | resume failures | final outputs identical "
          "| temporaries left | name missing (polls / after a kill) |",
          "|---|---|---|---|---|---|---|---|---|"]
    for name, w in res["writers"].items():
        k = w.get("kill")
        if not k:
            continue
        miss = "-" if k["name_missing_polls"] is None else \
            f"{k['name_missing_polls']} of {k['polls']} / {k['missing_after_kill']}"
        L.append(f"| {name} | {k['trials']} | {k['kills']} | {k['finished_before_kill']} | {k['resumes']} | "
                 f"{k['resume_failures']} | {k['identical']} / {k['trials']} | {k['temporaries_left']} | {miss} |")
    L += ["", "`index`: a kill that lands after the new index is in place (the name exists) is not rerun "
          "(without `--overwrite` the rerun would refuse); the index found is compared instead. For `index` and "
          "`index-overwrite` the state right after each kill was also checked: the name holds nothing "
          "(`index`) or a whole, byte-identical index.", "",
          "Run-dependent fields dropped before comparing (everything else byte for byte):", ""]
    L += [f"- `{k}`: {v}" for k, v in RUN_DEPENDENT.items()]
    L += ["- `.bench.lock`: the bench's advisory lock file (holds a pid), kept on purpose; not an output.",
          "- Plots are off (`--no-plots`): PNGs carry no run-dependent field worth testing here.", "",
          "## Full disk and read-only folder", "",
          "Expected: exit code 2, one `error:` line, no traceback, no temporary left, nothing under a final name "
          "that differs from the reference (an append log may end on a partial line, which a resume drops).", "",
          "| writer | case | exit | traceback | error lines | temporaries | final names wrong | ok | message |",
          "|---|---|---|---|---|---|---|---|---|"]
    for name, w in res["writers"].items():
        for d in w.get("disk", []):
            if "skipped" in d:
                L.append(f"| {name} | {d['case']} | - | - | - | - | - | skipped | {d['skipped']} |")
                continue
            msg = d["message"].replace("|", "\\|")
            L.append(f"| {name} | {d['case']} ({d['tmpfs_bytes'] // 1024} KiB) | {d['rc']} | {d['traceback']} | "
                     f"{d['error_lines']} | {len(d['temporaries'])} | {len(d['final_name_diffs'])} | "
                     f"{'yes' if d['ok'] else '**no**'} | `{msg}` |")
    L += ["", "## Findings", ""]
    L += [f"- {f}" for f in res["findings"]] or ["- none"]
    L += ["", "Raw counts and every trial: `faults.json`."]
    return "\n".join(L) + "\n"


def findings(res: dict) -> list[str]:
    out = []
    for name, w in res["writers"].items():
        k = w.get("kill")
        if k:
            for t in k["detail"]:
                if not t["identical"] or t["temporaries"] or t.get("name_missing_polls") or \
                        (name == "index-overwrite" and not t["after_kill"].get("present")):
                    out.append(f"{name} trial {t['trial']} (kill at {t['kill_at_s']} s): identical={t['identical']}, "
                               f"diffs={t['diffs'][:3]}, resume rc={t.get('resume_rc')} "
                               f"{t.get('resume_error', '')}, temporaries={t['temporaries'][:2]}, "
                               f"name missing polls={t.get('name_missing_polls')}; reproduce: `{w['command']}`, "
                               f"SIGKILL after {t['kill_at_s']} s, then `{w['resume']}`")
        for d in w.get("disk", []):
            if "skipped" not in d and not d["ok"]:
                out.append(f"{name}, {d['case']}: exit {d['rc']}, traceback={d['traceback']}, "
                           f"{d['error_lines']} error lines, temporaries={d['temporaries'][:2]}, "
                           f"final-name diffs={d['final_name_diffs'][:3]}; message `{d['message']}`")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=30, help="kill-and-resume trials per writer (default 30)")
    ap.add_argument("--writers", default=",".join(WRITERS), help=f"comma-separated, of {', '.join(WRITERS)}")
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    ap.add_argument("--bm25-queries", type=int, default=300)
    ap.add_argument("--icr-queries", type=int, default=10)
    ap.add_argument("--train-steps", type=int, default=6)
    ap.add_argument("--no-disk", action="store_true", help="skip the full-disk and read-only cases")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, deleted)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="where faults.{md,json} go")
    args = ap.parse_args(argv)
    if not os.environ.get("ATTNSIFT_DATA"):
        raise SystemExit("set ATTNSIFT_DATA to the folder of BEIR-layout data sets (scifact, nfcorpus)")
    names = [n.strip() for n in args.writers.split(",") if n.strip()]
    t_start = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    rng = random.Random(args.seed)
    scratch = args.work or Path(tempfile.mkdtemp(prefix="attnsift-faults-"))
    scratch.mkdir(parents=True, exist_ok=True)
    res: dict = {"command": "python benchmarks/faults.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} "
                            "(a 2-core VM shared with other work, no GPU)",
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seed": args.seed, "kills": args.kills,
                 "attnsift": subprocess.run(CLI + ["--version"], capture_output=True, text=True).stdout.strip(),
                 "run_dependent": RUN_DEPENDENT, "writers": {}}
    try:
        tiny = scratch / "tiny-llama"
        if any(n in ("bench-icr", "train") for n in names):
            build_tiny_model(tiny, env)
        for w in make_writers(names, scratch, tiny, args):
            print(f"{w.name}: reference run", file=sys.stderr, flush=True)
            reset(w, None)
            ref_old = None
            if w.name == "index-overwrite":  # the old index at the name
                proc, _ = run_done([a for a in w.argv if a != "--overwrite"], env)
                if proc.returncode != 0:
                    raise SystemExit(f"building the old index failed: {proc.stderr[-2000:]}")
                ref_old = scratch / w.name / "old"
                shutil.copytree(w.target, ref_old)
            poller = Poller(w.target) if ref_old is not None else None
            if poller:
                poller.start()
            proc, secs = run_done(w.argv, env)
            if poller:
                poller.stop.set()
                poller.join()
            if proc.returncode != 0:
                raise SystemExit(f"the uninterrupted {w.name} run failed ({proc.returncode}): {proc.stderr[-2000:]}")
            ref = scratch / w.name / "reference"
            shutil.copytree(w.target, ref)
            rec = {"command": " ".join(["attnsift"] + w.argv[len(CLI):]),
                   "resume": " ".join(["attnsift"] + w.resume[len(CLI):]), "reference_s": round(secs, 2),
                   "reference_temporaries": temporaries(w.target), "output_bytes": du(ref)}
            if poller:
                rec["reference_name_missing_polls"] = f"{poller.missing} of {poller.polls}"
            rec["kill"] = kill_trials(w, ref, ref_old, secs, args.kills, rng, env)
            if not args.no_disk:
                rec["disk"] = disk_faults(w, ref, ref_old, scratch / "mnt", env)
            res["writers"][w.name] = rec
    finally:
        umount(scratch / "mnt")
        if args.work is None:
            shutil.rmtree(scratch, ignore_errors=True)
    res["wall_minutes"] = round((time.monotonic() - t_start) / 60, 1)
    res["findings"] = findings(res)
    atomic_write(args.out / "faults.json", json.dumps(res, indent=1, default=str) + "\n")
    atomic_write(args.out / "faults.md", report_md(res))
    print(report_md(res))
    return 1 if res["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
