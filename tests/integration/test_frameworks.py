"""LangChain, LlamaIndex and Haystack components against the real packages: each reranks the same
candidates to the same order and scores as Pipeline / the reranker itself, writes the attnsift_* fields,
keeps the original objects' other fields, and rejects bad input with one-line errors."""
from __future__ import annotations

import asyncio
import importlib
import sys

import pytest

from helpers import TINY_DOCS, tiny_icr

pytest.importorskip("torch")
lc_docs = pytest.importorskip("langchain_core.documents")
li_schema = pytest.importorskip("llama_index.core.schema")
haystack = pytest.importorskip("haystack")

from attnsift import Document, Pipeline, build_index, load_index  # noqa: E402
from attnsift.integrations import _common  # noqa: E402
from attnsift.integrations._common import FIRST_STAGE_RANK, FIRST_STAGE_SCORE, SCORE  # noqa: E402

QUERY = "vitamin calcium milk bone sailors ships stars sleep"


@pytest.fixture(scope="module")
def icr():
    return tiny_icr()


@pytest.fixture(scope="module")
def index():
    return build_index([Document(i, x, t) for i, (t, x) in TINY_DOCS.items()])


@pytest.fixture(scope="module")
def reference(index, icr):
    """(first stage, final ranking) of Pipeline(BM25, tiny ICR) on QUERY; the reranker changes the order."""
    first = index.retrieve(QUERY, 8)
    final = Pipeline(index, icr, first_stage_k=8)(QUERY)
    assert len(first) >= 5 and final.doc_ids != first.doc_ids  # else "same order" would prove nothing
    return first, final


def _same(got_ids, got_scores, final):
    assert got_ids == final.doc_ids
    assert got_scores == pytest.approx([c.score for c in final], rel=1e-6, abs=1e-9)


def _first_stage_fields(meta, first, scored=True):
    rank = meta[FIRST_STAGE_RANK]
    c = first.candidates[rank - 1]
    assert meta["title"] == c.document.title  # the right document at that rank
    assert meta[FIRST_STAGE_SCORE] == (pytest.approx(c.score) if scored else None)


# ------------------------------------------------------------------------------------------- LangChain
def _lc_documents(first):
    return [lc_docs.Document(page_content=c.text, id=c.doc_id, metadata={"title": c.document.title, "source": "tiny"})
            for c in first]


def test_langchain_compressor_matches_pipeline(reference, icr):
    from attnsift.integrations.langchain import AttnsiftReranker

    first, final = reference
    docs = _lc_documents(first)
    out = AttnsiftReranker(reranker=icr, top_n=None).compress_documents(docs, QUERY)
    _same([d.id for d in out], [d.metadata[SCORE] for d in out], final)
    for d in out:
        assert d.metadata["relevance_score"] == d.metadata[SCORE] and d.metadata["source"] == "tiny"
        _first_stage_fields(d.metadata, first, scored=False)  # LangChain documents carry no score
    assert all(SCORE not in d.metadata for d in docs)  # the inputs are not changed
    top = AttnsiftReranker(reranker=icr, top_n=2).compress_documents(docs, QUERY)
    assert [d.id for d in top] == final.doc_ids[:2]
    again = asyncio.run(AttnsiftReranker(reranker=icr, top_n=None).acompress_documents(docs, QUERY))
    assert [(d.id, d.metadata) for d in again] == [(d.id, d.metadata) for d in out]


def test_langchain_compressor_depth_keeps_the_rest_in_input_order(reference, icr):
    from attnsift.integrations.langchain import AttnsiftReranker

    first, _ = reference
    out = AttnsiftReranker(reranker=icr, top_n=None, depth=3).compress_documents(_lc_documents(first), QUERY)
    head = icr.rerank(first.top(3))
    assert [d.id for d in out] == head.doc_ids + first.doc_ids[3:]


