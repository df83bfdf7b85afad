"""attnsift in LangChain: a BM25 retriever over 1,000 SciFact abstracts, its candidates reranked by ICR
(SmolLM2-135M, the shipped model) as a document compressor. Offline, under a minute on a laptop CPU.

    pip install 'attnsift[langchain]'
    export ATTNSIFT_DATA=/path/to/data        # the folder holding scifact/
    python examples/langchain_rerank.py [--model smollm2-135m] [--query "..."]

With ``langchain`` installed (it holds ContextualCompressionRetriever) the two are joined the usual way;
with langchain-core alone, by a two-step runnable chain that does the same.
"""
from __future__ import annotations

from typing import Sequence

from _scifact import parse_args, scifact_documents, show


def main(argv: Sequence[str] | None = None) -> list:
    args = parse_args(__doc__.splitlines()[0], argv)
    from attnsift import build_index
    from attnsift.integrations.langchain import AttnsiftReranker, AttnsiftRetriever

    index = build_index(scifact_documents(args.docs))              # BM25 over the abstracts
    retriever = AttnsiftRetriever(index=index, k=args.candidates)  # the first stage as a LangChain retriever
    reranker = AttnsiftReranker(reranker="icr", model=args.model, options={"max_words": args.max_words},
                                top_n=args.top)
    try:
        from langchain.retrievers import ContextualCompressionRetriever
    except ImportError:  # langchain-core only: the same two steps as a runnable chain
        from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

        chain = RunnableParallel(docs=retriever, query=RunnablePassthrough()) \
            | RunnableLambda(lambda x: reranker.compress_documents(x["docs"], x["query"]))
    else:
        chain = ContextualCompressionRetriever(base_compressor=reranker, base_retriever=retriever)
    docs = chain.invoke(args.query)
    show("langchain", args.query, [(d.id, d.metadata["attnsift_score"], d.metadata["attnsift_first_stage_rank"],
                                    d.metadata.get("title", "")) for d in docs])
    return docs


if __name__ == "__main__":
    main()
