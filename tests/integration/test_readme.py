"""Every command and code block of the README is run by a test, so a README line cannot break again.

- Every ``attnsift ...`` line of a ``bash`` block is parsed by the real click command tree (an unknown or
  renamed option fails here, in a second, whatever the command costs to run).
- The light commands (BM25, indexing, search, evaluation, listings) run for real, in README order, in one
  temporary folder: a later line may read what an earlier one wrote.
- The heavy ones (a language model over many queries, dense encoding of a whole corpus, bench, head
  analysis, training) run under ``-m slow``; which lines are heavy is decided by :data:`HEAVY`, so a new
  README line is classified automatically and never skipped silently.
- Each ``python`` block runs in a fresh interpreter; the small RAG examples run in CI, the quick start
  (ICR over ten SciFact queries) under ``-m slow``.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

#: A command is heavy when it runs a language model over a data set, encodes a whole corpus, or is a
#: long job (bench, analyze, train, explain).
HEAVY = re.compile(r"--reranker\s+(icr|listwise|blockrank)\b|\battnsift\s+(bench|analyze|train|explain)\b"
                   r"|--retriever\s+(dense|hybrid|late)\b.*--dataset|--dataset\s+\S+.*--retriever\s+(dense|hybrid|late)\b")
#: Lines that need what only the user has: a Ray cluster (``--ray-address``), MS MARCO's files. They are parsed
#: (every option checked) but not run; the Ray engine and the MS MARCO loader have their own tests.
EXTERNAL = re.compile(r"--ray-address\b|--dataset\s+msmarco\b")
#: Python blocks that run a language model over a data set.
HEAVY_PY = re.compile(r"load_dataset\(")
CMD_TIMEOUT_S = 600


def _blocks(lang: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    return [m.group(1) for m in re.finditer(rf"```{lang}\n(.*?)```", text, flags=re.S)]


def readme_commands() -> list[str]:
    """The ``attnsift`` command lines of the README's bash blocks (continuations joined)."""
    out = []
    for block in _blocks("bash"):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith("attnsift ") or line.startswith("rerank "):
                out.append(line)
    return out


def _argv(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def _outputs(argv: list[str]) -> list[str]:
    """What a command writes (``--save-run``, ``--out``/``-o``), for skipping the readers of a skipped writer."""
    found = []
    for i, a in enumerate(argv[:-1]):
        if a in ("--save-run", "--out", "-o"):
            found.append(argv[i + 1])
    return found


def test_readme_has_commands_and_python():
    cmds = readme_commands()
    assert len(cmds) >= 8, cmds
    assert any(not HEAVY.search(c) for c in cmds) and any(HEAVY.search(c) for c in cmds)
    assert len(_blocks("python")) >= 2


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_parses(line: str):
    """Each README command's options exist and its values have the right types (nothing runs)."""
    import typer

    from attnsift.cli.main import app

    argv = _argv(line)
    root = typer.main.get_command(app)
    if argv[0] == "rerank":
        argv = ["attnsift", "rerank", *argv[1:]]
    args = argv[1:]
    cmd = root
    # Walk the groups to the leaf command, then let click parse (and type-check) its options.
    parent = None
    while hasattr(cmd, "get_command"):  # a group (typer vendors its own click: duck-typed)
        parent = cmd.make_context(cmd.name, [], parent=parent, resilient_parsing=True)
        # group options (e.g. --quiet) come before the sub-command name
        while args and args[0].startswith("-"):
            args = args[1:]
        assert args, f"README line {line!r} names no command"
        sub = cmd.get_command(parent, args[0])
        assert sub is not None, f"README line {line!r}: no command {args[0]!r}"
        cmd, args = sub, args[1:]
    ctx = cmd.make_context(cmd.name, list(args), parent=parent)
    assert ctx.params is not None


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "attnsift.cli.main", *argv[1:]] if argv[0] == "attnsift"
                          else [sys.executable, "-c", "from attnsift.cli.main import rerank_main; rerank_main()", *argv[1:]],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=CMD_TIMEOUT_S)


def _serve(argv: list[str], cwd: Path) -> None:
    """A README ``attnsift serve`` line: started on a free port, ready within the timeout, healthy, and stopped
    cleanly by SIGTERM (in-flight work drained, exit code 0)."""
    import json
    import signal
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "attnsift.cli.main", *argv[1:], "--port", "0"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline()  # one JSON line once listening
        assert ready.startswith("{"), f"{' '.join(argv)}: no ready line\n{proc.stderr.read()[-3000:]}"
        url = json.loads(ready)["url"]
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=30) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _run_lines(lines: list[str], heavy: bool, cwd: Path) -> list[str]:
    skipped_outputs: set[str] = set()
    ran = []
    for line in readme_commands():
        argv = _argv(line)
        is_heavy = bool(HEAVY.search(line))
        reads_skipped = any(o in argv for o in skipped_outputs)
        if (is_heavy and not heavy) or reads_skipped or EXTERNAL.search(line):
            skipped_outputs.update(_outputs(argv))
            continue
        if line not in lines:
            continue
        if argv[1:2] == ["serve"]:
            _serve(argv, cwd)
            ran.append(line)
            continue
        proc = _run(argv, cwd)
        assert proc.returncode == 0, f"README line failed (exit {proc.returncode}): {line}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr, f"{line}\n{proc.stderr[-3000:]}"
        ran.append(line)
    return ran


def _user_documents(folder: Path, data_dir: Path, n: int = 100) -> None:
    """The README's ``docs.jsonl`` stands for the user's own documents: here the first ``n`` SciFact
    abstracts, written as a user would (``{"id", "title", "text"}`` per line)."""
    import json

    lines = []
    with open(data_dir / "scifact" / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            lines.append(json.dumps({"id": d["_id"], "title": d.get("title", ""), "text": d["text"]}))
            if len(lines) == n:
                break
    (folder / "docs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_readme_light_commands_run(tmp_path: Path, data_dir: Path):
    """The light README commands, for real, in order, in one folder."""
    _user_documents(tmp_path, data_dir)
    lines = [c for c in readme_commands() if not HEAVY.search(c) and not EXTERNAL.search(c)]
    ran = _run_lines(lines, heavy=False, cwd=tmp_path)
    assert len(ran) == len(lines), sorted(set(lines) - set(ran))


@pytest.mark.slow
def test_readme_all_commands_run(tmp_path: Path, data_dir: Path):
    """Every README command, heavy ones included (tens of minutes on 2 CPU cores)."""
    _user_documents(tmp_path, data_dir)
    lines = [c for c in readme_commands() if not EXTERNAL.search(c)]
    ran = _run_lines(lines, heavy=True, cwd=tmp_path)
    assert len(ran) == len(lines)


def _python_blocks(heavy: bool) -> list[str]:
    return [b for b in _blocks("python") if bool(HEAVY_PY.search(b)) == heavy]


@pytest.mark.model
@pytest.mark.parametrize("code", _python_blocks(heavy=False), ids=lambda c: c.strip().splitlines()[0][:40])
def test_readme_python_block_runs(code: str, tmp_path: Path, data_dir: Path):
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
    assert proc.returncode == 0, f"README python block failed:\n{code}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("code", _python_blocks(heavy=True), ids=lambda c: c.strip().splitlines()[0][:40])
def test_readme_heavy_python_block_runs(code: str, tmp_path: Path, data_dir: Path):
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=CMD_TIMEOUT_S * 2)
    assert proc.returncode == 0, f"README python block failed:\n{code}\n{proc.stderr[-3000:]}"