def test_langchain_retriever_and_chain(reference, icr, index, tmp_path):
    from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

    from attnsift.integrations.langchain import AttnsiftReranker, AttnsiftRetriever

    first, final = reference
    retriever = AttnsiftRetriever(pipeline=Pipeline(index, icr, first_stage_k=8), k=None)
    out = retriever.invoke(QUERY)
    _same([d.id for d in out], [d.metadata[SCORE] for d in out], final)
    for d in out:
        _first_stage_fields(d.metadata, first)
        assert d.page_content == TINY_DOCS[d.id][1]
    assert [(d.id, d.metadata) for d in asyncio.run(retriever.ainvoke(QUERY))] == [(d.id, d.metadata) for d in out]
    # over a saved index, first stage only: BM25's order, cut to k
    index.save(tmp_path / "idx")
    plain = AttnsiftRetriever(index=str(tmp_path / "idx"), k=3).invoke(QUERY)
    assert [d.id for d in plain] == first.doc_ids[:3]
    assert [d.metadata[FIRST_STAGE_RANK] for d in plain] == [1, 2, 3]
    # ContextualCompressionRetriever lives in `langchain`, not langchain-core: the same as a plain chain
    compressor = AttnsiftReranker(reranker=icr, top_n=2)
    chain = RunnableParallel(docs=AttnsiftRetriever(index=index, k=8, first_stage_k=8), query=RunnablePassthrough()) \
        | RunnableLambda(lambda x: compressor.compress_documents(x["docs"], x["query"]))
    assert [d.id for d in chain.invoke(QUERY)] == final.doc_ids[:2]


def test_langchain_contextual_compression_retriever(reference, icr, index):
    # LangChain 1.x keeps it in langchain-classic (the `langchain` extra installs it); 0.x in `langchain`
    try:
        from langchain_classic.retrievers import ContextualCompressionRetriever as ccr
    except ImportError:
        ccr = pytest.importorskip("langchain.retrievers").ContextualCompressionRetriever
    from attnsift.integrations.langchain import AttnsiftReranker, AttnsiftRetriever

    _, final = reference
    r = ccr(base_compressor=AttnsiftReranker(reranker=icr, top_n=3),
            base_retriever=AttnsiftRetriever(index=index, k=8, first_stage_k=8))
    assert [d.id for d in r.invoke(QUERY)] == final.doc_ids[:3]


# ------------------------------------------------------------------------------------------- LlamaIndex
def test_llamaindex_postprocessor_matches_pipeline(reference, icr):
    from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

    from attnsift.integrations.llama_index import AttnsiftNodePostprocessor

    first, final = reference
    nodes = [NodeWithScore(node=TextNode(id_=c.doc_id, text=c.text, metadata={"title": c.document.title}), score=c.score)
             for c in first]
    post = AttnsiftNodePostprocessor(reranker=icr, top_n=None)
    out = post.postprocess_nodes(nodes, query_str=QUERY)
    _same([n.node.node_id for n in out], [n.score for n in out], final)
    for n in out:
        assert n.node.metadata[SCORE] == n.score
        _first_stage_fields(n.node.metadata, first)  # the incoming NodeWithScore.score is the first-stage score
        assert "attnsift" not in n.node.get_content(MetadataMode.LLM)  # the LLM sees the text and title only
        assert TINY_DOCS[n.node.node_id][0] in n.node.get_content(MetadataMode.LLM)
    assert all(SCORE not in n.node.metadata for n in nodes)
    again = asyncio.run(post.apostprocess_nodes(nodes, query_str=QUERY))
    assert [(n.node.node_id, n.score) for n in again] == [(n.node.node_id, n.score) for n in out]
    assert [n.node.node_id for n in AttnsiftNodePostprocessor(reranker=icr, top_n=2).postprocess_nodes(
        nodes, query_str=QUERY)] == final.doc_ids[:2]


def test_llamaindex_retriever_matches_pipeline(reference, icr, index):
    from attnsift.integrations.llama_index import AttnsiftLlamaRetriever

    first, final = reference
    retriever = AttnsiftLlamaRetriever(pipeline=Pipeline(index, icr, first_stage_k=8), k=None)
    out = retriever.retrieve(QUERY)
    _same([n.node.node_id for n in out], [n.score for n in out], final)
    for n in out:
        _first_stage_fields(n.node.metadata, first)
    again = asyncio.run(retriever.aretrieve(QUERY))
    assert [(n.node.node_id, n.score) for n in again] == [(n.node.node_id, n.score) for n in out]
    assert len(AttnsiftLlamaRetriever(index=index, k=2).retrieve(QUERY)) == 2


