"""Evaluation reports, paired comparisons and result tables.

``EvalReport`` holds per-query values and means for one system. ``a.compare(b)`` pairs two reports
over their common queries and gives, per metric, ``b - a`` with a paired t-test.
``render_table`` / ``render_rich_table`` put several systems in one table (systems as rows, metrics
as columns) and mark with a dagger (†) the values that differ significantly (p < 0.05, paired
t-test) from the baseline row. All numbers are shown with 4 decimals.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

__all__ = ["EvalReport", "Comparison", "MetricComparison", "paired_ttest", "render_table", "render_rich_table"]

DAGGER = "†"
ALPHA = 0.05


def _fmt(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _row_dict(r: "MetricComparison") -> dict[str, Any]:
    finite = not (math.isnan(r.t) or math.isinf(r.t))
    row: dict[str, Any] = {"mean_a": r.mean_a, "mean_b": r.mean_b, "diff": r.diff, "n": r.n,
                           "t": r.t if finite else None, "p": None if math.isnan(r.p) else r.p}
    if math.isinf(r.t):
        row["t_note"] = f"t is {'+' if r.t > 0 else '-'}infinite: the difference is the same on every common query"
    return row


def _plain_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    def line(cells: Sequence[str]) -> str:
        # first column (names) left-aligned, numbers right-aligned
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(c: str) -> str:
        return str(c).replace("|", "\\|")
    out = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided paired t-test of ``b`` against ``a``: ``(t, p)``.

    Zero variance of the differences is handled explicitly (scipy would return NaN): all differences
    0 gives ``(0.0, 1.0)``; a constant non-zero difference gives ``(±inf, 0.0)``. Fewer than two pairs
    gives ``(nan, nan)`` (no test is possible).
    """
    if len(a) != len(b):
        raise ValueError(f"paired t-test needs two equally long samples, got {len(a)} and {len(b)}")
    n = len(a)
    if n < 2:
        return float("nan"), float("nan")
    diffs = [y - x for x, y in zip(a, b)]
    # Constant differences up to float rounding (0.3-0.1 != 0.4-0.2) count as zero variance.
    if max(diffs) - min(diffs) <= 1e-12 * max(1.0, max(abs(d) for d in diffs)):
        mean = sum(diffs) / n
        if abs(mean) <= 1e-12:
            return 0.0, 1.0
        return math.copysign(math.inf, mean), 0.0
    from scipy import stats

    res = stats.ttest_rel(b, a)
    return float(res.statistic), float(res.pvalue)


@dataclass(frozen=True)
class MetricComparison:
    """One metric of a paired comparison of system A (``self``) and system B (``other``).

    ``mean_a`` and ``mean_b`` are means over the ``n`` common queries; ``diff = mean_b - mean_a``.
    """

    metric: str
    mean_a: float
    mean_b: float
    diff: float
    n: int
    t: float
    p: float

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p) and self.p < ALPHA


