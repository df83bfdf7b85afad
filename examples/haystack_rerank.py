"""attnsift in Haystack: a pipeline of two attnsift components, a retriever over a saved BM25 index of
1,000 SciFact abstracts and a ranker (ICR over SmolLM2-135M, the shipped model). Offline, under a minute
on a laptop CPU.

    pip install 'attnsift[haystack]'
    export ATTNSIFT_DATA=/path/to/data        # the folder holding scifact/
    python examples/haystack_rerank.py [--model smollm2-135m] [--query "..."]

Both components serialise: the pipeline is saved as YAML and loaded back before it runs.
"""
from __future__ import annotations

import inspect
import tempfile
from pathlib import Path
from typing import Sequence

from _scifact import parse_args, scifact_documents, show


def main(argv: Sequence[str] | None = None) -> list:
    args = parse_args(__doc__.splitlines()[0], argv)
    from haystack import Pipeline

    from attnsift import build_index
    from attnsift.integrations.haystack import AttnsiftRanker, AttnsiftRetriever

    with tempfile.TemporaryDirectory() as tmp:
        build_index(scifact_documents(args.docs)).save(Path(tmp) / "scifact-bm25")   # BM25, saved
        pipe = Pipeline()
        pipe.add_component("retriever", AttnsiftRetriever(index=Path(tmp) / "scifact-bm25", top_k=args.candidates))
        pipe.add_component("ranker", AttnsiftRanker(reranker="icr", model=args.model,
                                                    options={"max_words": args.max_words}, top_k=args.top))
        pipe.connect("retriever.documents", "ranker.documents")
        yaml = pipe.dumps()  # what is saved: index path, reranker name, model, options; no model weights
        # Haystack 3 loads only allowed modules; 2.x has no allowlist
        loads = {"allowed_modules": ["attnsift"]} if "allowed_modules" in inspect.signature(Pipeline.loads).parameters else {}
        pipe = Pipeline.loads(yaml, **loads)
        out = pipe.run({"retriever": {"query": args.query}, "ranker": {"query": args.query}})
    docs = out["ranker"]["documents"]
    show("haystack", args.query, [(d.id, d.score, d.meta["attnsift_first_stage_rank"], d.meta.get("title", ""))
                                  for d in docs])
    return docs


if __name__ == "__main__":
    main()
