"""attnsift.eval: evaluation data sets, TREC run/qrels I/O, metrics and reports.

Submodules (import what you need; nothing heavy is imported here)::

    attnsift.eval.datasets   load_dataset, list_datasets, Dataset, Corpus
    attnsift.eval.trec       read_run, write_run, read_qrels, write_qrels
    attnsift.eval.metrics    evaluate (ir_measures / pytrec_eval)
    attnsift.eval.report     EvalReport, Comparison, render_table, render_rich_table
"""
