"""attnsift.progress: one switch, whole lines off a terminal, nothing when disabled, one estimate line."""
from __future__ import annotations


import pytest

from attnsift import progress


def test_disabled_prints_nothing(pipe):
    stderr = pipe()
    progress.configure(False)
    assert list(progress.bar(range(3), desc="work")) == [0, 1, 2]
    with progress.step("a step"):
        pass
    progress.notice("hello")
    est = progress.Estimator(100, threshold_s=0.0, sample_s=0.001)
    assert est.observe(1.0) is None and est.projected == pytest.approx(100.0)
    assert stderr.getvalue() == ""


def test_default_follows_the_terminal(pipe, monkeypatch):
    stderr = pipe()
    assert progress.is_enabled() is False  # a pipe
    monkeypatch.setattr(stderr, "isatty", lambda: True)
    assert progress.is_enabled() is True
    progress.configure(False)
    assert progress.is_enabled() is False and progress.is_enabled(True) is True
    with pytest.raises(TypeError):
        progress.configure("yes")  # type: ignore[arg-type]


def test_enabled_line_mode_prints_start_and_end_lines(pipe):
    stderr = pipe()
    progress.configure(True)
    assert sum(progress.bar(range(4), desc="encode", unit="docs")) == 6
    with progress.step("converting x.gguf to safetensors (once)"):
        pass
    lines = stderr.getvalue().splitlines()
    assert lines[0] == "encode: 4 docs ..."
    assert lines[1].startswith("encode: 4/4 docs in ")
    assert lines[2] == "converting x.gguf to safetensors (once) ..."
    assert lines[3].startswith("converting x.gguf to safetensors (once): done in ")
    assert "\r" not in stderr.getvalue() and len(lines) == 4


def test_format_seconds():
    assert progress.format_seconds(0.012) == "12 ms"
    assert progress.format_seconds(9.6) == "9.6 s"
    assert progress.format_seconds(42) == "42 s"
    assert progress.format_seconds(2880) == "48.0 min"
    assert progress.format_seconds(3 * 3600) == "3.0 h"


def test_estimator_prints_exactly_one_line_above_the_threshold(pipe):
    stderr = pipe()
    progress.configure(True)
    est = progress.Estimator(300, "queries", hint="--max-queries, --depth or --option max_words= shorten it",
                             device="cpu")
    assert est.observe(9.6) is not None
    for _ in range(20):
        assert est.observe(9.6) is None
    out = stderr.getvalue()
    assert out == ("estimate: about 48.0 min for 300 queries (9.6 s per query measured on the first 1, device cpu); "
                   "--max-queries, --depth or --option max_words= shorten it\n")
    assert est.line == out.strip()


def test_estimator_measures_a_few_fast_items_and_stays_quiet_below_the_threshold(pipe):
    stderr = pipe()
    progress.configure(True)
    est = progress.Estimator(1000, "documents", threshold_s=60.0)
    for _ in range(10):
        est.observe(0.05)  # 0.5 s measured, still sampling
    assert not est.done
    for _ in range(10):
        est.observe(0.05)  # the 20th item ends the sample: 50 s projected, under a minute
    assert est.done and est.projected == pytest.approx(50.0)
    assert stderr.getvalue() == ""
    slow = progress.Estimator(1000, "documents", threshold_s=60.0)
    for _ in range(5):
        slow.observe(0.5)  # 2.5 s measured after 5 items: sample done, 500 s projected
    assert slow.done and "about 8.3 min for 1000 documents (0.5 s per document measured on the first 4)" in stderr.getvalue()


def test_estimator_short_runs_and_bad_input(pipe):
    stderr = pipe()
    progress.configure(True)
    one = progress.Estimator(1, threshold_s=0.0)
    one.observe(100.0)  # nothing left to estimate
    assert stderr.getvalue() == ""
    with pytest.raises(ValueError, match="total must be a whole number"):
        progress.Estimator(-1)
    with pytest.raises(ValueError, match="threshold_s"):
        progress.Estimator(5, threshold_s=-1)


def test_lines_go_above_a_terminal_bar(pipe, monkeypatch):
    stderr = pipe()
    monkeypatch.setattr(stderr, "isatty", lambda: True)
    progress.configure(True)
    with progress.bar(total=3, desc="rerank", unit="queries") as counter:
        counter.update(1)
        est = progress.Estimator(300, threshold_s=1.0)
        assert est.observe(5.0) is not None
        counter.update(2)
    out = stderr.getvalue()
    # tqdm.write clears the bar, prints the line on its own, and redraws the bar below it
    assert "\nestimate: about 25.0 min for 300 queries (5.0 s per query measured on the first 1)\n" in "\n" + out.replace("\r", "\n")
