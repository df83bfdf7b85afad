"""attnsift.train: fine-tuning recipes (above ``rerank``, ``retrieval`` and ``eval``).

    attnsift.train.blockrank        BlockRank fine-tuning: TrainConfig, train_blockrank (the loop)
    attnsift.train.blockrank_data   training prompts: relevant documents + BM25 negatives, tokenized
    attnsift.train.losses           L_lm + InfoNCE over the scoring layer's attention, one prompt
    attnsift.train.checkpoints      the run folder: atomic, resumable checkpoints and the loss log
"""