# ------------------------------------------------------------------------------------------- Haystack
def _hs_documents(first):
    return [haystack.Document(content=c.text, meta={"title": c.document.title, "source": "tiny"}, score=c.score,
                              embedding=[0.5, 0.25]) for c in first]


def test_haystack_ranker_matches_pipeline_and_round_trips(reference, index, tiny_model_dir):
    from attnsift.integrations.haystack import AttnsiftRanker
    from attnsift.rerank.icr import ICRReranker

    first, _ = reference
    final = Pipeline(index, ICRReranker(str(tiny_model_dir), max_words=50), first_stage_k=8)(QUERY)
    docs = _hs_documents(first)
    ranker = AttnsiftRanker(reranker="icr", model=str(tiny_model_dir), options={"max_words": 50}, top_k=None)
    out = ranker.run(query=QUERY, documents=docs)["documents"]
    by_id = {d.id: c.doc_id for d, c in zip(docs, first)}
    _same([by_id[d.id] for d in out], [d.score for d in out], final)
    for d in out:
        assert d.meta[SCORE] == d.score and d.meta["source"] == "tiny" and d.embedding == [0.5, 0.25]
        _first_stage_fields(d.meta, first)
    data = ranker.to_dict()
    assert data["type"] == "attnsift.integrations.haystack.AttnsiftRanker"
    assert data["init_parameters"]["reranker"] == "icr" and data["init_parameters"]["options"] == {"max_words": 50}
    rebuilt = AttnsiftRanker.from_dict(data)
    assert rebuilt.to_dict() == data
    assert [(d.id, d.score) for d in rebuilt.run(query=QUERY, documents=docs)["documents"]] == \
        [(d.id, d.score) for d in out]
    # inside a Haystack pipeline, saved and loaded as YAML
    pipe = haystack.Pipeline()
    pipe.add_component("ranker", rebuilt)
    kw = {"allowed_modules": ["attnsift"]} if "allowed_modules" in haystack.Pipeline.loads.__code__.co_varnames else {}
    loaded = haystack.Pipeline.loads(pipe.dumps(), **kw)
    got = loaded.run({"ranker": {"query": QUERY, "documents": docs, "top_k": 2}})["ranker"]["documents"]
    assert [d.id for d in got] == [d.id for d in out[:2]]
    again = asyncio.run(ranker.run_async(query=QUERY, documents=docs))["documents"]
    assert [(d.id, d.score) for d in again] == [(d.id, d.score) for d in out]


def test_haystack_ranker_serialises_a_reranker_object_named_by_its_model(tiny_model_dir, icr):
    from attnsift.integrations.haystack import AttnsiftRanker
    from attnsift.rerank.icr import ICRReranker

    data = AttnsiftRanker(reranker=ICRReranker(str(tiny_model_dir), max_words=40, calibration="na")).to_dict()
    assert data["init_parameters"]["model"] == str(tiny_model_dir)
    assert data["init_parameters"]["options"] == {"max_words": 40, "calibration": "na"}
    with pytest.raises(ValueError, match="loaded in Python"):
        AttnsiftRanker(reranker=icr).to_dict()  # a model object has no name to load it from


def test_haystack_retriever_round_trips(reference, index, tiny_model_dir, tmp_path):
    from attnsift.integrations.haystack import AttnsiftRetriever
    from attnsift.rerank.icr import ICRReranker

    first, _ = reference
    index.save(tmp_path / "idx")
    final = Pipeline(load_index(tmp_path / "idx"), ICRReranker(str(tiny_model_dir)), first_stage_k=8, k=4)(QUERY)
    comp = AttnsiftRetriever(index=tmp_path / "idx", reranker="icr", model=str(tiny_model_dir), first_stage_k=8, top_k=4)
    out = comp.run(query=QUERY)["documents"]
    _same([d.id for d in out], [d.score for d in out], final)
    for d in out:
        _first_stage_fields(d.meta, first)
        assert d.content == TINY_DOCS[d.id][1]
    rebuilt = AttnsiftRetriever.from_dict(comp.to_dict())
    assert rebuilt.to_dict() == comp.to_dict()
    assert [(d.id, d.score) for d in rebuilt.run(query=QUERY, top_k=2)["documents"]] == [(d.id, d.score) for d in out[:2]]
    again = asyncio.run(comp.run_async(query=QUERY))["documents"]
    assert [(d.id, d.score) for d in again] == [(d.id, d.score) for d in out]


