"""LLMReranker: the shared constructor, checks and the sliding-window helper."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from helpers import tiny_llama_and_tokenizer  # noqa: E402

from attnsift.rerank.blockrank import BlockRankConfig, BlockRankReranker  # noqa: E402
from attnsift.rerank.listwise import ListwiseReranker  # noqa: E402
from attnsift.rerank.llm_base import check_causal_lm, positional_scores, slide_windows  # noqa: E402


def test_slide_windows_goes_bottom_to_top_and_visits_everyone():
    seen = []

    def reverse(idx):
        seen.append(list(idx))
        return list(range(len(idx)))[::-1]

    order, windows = slide_windows(7, 4, 2, reverse)
    assert seen == [[3, 4, 5, 6], [1, 2, 6, 5], [0, 5, 6, 2]]  # windows [3,7), [1,5), [0,4) of the current order
    assert windows == 3 and sorted(order) == list(range(7))
    assert order == [2, 6, 5, 0, 1, 4, 3]
    # One window when the list fits it.
    assert slide_windows(3, 4, 2, lambda idx: [2, 0, 1]) == ([2, 0, 1], 1)
    assert positional_scores([2, 0, 1]) == [2.0, 1.0, 3.0]


def test_every_llm_reranker_takes_the_same_constructor():
    m, t = tiny_llama_and_tokenizer(layers=2, heads=2, seed=0)
    for cls in (BlockRankReranker, ListwiseReranker):
        rr = cls(m, t)
        assert rr.model is m and rr.tokenizer is t and rr.num_layers == 2 and rr.num_heads == 2
        assert rr.device == torch.device("cpu")
        with pytest.raises(ValueError, match="device= and dtype= apply to a model loaded by name"):
            cls(m, t, dtype="float32")
        with pytest.raises(TypeError, match="needs its tokenizer"):
            cls(m)
        with pytest.raises(ValueError, match="tokenizer= goes with a loaded model"):
            cls("smollm2-135m", t)
    with pytest.raises(ValueError, match="give one of them"):
        BlockRankReranker(m, t, config=BlockRankConfig(), impl="reference")
    rr = BlockRankReranker(m, t, config=BlockRankConfig(scoring_layer=1))
    sib = rr.with_options(scoring_layer=0)
    assert (sib.scoring_layer, rr.scoring_layer) == (0, 1) and sib.model is rr.model


def test_causal_lm_check():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    with pytest.raises(ValueError, match="BertModel is not a causal language model"):
        check_causal_lm(bert)
    with pytest.raises(TypeError, match="PreTrainedModel"):
        check_causal_lm(object())
    check_causal_lm(tiny_llama_and_tokenizer(layers=2, heads=2, seed=0)[0])
