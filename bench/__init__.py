"""attnsift.bench: orchestration above the library: resumable quality benchmarks over data sets and systems.

    attnsift.bench.specs     SystemSpec: ``bm25``, ``bm25+icr[calibration=none;depth=50]``
    attnsift.bench.quality   run_quality_bench: every system through Pipeline, resumable, tables, JSON and plots
"""
