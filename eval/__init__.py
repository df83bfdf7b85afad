"""attnsift.eval"""
