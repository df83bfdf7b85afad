"""attnsift.eval: evaluation data sets, metrics and reports (a leaf over the core).

Submodules (import what you need; nothing heavy is imported here)::

    attnsift.eval.datasets   load_dataset, list_datasets, Dataset, Corpus
    attnsift.eval.metrics    evaluate (ir_measures / pytrec_eval)
    attnsift.eval.report     EvalReport, Comparison, render_table, render_rich_table

TREC run and qrels I/O is core: :mod:`attnsift.trec`.
"""
