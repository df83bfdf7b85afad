"""attnsift.analysis: looking inside the attention rerankers (above ``rerank``).

    attnsift.analysis.heads     per-head document masses collected over a data set
    attnsift.analysis.headsel   choosing heads, calibration and fusion on held-out queries (head profiles)
    attnsift.analysis.explain   per-token attention of one query's candidates (HTML + PNG)
"""