@dataclass
class Comparison:
    """The paired comparison ``a.compare(b)``: per metric, B minus A over the common queries."""

    name_a: str
    name_b: str
    rows: list[MetricComparison]
    common_queries: int
    only_a: int = 0
    only_b: int = 0

    def __getitem__(self, metric: str) -> MetricComparison:
        for r in self.rows:
            if r.metric == metric:
                return r
        raise KeyError(f"metric {metric!r} is not in this comparison; it has {[r.metric for r in self.rows]}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that never holds a NaN or an infinity: where the t-test is undefined (fewer
        than 2 common queries) ``t`` and ``p`` are None and ``t_test`` says why; an infinite ``t`` (the same
        non-zero difference on every query, ``p`` = 0) is None with ``t_note`` saying so."""
        out: dict[str, Any] = {
            "a": self.name_a,
            "b": self.name_b,
            "common_queries": self.common_queries,
            "only_a": self.only_a,
            "only_b": self.only_b,
            "metrics": {r.metric: _row_dict(r) for r in self.rows},
        }
        if self.common_queries < 2:
            out["t_test"] = f"not computed: a paired t-test needs at least 2 common queries, there are {self.common_queries}"
        return out

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        header = ["metric", self.name_a, self.name_b, "diff (b-a)", "t", "p"]
        rows = [
            [r.metric, _fmt(r.mean_a), _fmt(r.mean_b), f"{r.diff:+.4f}" + (DAGGER if r.significant else ""), _fmt(r.t), _fmt(r.p)]
            for r in self.rows
        ]
        return header, rows

    def to_markdown(self) -> str:
        header, rows = self._rows()
        return _markdown_table(header, rows) + f"\n\n{self.common_queries} common queries; {DAGGER}: p < {ALPHA} (paired t-test)."

    def to_rich_table(self) -> "Table":
        from rich.table import Table
        from rich.text import Text

        header, rows = self._rows()
        table = Table(title=Text(f"{self.name_b} vs {self.name_a}"), caption=f"{self.common_queries} common queries",
                      title_justify="left", caption_justify="left")
        _fixed_columns(table, [Text(h) for h in header])
        for r in rows:
            table.add_row(*(Text(c) for c in r))
        return table

    def __str__(self) -> str:
        header, rows = self._rows()
        return _plain_table(header, rows) + f"\n{self.common_queries} common queries; {DAGGER}: p < {ALPHA} (paired t-test)"


@dataclass
class EvalReport:
    """Evaluation of one system.

    Attributes
    ----------
    name : str
        System / run name.
    metrics : list of str
        Metric names, in display order.
    aggregate : dict
        ``{metric: mean over the evaluated queries}``.
    per_query : dict
        ``{query_id: {metric: value}}``.
    num_queries : int
        Number of evaluated queries.
    metadata : dict
        Anything else (data set, rel_level, timing, ...).
    """

    name: str
    metrics: list[str]
    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    num_queries: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, metric: str) -> float:
        try:
            return self.aggregate[metric]
        except KeyError:
            raise KeyError(f"metric {metric!r} is not in this report; it has {self.metrics}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metrics": list(self.metrics),
            "aggregate": dict(self.aggregate),
            "num_queries": self.num_queries,
            "per_query": {q: dict(v) for q, v in self.per_query.items()},
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalReport":
        return cls(
            name=d["name"],
            metrics=list(d["metrics"]),
            aggregate=dict(d["aggregate"]),
            per_query={q: dict(v) for q, v in d.get("per_query", {}).items()},
            num_queries=int(d["num_queries"]),
            metadata=dict(d.get("metadata", {})),
        )

    def to_json(self, path: str | Path | None = None) -> str:
        """The report as JSON; also written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, default=str)
        if path is not None:
            from attnsift.io import atomic_write_text

            atomic_write_text(path, text + "\n")
        return text

    def _row(self) -> list[str]:
        return [self.name] + [_fmt(self.aggregate[m]) for m in self.metrics]

    def to_markdown(self) -> str:
        return _markdown_table(["system"] + self.metrics, [self._row()]) + f"\n\n{self.num_queries} queries."

    def to_rich_table(self) -> "Table":
        return render_rich_table([self], baseline=None)

    def __str__(self) -> str:
        return _plain_table(["system"] + self.metrics, [self._row()]) + f"\n{self.num_queries} queries"

    def compare(self, other: "EvalReport") -> Comparison:
        """Paired comparison over common queries and common metrics: ``diff = other - self``."""
        if not isinstance(other, EvalReport):
            raise TypeError(f"compare() takes an EvalReport, got {type(other).__name__}")
        metrics = [m for m in self.metrics if m in other.metrics]
        if not metrics:
            raise ValueError(
                f"reports {self.name!r} and {other.name!r} share no metric ({self.metrics} vs {other.metrics}); "
                "evaluate both with the same metrics"
            )
        common = [q for q in self.per_query if q in other.per_query]
        if not common:
            raise ValueError(
                f"reports {self.name!r} ({len(self.per_query)} queries) and {other.name!r} ({len(other.per_query)} "
                "queries) share no query, so they cannot be compared; evaluate both on the same data set and split"
            )
        rows = []
        for m in metrics:
            a = [self.per_query[q][m] for q in common]
            b = [other.per_query[q][m] for q in common]
            n = len(common)
            mean_a = sum(a) / n if n else float("nan")
            mean_b = sum(b) / n if n else float("nan")
            t, p = paired_ttest(a, b)
            rows.append(MetricComparison(m, mean_a, mean_b, mean_b - mean_a, n, t, p))
        return Comparison(
            name_a=self.name,
            name_b=other.name,
            rows=rows,
            common_queries=len(common),
            only_a=len(self.per_query) - len(common),
            only_b=len(other.per_query) - len(common),
        )


