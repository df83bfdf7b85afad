"""attnsift inside RAG frameworks: LangChain, LlamaIndex and Haystack components over Pipeline."""
