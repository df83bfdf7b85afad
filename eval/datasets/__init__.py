"""Evaluation data sets: corpus, queries, relevance judgements and provided first-stage runs.

A data set comes from one of:

1. a folder in BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``, optional
   ``runs/*.trec``), given as a path, or by its folder name under ``data_dir`` / the data folder
   (:func:`data_folder`: ``$ATTNSIFT_DATA``, else the folder ``make install`` recorded, else
   ``~/.cache/attnsift/data``);
2. an alias (``scifact``, ``nfcorpus``, ``dl19``, ``msmarco``, ``msmarco-dev``, ``msmarco-dl19``, ...) that
   resolves to its local folder when present, else to its ir_datasets id; the MS MARCO aliases read the
   official files (``collection.tsv``, ``queries.dev.small.tsv``, ``qrels.dev.small.tsv``,
   ``top1000.dev.tsv``, or their ``.tar.gz``) in ``<data folder>/msmarco-passage/``, streaming the corpus;
3. any ir_datasets id (``beir/scifact/test``), loaded through ir_datasets (queries and qrels read at
   once, documents through its docs store on first use).

Offline, when neither the local folder nor the ir_datasets source files exist, :func:`load_dataset`
raises :class:`~attnsift.errors.DatasetError` at once (no download attempt hangs) saying exactly which
files to place where.

Modules::

    base      Dataset, Corpus, DocumentStore, DatasetLoader and the loader registry
    jsonl     JSONL parsing (file and line in every error), read_queries, the corpus.jsonl store
    beir      the BEIR folder format
    msmarco   the official MS MARCO passage files (splits dev.small, dev, dl19, dl20; the top1000 run)
    msmarco_store  finding/unpacking them, the collection's offset index and streaming store
    irds      the ir_datasets backend and its offline probe
    folder    the data folder: data_folder_info, data_folder
    aliases   short names (scifact, nfcorpus, dl19, msmarco, msmarco-dev, msmarco-dl19, msmarco-dl20)
    resolve   load_dataset, list_datasets

A new folder format is one new module: a class with ``name``, ``matches(path)``, ``load(path, split,
info)`` and ``summary(path, split)``, passed to :func:`register_loader`.
"""
from attnsift.eval.datasets.aliases import ALIASES
from attnsift.eval.datasets.base import (
    DATA_ENV,
    OFFLINE_ENV,
    Corpus,
    Dataset,
    DatasetInfo,
    DatasetLoader,
    DocumentStore,
    MemoryStore,
    register_loader,
    registered_loaders,
)
from attnsift.eval.datasets.folder import data_folder, data_folder_info
from attnsift.eval.datasets.jsonl import read_queries
from attnsift.eval.datasets.resolve import list_datasets, load_dataset

__all__ = ["Dataset", "Corpus", "load_dataset", "list_datasets", "data_folder", "data_folder_info", "read_queries", "ALIASES", "DATA_ENV",
           "OFFLINE_ENV", "DatasetInfo", "DatasetLoader", "DocumentStore", "MemoryStore", "register_loader",
           "registered_loaders"]
