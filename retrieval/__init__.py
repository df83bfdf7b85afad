"""attnsift.retrieval"""
