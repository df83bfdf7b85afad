"""attnsift.cli"""
