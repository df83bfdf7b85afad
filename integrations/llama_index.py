"""attnsift in LlamaIndex: a node postprocessor that reranks, and a retriever over an index or Pipeline.

Needs ``llama-index-core`` (``pip install 'attnsift[llamaindex]'``)::

    from attnsift.integrations.llama_index import AttnsiftNodePostprocessor, AttnsiftLlamaRetriever

    rerank = AttnsiftNodePostprocessor(reranker="icr", model="smollm2-135m", top_n=3)
    best = rerank.postprocess_nodes(nodes, query_str="what causes scurvy?")   # NodeWithScore, best first
    retriever = AttnsiftLlamaRetriever(index="my-index", reranker="icr", depth=20, k=5)
    nodes = retriever.retrieve("what causes scurvy?")

The rerank score is ``NodeWithScore.score`` and ``node.metadata["attnsift_score"]``, beside
``attnsift_first_stage_rank`` (1-based) and ``attnsift_first_stage_score`` (the incoming
``NodeWithScore.score``). The three keys are excluded from the text the LLM and the embedder see.
"""
from __future__ import annotations

from typing import Any, List, Optional

from attnsift.integrations._common import (METADATA_KEYS, Hit, Incoming, PipelineSpec, RerankerSpec, arerank_items,
                                           asearch, check_count, rerank_items, require_framework, search)

_li = require_framework("llama_index.core", "llamaindex", "attnsift.integrations.llama_index")

from llama_index.core.base.base_retriever import BaseRetriever  # noqa: E402
from llama_index.core.bridge.pydantic import Field, PrivateAttr  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle, TextNode  # noqa: E402

__all__ = ["AttnsiftNodePostprocessor", "AttnsiftLlamaRetriever"]


def _query(query_bundle: Optional[QueryBundle], who: str) -> Any:
    if query_bundle is None:
        raise ValueError(f"{who}: reranking needs the query: pass query_str= (or a QueryBundle)")
    return query_bundle.query_str


def _incoming(item: Any, title_key: str | None, who: str) -> Incoming:
    if not isinstance(item, NodeWithScore):
        raise TypeError(f"{who}: nodes must be NodeWithScore objects, got {type(item).__name__}")
    node = item.node
    title = node.metadata.get(title_key) if title_key else None
    text = getattr(node, "text", None)
    if text is None and getattr(node, "text_resource", None) is not None:  # the media-resource Node
        text = node.text_resource.text
    return Incoming(node.node_id, text, title, item.score)


def _excluded(keys: List[str]) -> List[str]:
    return [*keys, *(k for k in METADATA_KEYS if k not in keys)]


def _node_with_hit(node: BaseNode, hit: Hit) -> NodeWithScore:
    """A copy of ``node`` (id, text, relationships, other metadata kept) with the hit's fields, and its score."""
    copy = node.model_copy(update={
        "metadata": {**node.metadata, **hit.metadata()},
        "excluded_llm_metadata_keys": _excluded(node.excluded_llm_metadata_keys),
        "excluded_embed_metadata_keys": _excluded(node.excluded_embed_metadata_keys)})
    return NodeWithScore(node=copy, score=hit.score)


def _new_node(hit: Hit, title_key: str | None) -> NodeWithScore:
    d = hit.document
    title = {title_key: d.title} if title_key and d.title else {}
    node = TextNode(id_=d.id, text=d.text, metadata={**dict(d.metadata), **title})
    return _node_with_hit(node, hit)


class AttnsiftNodePostprocessor(BaseNodePostprocessor):
    """Rerank ``NodeWithScore``s with an attnsift reranker (a LlamaIndex ``BaseNodePostprocessor``).

    The input order is the first-stage order. Parameters as for
    :class:`attnsift.integrations.langchain.AttnsiftReranker`: ``reranker`` (a registry name [icr] or a
    reranker object), ``model``, ``options``, ``device``, ``top_n`` [3; None: all], ``depth`` (None: all),
    ``title_key`` (the node metadata key of the title ["title"]).

    Examples
    --------
    >>> AttnsiftNodePostprocessor(top_n=3).postprocess_nodes(nodes, query_str="what causes scurvy?")
    """

    reranker: Any = Field(default="icr", description="registry name or attnsift reranker")
    model: Optional[str] = None
    options: Optional[dict] = None
    device: Optional[str] = None
    top_n: Optional[int] = 3
    depth: Optional[int] = None
    title_key: Optional[str] = "title"
    _spec: RerankerSpec = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        check_count(self.top_n, "top_n", type(self).__name__)
        check_count(self.depth, "depth", type(self).__name__)
        self._spec = RerankerSpec(self.reranker, self.model, self.options, self.device, type(self).__name__)

    @classmethod
    def class_name(cls) -> str:
        return "AttnsiftNodePostprocessor"

    def _items(self, nodes: List[NodeWithScore]) -> list[Incoming]:
        return [_incoming(n, self.title_key, type(self).__name__) for n in nodes]

    def _postprocess_nodes(self, nodes: List[NodeWithScore],
                           query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        nodes = list(nodes)
        found = rerank_items(self._spec, _query(query_bundle, type(self).__name__), self._items(nodes), self.depth,
                             self.top_n, type(self).__name__)
        return [_node_with_hit(nodes[h.position].node, h) for h in found]

    async def _apostprocess_nodes(self, nodes: List[NodeWithScore],
                                  query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        nodes = list(nodes)
        found = await arerank_items(self._spec, _query(query_bundle, type(self).__name__), self._items(nodes),
                                    self.depth, self.top_n, type(self).__name__)
        return [_node_with_hit(nodes[h.position].node, h) for h in found]


class AttnsiftLlamaRetriever(BaseRetriever):
    """A LlamaIndex retriever over an attnsift Pipeline (first stage, then the reranker, cut to ``k``).

    Parameters
    ----------
    pipeline : Pipeline, optional
        A ready pipeline; or give ``index`` and the settings below.
    index : str, Path or retriever, optional
        A saved index folder or an attnsift retriever.
    reranker, model, options, device
        The second stage (``reranker=None`` [default]: first stage only).
    first_stage_k, depth : int
        As for :class:`attnsift.Pipeline` [100, all].
    k : int or None
        How many nodes to return [5]; with ``pipeline=``, a cut after the pipeline's own ``k``.
    title_key : str or None
        The metadata key the titles go under ["title"].
    """

    def __init__(self, pipeline: Any = None, index: Any = None, reranker: Any = None, model: str | None = None,
                 options: dict | None = None, device: str | None = None, first_stage_k: int = 100,
                 depth: int | None = None, k: int | None = 5, title_key: str | None = "title", **kwargs: Any) -> None:
        self.k = check_count(k, "k", type(self).__name__)
        self.title_key = title_key
        self._spec = PipelineSpec(pipeline, index, reranker, model, options, device, first_stage_k, depth,
                                  k if pipeline is None else None, type(self).__name__)
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        found = search(self._spec, _query(query_bundle, type(self).__name__), type(self).__name__)
        return [_new_node(h, self.title_key) for h in found[:self.k]]

    async def _aretrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        found = await asearch(self._spec, _query(query_bundle, type(self).__name__), type(self).__name__)
        return [_new_node(h, self.title_key) for h in found[:self.k]]
