"""Engines that run a Pipeline past one process (Ray)."""