def test_haystack_ranker_hands_the_incoming_scores_to_a_fusing_reranker(reference, index):
    from attnsift.integrations.haystack import AttnsiftRanker

    first, _ = reference
    fusing = tiny_icr(fusion="interp", fusion_weight=0.5)
    final = Pipeline(index, fusing, first_stage_k=8)(QUERY)  # fuses ICR with the BM25 scores
    docs = _hs_documents(first)
    out = AttnsiftRanker(reranker=fusing, top_k=None).run(query=QUERY, documents=docs)["documents"]
    by_id = {d.id: c.doc_id for d, c in zip(docs, first)}
    _same([by_id[d.id] for d in out], [d.score for d in out], final)
    from attnsift.integrations.langchain import AttnsiftReranker

    positional = AttnsiftReranker(reranker=fusing, top_n=None).compress_documents(_lc_documents(first), QUERY)
    assert sorted(d.metadata[SCORE] for d in positional) != pytest.approx(sorted(d.score for d in out))  # scores matter


def test_async_paths_leave_the_event_loop_free(reference, icr):
    from attnsift.integrations.langchain import AttnsiftReranker

    first, final = reference
    compressor = AttnsiftReranker(reranker=icr.with_options(max_words=7), top_n=None)  # no cached masses

    async def both():
        ticks = 0
        task = asyncio.ensure_future(compressor.acompress_documents(_lc_documents(first), QUERY))
        while not task.done():
            await asyncio.sleep(0.001)
            ticks += 1
        return ticks, task.result()

    ticks, out = asyncio.run(both())
    assert ticks > 1 and len(out) == len(first)


# ------------------------------------------------------------------------------------------- conversions
def test_ids_positions_and_first_stage_scores():
    items = [_common.Incoming("a", "one"), _common.Incoming(None, "two"), _common.Incoming("a", "three"),
             _common.Incoming("has space", "four"), _common.Incoming("#1", "five")]
    ranking, scores = _common.to_ranking("q", items, "test")
    assert ranking.doc_ids == ["a", "#1.1", "#2", "#3", "#1"]  # framework ids kept, positional ids never collide
    assert scores == [None] * 5 and [c.score for c in ranking] == [5.0, 4.0, 3.0, 2.0, 1.0]
    # framework scores that keep the input order are the first-stage scores; others give way to positions
    kept, _ = _common.to_ranking("q", [_common.Incoming("x", "a", score=2.0), _common.Incoming("y", "b", score=2.0)], "t")
    assert [c.score for c in kept] == [2.0, 2.0] and kept.doc_ids == ["x", "y"]
    swapped, given = _common.to_ranking("q", [_common.Incoming("y", "a", score=1.0), _common.Incoming("x", "b", score=2.0)], "t")
    assert swapped.doc_ids == ["y", "x"] and given == [1.0, 2.0]


def test_llamaindex_media_resource_nodes_are_read(icr):
    from llama_index.core.schema import MediaResource, Node, NodeWithScore, TextNode

    from attnsift.integrations.llama_index import AttnsiftNodePostprocessor

    texts = ["Vitamin C prevents scurvy.", "Granite is a rock."]
    media = [NodeWithScore(node=Node(id_=f"n{i}", text_resource=MediaResource(text=t))) for i, t in enumerate(texts)]
    plain = [NodeWithScore(node=TextNode(id_=f"n{i}", text=t)) for i, t in enumerate(texts)]
    post = AttnsiftNodePostprocessor(reranker=icr, top_n=None)
    assert [(n.node.node_id, n.score) for n in post.postprocess_nodes(media, query_str="scurvy")] == \
        [(n.node.node_id, n.score) for n in post.postprocess_nodes(plain, query_str="scurvy")]


