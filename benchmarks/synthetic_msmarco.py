"""Write a synthetic MS MARCO passage collection in the official format (see
:mod:`attnsift.eval.datasets.synthetic_msmarco`, which holds the generator).

Usage::

    python benchmarks/synthetic_msmarco.py --passages 8841823 --queries 6980 --out /scratch/msmarco-full
"""
from attnsift.eval.datasets.synthetic_msmarco import main

if __name__ == "__main__":
    raise SystemExit(main())
