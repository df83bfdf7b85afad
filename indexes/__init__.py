"""attnsift.indexes"""
