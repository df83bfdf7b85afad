"""attnsift in LangChain: a document compressor that reranks, and a retriever over an index or Pipeline.

Needs ``langchain-core`` (``pip install 'attnsift[langchain]'``)::

    from attnsift.integrations.langchain import AttnsiftReranker, AttnsiftRetriever

    reranker = AttnsiftReranker(reranker="icr", model="smollm2-135m", top_n=3)
    best = reranker.compress_documents(docs, "what causes scurvy?")      # LangChain Documents, best first
    retriever = AttnsiftRetriever(index="my-index", reranker="icr", depth=20, k=5)
    docs = retriever.invoke("what causes scurvy?")

LangChain documents have no score field: the rerank score is ``metadata["attnsift_score"]`` (also
``metadata["relevance_score"]``, the key LangChain's own rerank compressors write), beside
``attnsift_first_stage_rank`` (1-based) and ``attnsift_first_stage_score``. A document's
``metadata["title"]`` (``title_key``), when a string, is given to the reranker as its title.
"""
from __future__ import annotations

from typing import Any, Sequence

from attnsift.integrations._common import (Hit, Incoming, PipelineSpec, RerankerSpec, arerank_items, asearch,
                                           check_count, rerank_items, require_framework, search)

_lc = require_framework("langchain_core", "langchain", "attnsift.integrations.langchain")

from langchain_core.callbacks import (AsyncCallbackManagerForRetrieverRun,  # noqa: E402
                                      CallbackManagerForRetrieverRun, Callbacks)
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from pydantic import ConfigDict, PrivateAttr  # noqa: E402

__all__ = ["AttnsiftReranker", "AttnsiftRetriever", "RELEVANCE_SCORE"]

#: the metadata key LangChain's rerank compressors (Cohere, FlashRank, cross-encoders) put their score under
RELEVANCE_SCORE = "relevance_score"


def _incoming(doc: Any, title_key: str | None, who: str) -> Incoming:
    if not isinstance(doc, Document):
        raise TypeError(f"{who}: documents must be LangChain Documents, got {type(doc).__name__}")
    title = doc.metadata.get(title_key) if title_key else None
    return Incoming(getattr(doc, "id", None), doc.page_content, title)  # Document.id: langchain-core >= 0.2.11


def _with_hit(doc: Document, hit: Hit) -> Document:
    """A copy of ``doc`` (id, content, other metadata kept) with the hit's score and first-stage fields."""
    return doc.model_copy(update={"metadata": {**doc.metadata, **hit.metadata(), RELEVANCE_SCORE: hit.score}})


def _document(hit: Hit, title_key: str | None) -> Document:
    """A new LangChain Document from an attnsift hit (retrievers)."""
    d = hit.document
    title = {title_key: d.title} if title_key and d.title else {}
    return Document(page_content=d.text, id=d.id,
                    metadata={**dict(d.metadata), **title, **hit.metadata(), RELEVANCE_SCORE: hit.score})


class AttnsiftReranker(BaseDocumentCompressor):
    """Rerank LangChain Documents with an attnsift reranker (a ``BaseDocumentCompressor``).

    Parameters
    ----------
    reranker : str or reranker
        A registry name (``icr`` [default], ``blockrank``, ``listwise``, ``cross-encoder``, ``none``),
        built on first use, or a ready attnsift reranker object.
    model : str, optional
        The named reranker's model (default: the registry's, ``smollm2-135m`` for ICR).
    options : dict, optional
        The named reranker's options (``{"max_words": 100}``).
    device : str, optional
        Where a named reranker's model runs.
    top_n : int or None
        How many documents to return [3]; None: all.
    depth : int or None
        How many of the input documents (in input order) the reranker rescores; the rest follow
        them in input order (None: all).
    title_key : str or None
        The metadata key whose string value is the document's title ["title"].

    Examples
    --------
    >>> AttnsiftReranker(reranker="icr", top_n=3).compress_documents(docs, "what causes scurvy?")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reranker: Any = "icr"
    model: str | None = None
    options: dict[str, Any] | None = None
    device: str | None = None
    top_n: int | None = 3
    depth: int | None = None
    title_key: str | None = "title"
    _spec: RerankerSpec = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        check_count(self.top_n, "top_n", type(self).__name__)
        check_count(self.depth, "depth", type(self).__name__)
        self._spec = RerankerSpec(self.reranker, self.model, self.options, self.device, type(self).__name__)

    def _items(self, documents: Sequence[Document]) -> list[Incoming]:
        return [_incoming(d, self.title_key, type(self).__name__) for d in documents]

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        """The best ``top_n`` of ``documents`` (their order: the first stage's) for ``query``, best first.

        Returns copies of the input Documents with ``attnsift_score``, ``relevance_score``,
        ``attnsift_first_stage_rank`` and ``attnsift_first_stage_score`` added to their metadata.

        Raises
        ------
        ValueError
            An empty query.
        TypeError
            Something other than LangChain Documents.
        """
        documents = list(documents)
        found = rerank_items(self._spec, query, self._items(documents), self.depth, self.top_n, type(self).__name__)
        return [_with_hit(documents[h.position], h) for h in found]

    async def acompress_documents(self, documents: Sequence[Document], query: str,
                                  callbacks: Callbacks | None = None) -> Sequence[Document]:
        """:meth:`compress_documents` without blocking the event loop (the reranker's ``arerank``)."""
        documents = list(documents)
        found = await arerank_items(self._spec, query, self._items(documents), self.depth, self.top_n,
                                    type(self).__name__)
        return [_with_hit(documents[h.position], h) for h in found]


class AttnsiftRetriever(BaseRetriever):
    """A LangChain retriever over an attnsift Pipeline (first stage, then the reranker, cut to ``k``).

    Parameters
    ----------
    pipeline : Pipeline, optional
        A ready pipeline; or give ``index`` and the settings below.
    index : str, Path or retriever, optional
        A saved index folder (``attnsift index``, ``build_index(...).save``) or an attnsift retriever.
    reranker, model, options, device
        The second stage, as for :class:`AttnsiftReranker` (``reranker=None`` [default]: first stage only).
    first_stage_k, depth : int
        As for :class:`attnsift.Pipeline` [100, all].
    k : int or None
        How many documents to return [4, LangChain's usual]; with ``pipeline=``, a cut after the
        pipeline's own ``k`` (None: all it returns).
    title_key : str or None
        The metadata key the documents' titles go under ["title"].

    Examples
    --------
    >>> AttnsiftRetriever(index="my-index", reranker="icr", depth=20, k=5).invoke("what causes scurvy?")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    pipeline: Any = None
    index: Any = None
    reranker: Any = None
    model: str | None = None
    options: dict[str, Any] | None = None
    device: str | None = None
    first_stage_k: int = 100
    depth: int | None = None
    k: int | None = 4
    title_key: str | None = "title"
    _spec: PipelineSpec = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        check_count(self.k, "k", type(self).__name__)
        k = self.k if self.pipeline is None else None
        self._spec = PipelineSpec(self.pipeline, self.index, self.reranker, self.model, self.options, self.device,
                                  self.first_stage_k, self.depth, k, type(self).__name__)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        found = search(self._spec, query, type(self).__name__)
        return [_document(h, self.title_key) for h in found[:self.k]]

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun) -> list[Document]:
        found = await asearch(self._spec, query, type(self).__name__)
        return [_document(h, self.title_key) for h in found[:self.k]]
