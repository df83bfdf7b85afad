"""attnsift in LlamaIndex: a BM25 retriever over 1,000 SciFact abstracts, its nodes reranked by ICR
(SmolLM2-135M, the shipped model) as a node postprocessor. Offline, under a minute on a laptop CPU.

    pip install 'attnsift[llamaindex]'
    export ATTNSIFT_DATA=/path/to/data        # the folder holding scifact/
    python examples/llamaindex_rerank.py [--model smollm2-135m] [--query "..."]

The postprocessor goes wherever LlamaIndex takes one, e.g.
``index.as_query_engine(node_postprocessors=[AttnsiftNodePostprocessor(top_n=3)])``.
"""
from __future__ import annotations

from typing import Sequence

from _scifact import parse_args, scifact_documents, show


def main(argv: Sequence[str] | None = None) -> list:
    args = parse_args(__doc__.splitlines()[0], argv)
    from attnsift import build_index
    from attnsift.integrations.llama_index import AttnsiftLlamaRetriever, AttnsiftNodePostprocessor

    index = build_index(scifact_documents(args.docs))                # BM25 over the abstracts
    retriever = AttnsiftLlamaRetriever(index=index, k=args.candidates)  # the first stage as a LlamaIndex retriever
    rerank = AttnsiftNodePostprocessor(reranker="icr", model=args.model, options={"max_words": args.max_words},
                                       top_n=args.top)
    nodes = rerank.postprocess_nodes(retriever.retrieve(args.query), query_str=args.query)
    show("llamaindex", args.query, [(n.node.node_id, n.score, n.node.metadata["attnsift_first_stage_rank"],
                                     n.node.metadata.get("title", "")) for n in nodes])
    return nodes


if __name__ == "__main__":
    main()
