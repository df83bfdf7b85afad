"""benchmarks/score_runs.py: the random-order reference the result notes cite."""
from helpers import load_benchmark

from attnsift.types import Candidate, Query, Ranking, Run


def test_shuffled_permutes_only_the_top_k_and_is_seeded():
    bench = load_benchmark("score_runs")
    ids = [f"d{i}" for i in range(8)]
    run = Run([Ranking(Query("q1", "x"), tuple(Candidate(d, float(8 - i)) for i, d in enumerate(ids)))])
    orders = {tuple(c.doc_id for c in bench.shuffled(run, 5, s)["q1"].candidates) for s in range(10)}
    assert len(orders) > 1  # the seed changes the order
    for o in orders:
        assert sorted(o[:5]) == ids[:5] and list(o[5:]) == ids[5:]  # the tail keeps the run's order
    assert bench.shuffled(run, 5, 3)["q1"] == bench.shuffled(run, 5, 3)["q1"]