def test_haystack_duplicate_contents_all_come_back(icr):
    from attnsift.integrations.haystack import AttnsiftRanker

    docs = [haystack.Document(content="Vitamin C prevents scurvy."), haystack.Document(content="Granite is a rock."),
            haystack.Document(content="Vitamin C prevents scurvy.")]
    assert docs[0].id == docs[2].id
    out = AttnsiftRanker(reranker=icr, top_k=None).run(query="scurvy", documents=docs)["documents"]
    assert sorted(d.meta[FIRST_STAGE_RANK] for d in out) == [1, 2, 3]


# ------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_one_clear_error(icr):
    from llama_index.core.schema import NodeWithScore, TextNode

    from attnsift.integrations.haystack import AttnsiftRanker, AttnsiftRetriever
    from attnsift.integrations.langchain import AttnsiftReranker
    from attnsift.integrations.llama_index import AttnsiftNodePostprocessor

    lc = [lc_docs.Document(page_content="text")]
    with pytest.raises(ValueError, match="query is empty"):
        AttnsiftReranker(reranker=icr).compress_documents(lc, "  ")
    with pytest.raises(TypeError, match="LangChain Documents"):
        AttnsiftReranker(reranker=icr).compress_documents(["text"], "q")
    with pytest.raises(ValueError, match="query is empty"):
        AttnsiftNodePostprocessor(reranker=icr).postprocess_nodes([NodeWithScore(node=TextNode(text="x"))], query_str="")
    with pytest.raises(ValueError, match="needs the query"):
        AttnsiftNodePostprocessor(reranker=icr).postprocess_nodes([NodeWithScore(node=TextNode(text="x"))])
    with pytest.raises(ValueError, match="document 0 .* has no text"):
        AttnsiftNodePostprocessor(reranker=icr).postprocess_nodes([NodeWithScore(node=li_schema.Node())], query_str="q")
    with pytest.raises(ValueError, match="document 1 .* has no text"):
        AttnsiftRanker(reranker=icr).run(query="q", documents=[haystack.Document(content="a"),
                                                               haystack.Document(content=None, meta={"k": 1})])
    with pytest.raises(ValueError, match="query is empty"):
        asyncio.run(AttnsiftRanker(reranker=icr).run_async(query="", documents=[haystack.Document(content="a")]))
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        AttnsiftRanker(reranker=icr).run(query="q", documents=[haystack.Document(content="a")], top_k=0)
    with pytest.raises(ValueError, match="top_n must be a positive integer"):
        AttnsiftReranker(reranker=icr, top_n=0)
    with pytest.raises(ValueError, match="unknown reranker 'icx'"):
        AttnsiftRanker(reranker="icx")
    with pytest.raises(TypeError, match="registry name"):
        AttnsiftNodePostprocessor(reranker=42)
    with pytest.raises(ValueError, match="built: drop them"):
        AttnsiftReranker(reranker=icr, model="smollm2-135m")
    with pytest.raises(ValueError, match="no index folder"):
        AttnsiftRetriever(index="/nonexistent/index")


def test_no_documents_load_nothing():
    from attnsift.integrations.haystack import AttnsiftRanker
    from attnsift.integrations.langchain import AttnsiftReranker

    ranker = AttnsiftRanker(reranker="icr", model="smollm2-135m")
    assert ranker.run(query="q", documents=[]) == {"documents": []}
    assert AttnsiftReranker().compress_documents([], "q") == []
    assert ranker._spec._object is None  # no model was loaded for an empty list


@pytest.mark.parametrize("module,framework,extra", [("langchain", "langchain_core", "langchain"),
                                                    ("llama_index", "llama_index.core", "llamaindex"),
                                                    ("haystack", "haystack", "haystack")])
def test_missing_framework_names_the_extra(monkeypatch, module, framework, extra):
    from attnsift.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, framework, None)  # what an uninstalled package looks like to `import`
    monkeypatch.delitem(sys.modules, f"attnsift.integrations.{module}", raising=False)
    with pytest.raises(MissingDependencyError, match=rf"pip install 'attnsift\[{extra}\]'"):
        importlib.import_module(f"attnsift.integrations.{module}")
