#!/bin/bash
# A new user's first hour, timed: run from the root of a CLEAN clone (shared/ beside it), with a fresh
# attnsift cache, exactly the README's set-up and commands, then the user's own documents.
#   bash benchmarks/first_hour.sh /tmp/first_hour.log
# Recorded: benchmarks/results/first_hour.md
set -u
LOG=${1:-first_hour.log}
export ATTNSIFT_CACHE=${ATTNSIFT_CACHE:-$(mktemp -d)/attnsift-cache}
unset ATTNSIFT_DATA
: > "$LOG"
t() {  # run a command; record its wall time, exit code, the end of stdout and of stderr
  local s=$(date +%s.%N)
  "$@" > .fh.out 2> .fh.err
  local rc=$?
  local e=$(date +%s.%N)
  printf '\n$ %s\n[exit %s, %.1f s]\n' "$*" "$rc" "$(echo "$e - $s" | bc)" >> "$LOG"
  tail -n 12 .fh.out >> "$LOG"
  echo "--- stderr (last 6 lines)" >> "$LOG"
  tail -n 6 .fh.err >> "$LOG"
}
t make run
source .venv/bin/activate          # the README's commands, typed in the venv (no ATTNSIFT_DATA)
t attnsift datasets --path
t attnsift datasets
t attnsift rerank --dataset scifact -k 10 --save-run bm25.trec
t attnsift evaluate --dataset scifact --run bm25.trec
t attnsift index --dataset scifact --out indexes/scifact-bm25
t attnsift retrieve --index indexes/scifact-bm25 --query "vitamin D and bone density" -k 10
# the user's own documents: 1,000 NFCorpus abstracts written as {"id","title","text"} lines
DATA=$(attnsift datasets --path | awk '{print $1}')
python - "$DATA" <<'PY'
import json, sys
with open(f"{sys.argv[1]}/nfcorpus/corpus.jsonl") as f, open("mydocs.jsonl", "w") as o:
    for i, line in enumerate(f):
        if i == 1000: break
        d = json.loads(line); o.write(json.dumps({"id": d["_id"], "title": d["title"], "text": d["text"]}) + "\n")
PY
t attnsift index --input mydocs.jsonl --out my-index
t attnsift search --index my-index "does vitamin D prevent cancer?" -k 5
t attnsift search --index my-index "does vitamin D prevent cancer?" -k 5 --reranker icr --depth 20
t attnsift index --input mydocs.jsonl --retriever dense --encoder minilm --out my-dense
t attnsift index --input mydocs.jsonl --retriever dense --encoder minilm --out my-dense-again
t attnsift index --input mydocs.jsonl --retriever hybrid --encoder minilm --out my-hybrid
t attnsift search --index my-hybrid "does vitamin D prevent cancer?" -k 5 --reranker icr --depth 20
cat > rag.py <<'PY'
import time
t0 = time.perf_counter()
from attnsift import ICRReranker, Pipeline, build_index, load_index, read_documents
index = build_index(read_documents("mydocs.jsonl"), retriever="dense", encoder="minilm")
t1 = time.perf_counter()
index.save("py-dense"); index = load_index("py-dense")
pipe = Pipeline(index, ICRReranker("smollm2-135m", max_words=100), first_stage_k=20, depth=20, k=3)
for c in pipe("does vitamin D prevent cancer?"):
    print(f"{c.score:+.3f} {c.doc_id} {c.document.title[:60]}")
print(f"build (cached encodings) {t1 - t0:.1f} s, total {time.perf_counter() - t0:.1f} s")
PY
t python rag.py
# the issue's own example: a dense first stage over a data set, twice (the second reads the cached vectors)
t attnsift rerank --dataset nfcorpus --retriever hybrid --encoder minilm --max-queries 30
t attnsift rerank --dataset nfcorpus --retriever hybrid --encoder minilm --max-queries 30
rm -f .fh.out .fh.err
echo DONE >> "$LOG"
