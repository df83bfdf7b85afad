"""attnsift.rerank"""
