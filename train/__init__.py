"""attnsift.train: fine-tuning recipes (above ``rerank``, ``retrieval`` and ``eval``).

    attnsift.train.blockrank   BlockRank contrastive fine-tuning (resumable, atomic checkpoints)
"""
