"""attnsift: search and reranking that reads a language model's attention.

Public API (heavy dependencies are imported lazily, so ``import attnsift`` stays fast)::

    from attnsift import Document, Query, Candidate, Ranking, Run, Pipeline, first_stage, read_run, write_run
    from attnsift import load_dataset, evaluate, BM25Retriever, ICRReranker, CrossEncoderReranker
    from attnsift import build_index, load_index, index_info, read_documents, as_documents

    index = build_index(["first text", "second text"])     # or Documents, or a path: docs.jsonl
    index.save("my-index"); index = load_index("my-index")  # any kind: bm25, dense, hybrid, late
    Pipeline(index, ICRReranker("smollm2-135m"), depth=20)("a question")

    ds = load_dataset("scifact")
    pipe = Pipeline(first_stage(ds, "bm25"), ICRReranker("smollm2-135m"), depth=20, corpus=ds.corpus)
    run = pipe.run(ds.queries)
"""
from __future__ import annotations

import importlib
from typing import Any

from attnsift._version import __version__  # noqa: E402,F401

from attnsift.errors import (  # noqa: E402
    AttnsiftError,
    DataFormatError,
    DatasetError,
    IndexCorruptedError,
    MissingDependencyError,
)
from attnsift.pipeline import Pipeline, PipelineResult, attach_texts, first_stage, provided_run  # noqa: E402
from attnsift.trec import read_qrels, read_run, write_run  # noqa: E402
from attnsift.types import Candidate, Document, Query, Ranking, Reranker, Retriever, Run  # noqa: E402

# name -> "module:attribute", resolved on first access (PEP 562).
_LAZY = {
    "load_dataset": "attnsift.eval.datasets:load_dataset",
    "Dataset": "attnsift.eval.datasets:Dataset",
    "evaluate": "attnsift.eval.metrics:evaluate",
    "EvalReport": "attnsift.eval.report:EvalReport",
    "BM25Retriever": "attnsift.retrieval.bm25:BM25Retriever",
    "DenseRetriever": "attnsift.retrieval.dense:DenseRetriever",
    "LateInteractionRetriever": "attnsift.retrieval.late_interaction:LateInteractionRetriever",
    "FusionRetriever": "attnsift.retrieval.fusion:FusionRetriever",
    "ICRReranker": "attnsift.rerank.icr:ICRReranker",
    "ListwiseReranker": "attnsift.rerank.listwise:ListwiseReranker",
    "BlockRankReranker": "attnsift.rerank.blockrank:BlockRankReranker",
    "CrossEncoderReranker": "attnsift.rerank.cross_encoder:CrossEncoderReranker",
    "build_reranker": "attnsift.registry:build_reranker",
    "load_causal_lm": "attnsift.rerank.llm:load_causal_lm",
    "build_index": "attnsift.registry:build_index",
    "load_index": "attnsift.registry:load_index",
    "index_info": "attnsift.registry:index_info",
    "read_documents": "attnsift.documents:read_documents",
    "as_documents": "attnsift.documents:as_documents",
}

__all__ = [
    "AttnsiftError",
    "Candidate",
    "DataFormatError",
    "DatasetError",
    "Document",
    "IndexCorruptedError",
    "MissingDependencyError",
    "Pipeline",
    "PipelineResult",
    "Query",
    "Ranking",
    "Reranker",
    "Retriever",
    "Run",
    "__version__",
    "read_qrels",
    "read_run",
    "write_run",
    "attach_texts",
    "first_stage",
    "provided_run",
]  # lazy names (_LAZY) are importable by name but left out of `import *`, which would load torch


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'attnsift' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
