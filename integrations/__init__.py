"""attnsift inside RAG frameworks: LangChain, LlamaIndex and Haystack components over Pipeline.

Each framework has its own module, imported on demand (each needs its extra)::

    attnsift.integrations.langchain     AttnsiftReranker (document compressor), AttnsiftRetriever
    attnsift.integrations.llama_index   AttnsiftNodePostprocessor, AttnsiftLlamaRetriever
    attnsift.integrations.haystack      AttnsiftRanker, AttnsiftRetriever (@component, serialisable)

They share one conversion (:mod:`attnsift.integrations._common`): the rerank score goes in the framework's
score field and in metadata as ``attnsift_score``, beside ``attnsift_first_stage_rank`` and
``attnsift_first_stage_score``. See docs/integrations.md.
"""
