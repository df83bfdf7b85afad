"""The async Python API: arerank / arun run the model in a worker thread, one call at a time per model."""

import asyncio
import threading
import time

from attnsift.pipeline import Pipeline
from attnsift.rerank.base import BaseReranker
from attnsift.types import Candidate, Query, Ranking, Run


class SlowReranker(BaseReranker):
    name = "slow"

    def __init__(self, delay: float = 0.2):
        self.delay = delay
        self.active = 0
        self.max_active = 0
        self.threads = set()
        self._guard = threading.Lock()

    def score(self, ranking):
        with self._guard:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        with self._guard:
            self.active -= 1
        return [float(len(c.document.text)) if c.document else 0.0 for c in ranking.candidates]


def _ranking(qid="q1"):
    from attnsift.types import Document
    cands = [Candidate(f"d{i}", 10.0 - i, Document(f"d{i}", "x" * (i + 1))) for i in range(4)]
    return Ranking(Query(qid, "question"), tuple(cands))


def test_arerank_matches_rerank_and_does_not_block_the_loop():
    rr = SlowReranker(0.3)
    ticks = []

    async def ticker(stop):
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    async def main():
        stop = asyncio.Event()
        t = asyncio.create_task(ticker(stop))
        out = await rr.arerank(_ranking(), k=3)
        stop.set()
        await t
        return out

    out = asyncio.run(main())
    # The model ran off the loop's thread, and the loop kept ticking meanwhile (blocked: once or twice).
    assert threading.get_ident() not in rr.threads
    assert len(ticks) >= 10
    assert out.doc_ids == rr.rerank(_ranking(), k=3).doc_ids == ["d2", "d1", "d0", "d3"]


def test_concurrent_arerank_calls_take_turns_on_the_model():
    rr = SlowReranker(0.1)
    sibling_view = rr  # siblings share the instance dict's lock; the same object here

    async def main():
        return await asyncio.gather(*(sibling_view.arerank(_ranking(f"q{i}")) for i in range(4)))

    outs = asyncio.run(main())
    assert [o.query.id for o in outs] == ["q0", "q1", "q2", "q3"]
    assert rr.max_active == 1


def test_pipeline_arun_equals_call():
    run = Run([_ranking("q1")], name="given")
    pipe = Pipeline(run, SlowReranker(0.05), first_stage_k=4, depth=2)
    q = Query("q1", "question")

    async def main():
        return await asyncio.gather(pipe.arun(q), pipe.arun(q))

    a, b = asyncio.run(main())
    assert a.doc_ids == b.doc_ids == pipe(q).doc_ids
    assert pipe.reranker.max_active == 1


def test_pipeline_result_keeps_the_first_stage_and_aresult_equals_it():
    run = Run([_ranking("q1")], name="given")
    pipe = Pipeline(run, SlowReranker(0.01), first_stage_k=4, depth=2)
    q = Query("q1", "question")
    res = pipe.result(q)
    assert res.first_stage.doc_ids == ["d0", "d1", "d2", "d3"]  # the first stage's order, before reranking
    assert res.ranking.doc_ids == pipe(q).doc_ids == ["d1", "d0", "d2", "d3"]
    assert asyncio.run(pipe.aresult(q)).ranking.doc_ids == res.ranking.doc_ids