def _table_cells(reports: Sequence[EvalReport], baseline: int | None) -> tuple[list[str], list[list[str]]]:
    if not reports:
        raise ValueError("render_table needs at least one EvalReport")
    for r in reports:
        if not isinstance(r, EvalReport):
            raise TypeError(f"render_table takes EvalReport objects, got {type(r).__name__}")
    if baseline is not None and not (isinstance(baseline, int) and -len(reports) <= baseline < len(reports)):
        raise ValueError(f"baseline must be the index of one of the {len(reports)} reports or None, got {baseline!r}")
    metrics: list[str] = []
    for r in reports:
        metrics += [m for m in r.metrics if m not in metrics]
    base = reports[baseline] if baseline is not None else None
    rows = []
    for i, r in enumerate(reports):
        comp = base.compare(r) if base is not None and r is not base else None
        cells = [r.name + (" (baseline)" if r is base else "")]
        for m in metrics:
            if m not in r.aggregate:
                cells.append("-")
                continue
            mark = ""
            if comp is not None and m in [row.metric for row in comp.rows] and comp[m].significant:
                mark = DAGGER
            cells.append(_fmt(r.aggregate[m]) + mark)
        rows.append(cells)
    return ["system"] + metrics, rows


def render_table(reports: Sequence[EvalReport], baseline: int | None = 0, markdown: bool = False) -> str:
    """Systems as rows, metrics as columns; † marks p < 0.05 (paired t-test) against ``reports[baseline]``.

    ``baseline=None`` marks nothing. ``markdown=True`` gives a Markdown table, else plain text.
    """
    header, rows = _table_cells(reports, baseline)
    note = f"{DAGGER}: p < {ALPHA} vs the baseline (paired t-test over common queries)" if baseline is not None else ""
    if markdown:
        return _markdown_table(header, rows) + (f"\n\n{note}." if note else "")
    return _plain_table(header, rows) + (f"\n{note}" if note else "")


def _fixed_columns(table: "Table", header: Sequence[Any]) -> None:
    """Columns that never wrap: names left, numbers right, each number column as wide as ``0.1234†``
    (or its header), so a table keeps its layout whichever cells carry a dagger."""
    for i, h in enumerate(header):
        if i == 0:
            table.add_column(h, justify="left", no_wrap=True)
        else:
            table.add_column(h, justify="right", no_wrap=True, min_width=max(len(str(h)), len("0.0000" + DAGGER)))


def render_rich_table(reports: Sequence[EvalReport], baseline: int | None = 0, title: str | None = None) -> "Table":
    """The same table as :func:`render_table`, as a ``rich.table.Table`` with a stable layout: the
    system column first, then the metrics in order, columns of fixed width that never wrap.

    ``title`` is kept short (rich wraps a title to the table's width): the CLI prints its longer
    context lines above the table instead.
    """
    from rich.table import Table
    from rich.text import Text

    header, rows = _table_cells(reports, baseline)
    caption = f"{DAGGER}: p < {ALPHA} vs baseline (paired t-test)" if baseline is not None else None
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    _fixed_columns(table, [Text(h) for h in header])
    for r in rows:
        table.add_row(*(Text(c) for c in r))  # Text: a spec's [key=value] is a name, not rich markup
    return table
