"""Help at 80 columns, for every command the app has (discovered from the click tree, not listed here):
every option name whole, no ``<bool>`` on flags, no line wider than the terminal."""
from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from attnsift.cli.main import app

runner = CliRunner()


def _commands(command, path=()):
    """Every (path, click command) below ``command``, groups included."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_the_tree_is_discovered():
    names = {" ".join(p) for p, _ in COMMANDS}
    # a few that must be there; the test below covers whatever else is registered
    assert {"", "rerank", "evaluate", "explain", "bench", "bench quality"} <= names
    assert len(names) >= 10


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "attnsift" for p, _ in COMMANDS])
def test_help_at_80_columns_shows_every_option_whole(path, command):
    res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert "<bool>" not in text
    assert "--option <list" not in text and "--query <list" not in text  # repeatable options name their form
    assert "…" not in text
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert not wide, wide
    for param in command.params:
        if getattr(param, "hidden", False) or param.param_type_name != "option":
            continue
        for name in (*param.opts, *param.secondary_opts):
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (name, text)


def test_hidden_deprecated_spellings_stay_out_of_help():
    res = runner.invoke(app, ["bench", "quality", "--help"], env={"COLUMNS": "80"})
    assert "--datasets" not in res.stdout and "--dataset" in res.stdout
    res = runner.invoke(app, ["explain", "--help"], env={"COLUMNS": "80"})
    assert not re.search(r"(?<![\w-])-q(?![\w-])", res.stdout) and "--query-id" in res.stdout


def test_metrics_table_layout_is_fixed_and_its_title_never_wraps(capsys):
    from attnsift.cli.app import _print_table
    from attnsift.eval.report import EvalReport

    def report(name, values):
        per_query = {f"q{i}": {"nDCG@10": v, "MRR@10": v} for i, v in enumerate(values)}
        agg = {m: sum(values) / len(values) for m in ("nDCG@10", "MRR@10")}
        return EvalReport(name, ["nDCG@10", "MRR@10"], agg, per_query, len(values))

    title = ("scifact: 30 queries; icr reranks the top 20 of 100, and a long tail of words that would wrap\n"
             "9.6819 s/query")
    base = report("bm25", [0.1, 0.2, 0.3, 0.4])
    name = "bm25+icr:smollm2-135m[depth=20;max_words=100]"
    tables = []
    for other in (report(name, [0.9, 0.95, 0.92, 0.97]),  # significantly better: a dagger in its cells
                  report(name, [0.1, 0.2, 0.3, 0.41])):  # no dagger
        _print_table([base, other], title=title)
        lines = capsys.readouterr().out.splitlines()
        assert lines[:2] == title.splitlines()  # whole lines above the table, never wrapped into it
        header = next(line for line in lines if "nDCG@10" in line)
        assert header.index("system") < header.index("nDCG@10") < header.index("MRR@10")
        assert any(name in line for line in lines)  # the system name is not wrapped
        tables.append(lines[2:])
    rows = [next(line for line in t if name in line) for t in tables]
    assert "†" in rows[0] and "†" not in rows[1]
    assert [len(line) for line in tables[0]] == [len(line) for line in tables[1]]  # same layout either way
