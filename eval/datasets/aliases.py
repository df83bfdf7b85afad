"""Short names for the data sets used in the benchmarks: where their folder is and their ir_datasets ids.

The MS MARCO aliases (``msmarco`` = ``msmarco-dev-small``, ``msmarco-dev``, ``msmarco-dl19``,
``msmarco-dl20``) share the folder ``msmarco-passage`` of official files (:mod:`.msmarco`), each reading
its own split of it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

__all__ = ["Alias", "ALIASES"]


@dataclass(frozen=True)
class Alias:
    """A data set known by a short name.

    Attributes
    ----------
    name : str
        The alias (``scifact``).
    folder : str
        Its BEIR-layout folder name under the data root.
    irds : mapping
        ``{split: ir_datasets id}``, used when the folder is absent.
    rel_level : int
        Minimum grade counted relevant.
    description : str
    run_aliases : mapping
        Short run names (``"bm25" -> "bm25_flat"``).
    folder_splits : mapping
        The split asked for -> the split read from the folder (``msmarco-dev``: ``test`` -> ``dev``); a
        split not listed is passed as given.
    """

    name: str
    folder: str
    irds: Mapping[str, str]  # split -> ir_datasets id
    rel_level: int
    description: str
    run_aliases: Mapping[str, str] = field(default_factory=dict)
    folder_splits: Mapping[str, str] = field(default_factory=dict)


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        Alias("scifact", "scifact", {"test": "beir/scifact/test", "train": "beir/scifact/train"}, 1,
              "BEIR SciFact: scientific claims vs. abstracts (5,183 docs, 300 test queries)"),
        Alias("nfcorpus", "nfcorpus",
              {"test": "beir/nfcorpus/test", "dev": "beir/nfcorpus/dev", "train": "beir/nfcorpus/train"}, 1,
              "BEIR NFCorpus: nutrition questions vs. medical abstracts (3,633 docs, 323 test queries, graded 1-2)"),
        Alias("dl19", "trec-dl19-passage", {"test": "msmarco-passage/trec-dl-2019/judged"}, 2,
              "TREC DL 2019 passage: 43 judged queries, grades 0-3 (relevant >= 2), BM25 and SPLADE++ top-100 runs",
              {"bm25": "bm25_flat", "splade": "splade_pp_ed"}),
        *(Alias(name, "msmarco-passage", {"test": "msmarco-passage/dev/small", "dev": "msmarco-passage/dev/small"}, 1,
                "MS MARCO passage dev/small: 6,980 queries over 8.8M passages (binary judgements; official files "
                "in msmarco-passage/, provided run top1000)", {}, {"test": "dev.small", "dev": "dev.small"})
          for name in ("msmarco", "msmarco-dev-small")),
        Alias("msmarco-dev", "msmarco-passage", {"test": "msmarco-passage/dev", "dev": "msmarco-passage/dev"}, 1,
              "MS MARCO passage dev: 101,093 queries (55,578 judged) over 8.8M passages", {},
              {"test": "dev", "dev": "dev"}),
        *(Alias(f"msmarco-dl{y % 100}", "msmarco-passage", {"test": f"msmarco-passage/trec-dl-{y}/judged"}, 2,
                f"TREC DL {y} passage over the full 8.8M-passage collection (grades 0-3, relevant >= 2)", {},
                {"test": f"dl{y % 100}"})
          for y in (2019, 2020)),
    )
}
