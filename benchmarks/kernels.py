"""Speed and memory of attnsift's attention kernels.

CPU part (default): the PyTorch reference paths at 2K-16K tokens (time and sampled peak RSS growth),
and BlockRank's blockwise reference against dense masked SDPA at 16/32/64 documents.

    python benchmarks/kernels.py                 # CPU, writes benchmarks/results/kernels_cpu.{md,json}
    python benchmarks/kernels.py --gpu           # GPU (Mistral-7B shapes), writes kernels_gpu.{md,json}
    python benchmarks/kernels.py --device cuda:1 # the GPU part on that GPU (--device auto: GPU when there is one)
    TRITON_INTERPRET=1 python benchmarks/kernels.py --smoke --out /tmp/k   # the GPU code at toy shapes on CPU

GPU part (needs CUDA + triton; run with TRITON_INTERPRET unset): Mistral-7B attention shapes
(32 query heads, 8 kv heads, D=128, bf16). Op 2 (block-sparse prefill) TFLOP/s at 16K/50K/100K tokens
with 160-token documents vs SDPA dense causal and FlexAttention; op 1 (segment mass of 32 query-span
rows) time as a fraction of one layer's full causal prefill attention; MaxSim throughput vs
torch einsum + max.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attnsift.attention_kernels.block_sparse import block_sparse_attention
from attnsift.attention_kernels.block_sparse.reference import dense_mask as _dense_mask
from attnsift.attention_kernels.maxsim import maxsim
from attnsift.attention_kernels.segment_mass import segment_mass

RESULTS = Path(__file__).resolve().parent / "results"


class PeakRSS:
    """Sample this process's resident set size every ~1 ms; ``peak_mib`` = growth over the start.

    torch's CPU allocator is invisible to tracemalloc, so RSS sampling is the honest portable measure.
    """

    def __enter__(self) -> "PeakRSS":
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.base = self._rss()
        self.peak = self.base
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def peak_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def timed(fn, repeats: int = 3) -> tuple[float, float]:
    """Median wall seconds over ``repeats`` runs (after one warm-up) and sampled peak RSS growth (MiB)."""
    fn()
    times = []
    with PeakRSS() as mem:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), mem.peak_mib


def doc_offsets(n_docs: int, doc_len: int, prefix: int, final: int) -> torch.Tensor:
    lengths = [prefix] + [doc_len] * n_docs + [final]
    return torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())


def cpu_bench(args) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    H, D, R, DOC = 4, 64, 32, 160
    out: dict = {"shapes": {"heads": H, "kv_heads": H, "head_dim": D, "query_rows": R, "doc_len": DOC,
                            "dtype": "float32"}, "reference": [], "blockrank_vs_dense": []}
    for n in args.tokens:
        off = torch.arange(0, n + 1, DOC)
        q = torch.randn(R, H, D)
        k = torch.randn(n, H, D)
        t_seg, m_seg = timed(lambda: segment_mass(q, k, off, impl="reference"))
        t_tok, m_tok = timed(lambda: segment_mass(q, k, off, return_token_mass=True, impl="reference"))
        n_docs = (n - 96) // DOC
        boff = doc_offsets(n_docs, DOC, 64, n - 64 - n_docs * DOC)
        qb, kb, vb = (torch.randn(H, n, D) for _ in range(3))
        t_bs, m_bs = timed(lambda: block_sparse_attention(qb, kb, vb, boff, impl="reference"), repeats=1)
        qs = torch.randn(16, 32, D)
        dt = torch.randn(n, D)
        doff = torch.arange(0, n + 1, 80)  # 80-token documents
        t_ms, m_ms = timed(lambda: maxsim(qs, dt, doff, impl="reference"))
        row = {"tokens": n, "segment_mass_s": t_seg, "segment_mass_peak_mib": m_seg,
               "segment_mass_tokens_s": t_tok, "segment_mass_tokens_peak_mib": m_tok,
               "block_sparse_s": t_bs, "block_sparse_peak_mib": m_bs,
               "maxsim_16q_s": t_ms, "maxsim_peak_mib": m_ms}
        print(row, file=sys.stderr)
        out["reference"].append(row)
    for n_docs in args.docs:
        boff = doc_offsets(n_docs, DOC, 64, 32)
        T = int(boff[-1])
        q, k, v = (torch.randn(H, T, D) for _ in range(3))
        t_ref, m_ref = timed(lambda: block_sparse_attention(q, k, v, boff, impl="reference"), repeats=1)
        mask = _dense_mask(boff, T)
        t_dense, m_dense = timed(
            lambda: F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask), repeats=1)
        o_ref, _ = block_sparse_attention(q, k, v, boff, impl="reference")
        o_dense = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask)[0]
        row = {"docs": n_docs, "tokens": T, "blockwise_ref_s": t_ref, "blockwise_ref_peak_mib": m_ref,
               "dense_sdpa_s": t_dense, "dense_sdpa_peak_mib": m_dense, "speedup": t_dense / t_ref,
               "max_abs_diff": float((o_ref - o_dense).abs().max())}
        print(row, file=sys.stderr)
        out["blockrank_vs_dense"].append(row)
    return out


def cpu_markdown(res: dict, cmd: str, when: str) -> str:
    s = res["shapes"]
    lines = [
        "# Attention kernels: CPU reference benchmark", "",
        f"- command: `{cmd}`", f"- date: {when}",
        f"- machine: {platform.machine()} CPU, {res['threads']} torch threads (2-core shared box, 24 GB RAM), no GPU; "
        f"torch {torch.__version__}",
        f"- shapes: {s['heads']} heads (= kv heads), D={s['head_dim']}, float32; segment_mass with {s['query_rows']} "
        f"query rows and {s['doc_len']}-token segments; block_sparse with 64-token prefix, {s['doc_len']}-token "
        "documents, final block = the rest; MaxSim with 16 queries x 32 tokens, 80-token documents.",
        "- peak = growth of the sampled process RSS during the timed runs (MiB; allocator reuse makes small values noisy).",
        "", "## Reference paths vs context length", "",
        "| tokens | seg-mass s | peak MiB | seg+token mass s | peak MiB | block-sparse s | peak MiB | MaxSim s | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["reference"]:
        lines.append(f"| {r['tokens']} | {r['segment_mass_s']:.4f} | {r['segment_mass_peak_mib']:.0f} | "
                     f"{r['segment_mass_tokens_s']:.4f} | {r['segment_mass_tokens_peak_mib']:.0f} | "
                     f"{r['block_sparse_s']:.3f} | {r['block_sparse_peak_mib']:.0f} | {r['maxsim_16q_s']:.4f} | "
                     f"{r['maxsim_peak_mib']:.0f} |")
    lines += ["", "## BlockRank mask: blockwise reference vs dense masked SDPA", "",
              "| docs | tokens | blockwise s | peak MiB | dense SDPA s | peak MiB | speed-up | max abs diff |",
              "|---|---|---|---|---|---|---|---|"]
    for r in res["blockrank_vs_dense"]:
        lines.append(f"| {r['docs']} | {r['tokens']} | {r['blockwise_ref_s']:.3f} | {r['blockwise_ref_peak_mib']:.0f} | "
                     f"{r['dense_sdpa_s']:.3f} | {r['dense_sdpa_peak_mib']:.0f} | {r['speedup']:.1f}x | "
                     f"{r['max_abs_diff']:.1e} |")
    lines += ["", "## Notes", "",
              "- The blockwise reference grows about linearly with the number of documents (one small attention per "
              "document block); dense masked SDPA grows quadratically in tokens and allocates for the T x T mask/scores.",
              "- Timings with 2 torch threads on this shared, oversubscribed 2-core box were 5-20x noisier and slower "
              "(thread spinning under contention), hence 1 thread.",
              "- No GPU this session: the Triton kernels were checked for correctness only (interpreter, tests/kernels); "
              "their speed is measured by `python benchmarks/kernels.py --gpu` on a CUDA machine (not yet run)."]
    return "\n".join(lines) + "\n"


GPU_SHAPES = {"q_heads": 32, "kv_heads": 8, "head_dim": 128, "doc_len": 160, "dtype": "bfloat16",
              "sizes": (16_384, 50_000, 100_000), "maxsim_docs": (1000, 10_000), "maxsim_queries": 32,
              "maxsim_query_len": 32, "maxsim_dim": 128, "segment_rows": 32}
# --smoke: the same code on CPU under TRITON_INTERPRET=1 at toy shapes (checks the plumbing, not speed)
SMOKE_SHAPES = {"q_heads": 4, "kv_heads": 1, "head_dim": 16, "doc_len": 24, "dtype": "float32",
                "sizes": (160,), "maxsim_docs": (6,), "maxsim_queries": 2, "maxsim_query_len": 3,
                "maxsim_dim": 16, "segment_rows": 2}


def _timer(device: torch.device, repeats: int):
    """Median seconds of ``fn`` after one warm-up: CUDA events on a GPU, perf_counter elsewhere."""
    def cuda_time(fn) -> float:
        fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(repeats):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            ts.append(a.elapsed_time(b) / 1e3)
        return statistics.median(ts)

    return cuda_time if device.type == "cuda" else (lambda fn: timed(fn, repeats)[0])


def gpu_bench(args, device: str = "cuda", shapes: dict | None = None) -> dict:
    """Op 2 (block-sparse prefill) against FlexAttention and dense causal SDPA, op 1 against one layer's
    attention, MaxSim against einsum + max; every timed Triton output is first checked against a second
    implementation on the same inputs (a fast wrong kernel is no result). Mistral-7B shapes, bf16, CUDA
    events, median of ``args.repeats``; ``device="cpu"`` with SMOKE_SHAPES runs the same code under the
    Triton interpreter (``--smoke``)."""
    from attnsift.attention_kernels.block_sparse.flex import block_sparse_flex, blockrank_block_mask

    sh = dict(shapes or GPU_SHAPES)
    dev = torch.device(device)
    Hq, Hk, D, DOC = sh["q_heads"], sh["kv_heads"], sh["head_dim"], sh["doc_len"]
    dt = getattr(torch, sh["dtype"])
    timeit = _timer(dev, args.repeats)
    torch.manual_seed(0)
    res: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else f"{device} (smoke test, interpreter)",
                 "shapes": {k: list(v) if isinstance(v, tuple) else v for k, v in sh.items()},
                 "block_sparse": [], "segment_mass": [], "maxsim": []}
    for n in sh["sizes"]:
        prefix = min(100, n // 8)
        n_docs = (n - 2 * prefix) // DOC
        boff = doc_offsets(n_docs, DOC, prefix, n - prefix - n_docs * DOC)
        T = int(boff[-1])
        q = torch.randn(Hq, T, D, device=dev, dtype=dt)
        k = torch.randn(Hk, T, D, device=dev, dtype=dt)
        v = torch.randn(Hk, T, D, device=dev, dtype=dt)
        # useful FLOPs: 4 * D per allowed (query, key) pair per head (QK^T and PV)
        L = [int(boff[i + 1] - boff[i]) for i in range(len(boff) - 1)]
        pairs = L[0] * (L[0] + 1) // 2 + sum(l * L[0] + l * (l + 1) // 2 for l in L[1:-1]) \
            + L[-1] * (T - L[-1]) + L[-1] * (L[-1] + 1) // 2
        flops = 4 * D * Hq * pairs
        row: dict = {"tokens": T, "docs": n_docs, "useful_tflop": flops / 1e12,
                     "dense_causal_tflop": 4 * D * Hq * T * (T + 1) / 2 / 1e12}
        out_t, _ = block_sparse_attention(q, k, v, boff, impl="triton")
        try:
            bm = blockrank_block_mask(boff, T, dev)
            out_f, _ = block_sparse_flex(q, k, v, boff, 1 / D ** 0.5, block_mask=bm)
            row["max_abs_diff_triton_vs_flex"] = float((out_t.float() - out_f.float()).abs().max())
            row["flex_s"] = timeit(lambda: block_sparse_flex(q, k, v, boff, 1 / D ** 0.5, block_mask=bm))
            row["flex_tflops"] = flops / row["flex_s"] / 1e12
        except Exception as e:  # recorded, not hidden: the other rows still mean something
            row["flex_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        if T <= 20_000:  # the blockwise reference as a second check where it is affordable
            out_r, _ = block_sparse_attention(q, k, v, boff, impl="reference")
            row["max_abs_diff_triton_vs_reference"] = float((out_t.float() - out_r.float()).abs().max())
        del out_t
        row["triton_s"] = timeit(lambda: block_sparse_attention(q, k, v, boff, impl="triton"))
        row["triton_tflops"] = flops / row["triton_s"] / 1e12
        row["sdpa_causal_s"] = timeit(lambda: F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True,
                                                                             enable_gqa=True))
        row["sdpa_causal_tflops"] = row["dense_causal_tflop"] / row["sdpa_causal_s"]
        row["triton_vs_sdpa_per_tile"] = row["triton_tflops"] / row["sdpa_causal_tflops"]
        row["speedup_vs_sdpa_causal"] = row["sdpa_causal_s"] / row["triton_s"]
        print(row, file=sys.stderr, flush=True)
        res["block_sparse"].append(row)
        # op 1: the query-span rows against the whole context, vs one layer's causal prefill attention
        qs = torch.randn(sh["segment_rows"], Hq, D, device=dev, dtype=dt)
        kk = k.transpose(0, 1).contiguous()  # [T, Hk, D]
        soff = boff[1:-1].clone()
        got = segment_mass(qs, kk, soff, impl="triton").segment_mass.float()
        ref = segment_mass(qs, kk, soff, impl="reference").segment_mass.float()
        t_seg = timeit(lambda: segment_mass(qs, kk, soff, impl="triton"))
        t_tok = timeit(lambda: segment_mass(qs, kk, soff, return_token_mass=True, impl="triton"))
        seg = {"tokens": T, "rows": sh["segment_rows"], "segment_mass_s": t_seg, "segment_and_token_mass_s": t_tok,
               "layer_attention_s": row["sdpa_causal_s"], "fraction_of_layer": t_seg / row["sdpa_causal_s"],
               "max_abs_diff_vs_reference": float((got - ref).abs().max())}
        print(seg, file=sys.stderr, flush=True)
        res["segment_mass"].append(seg)
        q = k = v = kk = None  # free before the next size (no `del`: the timed lambdas close over them)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    Dm, nq, lq = sh["maxsim_dim"], sh["maxsim_queries"], sh["maxsim_query_len"]
    mdt = torch.float16 if dev.type == "cuda" else torch.float32
    for n_docs in sh["maxsim_docs"]:
        lengths = torch.randint(max(1, DOC // 4), DOC + 20, (n_docs,))
        doff = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        docs = torch.randn(int(doff[-1]), Dm, device=dev, dtype=mdt)
        qv = torch.randn(nq, lq, Dm, device=dev, dtype=mdt)
        pad = torch.zeros(n_docs, int(lengths.max()), Dm, device=dev, dtype=mdt)
        idx = torch.arange(int(lengths.max()), device=dev)[None] < lengths.to(dev)[:, None]
        pad[idx] = docs

        def einsum_max():
            s = torch.einsum("bqd,ntd->bnqt", qv, pad).masked_fill(~idx[None, :, None, :], float("-inf"))
            return s.amax(-1).float().sum(-1)

        diff = float((maxsim(qv, docs, doff, impl="triton").float() - einsum_max()).abs().max())
        t_tri = timeit(lambda: maxsim(qv, docs, doff, impl="triton"))
        t_ein = timeit(einsum_max)
        row = {"docs": n_docs, "doc_tokens": int(doff[-1]), "queries": nq, "triton_s": t_tri, "einsum_max_s": t_ein,
               "triton_docs_per_s": nq * n_docs / t_tri, "speedup": t_ein / t_tri, "max_abs_diff_vs_einsum": diff}
        print(row, file=sys.stderr, flush=True)
        res["maxsim"].append(row)
    return res


def gpu_markdown(res: dict) -> str:
    sh = res["shapes"]
    lines = [f"# attnsift kernels on {res['device']}", "",
             f"- command: `{res['command']}`", f"- date: {res['date']}; torch {res['torch']}",
             f"- shapes: {sh['q_heads']} query heads, {sh['kv_heads']} kv heads, head dim {sh['head_dim']}, "
             f"{sh['dtype']}, {sh['doc_len']}-token documents (random inputs)", "",
             "## Op 2: block-sparse prefill (BlockRank mask)", "",
             "TFLOP/s count each kernel's own work: the useful (unmasked) pairs for Triton and Flex, the full causal "
             "triangle for dense SDPA. `per tile` = Triton TFLOP/s / dense SDPA TFLOP/s (target >= 0.6).", "",
             "| tokens | docs | Triton s | Triton TFLOP/s | Flex s | Flex TFLOP/s | SDPA causal s | SDPA TFLOP/s | "
             "per tile | speed-up vs SDPA | max diff vs Flex |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["block_sparse"]:
        flex = (f"{r['flex_s']:.4f} | {r['flex_tflops']:.1f}" if "flex_s" in r else f"error | {r.get('flex_error', '')[:60]}")
        lines.append(f"| {r['tokens']} | {r['docs']} | {r['triton_s']:.4f} | {r['triton_tflops']:.1f} | {flex} | "
                     f"{r['sdpa_causal_s']:.4f} | {r['sdpa_causal_tflops']:.1f} | {r['triton_vs_sdpa_per_tile']:.2f} | "
                     f"{r['speedup_vs_sdpa_causal']:.1f}x | {r.get('max_abs_diff_triton_vs_flex', float('nan')):.1e} |")
    lines += ["", "## Op 1: segment attention mass (target: under 10% of one layer's attention)", "",
              "| tokens | rows | segment mass s | + token mass s | layer attention s | fraction | max diff vs reference |",
              "|---|---|---|---|---|---|---|"]
    for r in res["segment_mass"]:
        lines.append(f"| {r['tokens']} | {r['rows']} | {r['segment_mass_s']:.5f} | {r['segment_and_token_mass_s']:.5f} | "
                     f"{r['layer_attention_s']:.4f} | {r['fraction_of_layer']:.1%} | {r['max_abs_diff_vs_reference']:.1e} |")
    lines += ["", "## MaxSim (target: 3x einsum + max)", "",
              "| docs | doc tokens | queries | Triton s | einsum+max s | docs/s (Triton) | speed-up | max diff |",
              "|---|---|---|---|---|---|---|---|"]
    for r in res["maxsim"]:
        lines.append(f"| {r['docs']} | {r['doc_tokens']} | {r['queries']} | {r['triton_s']:.5f} | {r['einsum_max_s']:.5f} | "
                     f"{r['triton_docs_per_s']:.3g} | {r['speedup']:.1f}x | {r['max_abs_diff_vs_einsum']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="run the GPU part (CUDA, triton) instead of the CPU part")
    p.add_argument("--device", default=None,
                   help="auto (the GPU part when CUDA is available, else the CPU part), cpu, cuda or cuda:N "
                        "(the GPU part on that device); --gpu is --device cuda")
    p.add_argument("--smoke", action="store_true",
                   help="run the GPU part's code on CPU at toy shapes under TRITON_INTERPRET=1 (a plumbing check)")
    p.add_argument("--tokens", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    p.add_argument("--docs", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1: on the shared 2-core box, 2 threads oversubscribe and time noise)")
    p.add_argument("--repeats", type=int, default=10, help="GPU timing repeats")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    from attnsift.config import resolve_device
    from attnsift.io import atomic_write_json, atomic_write_text

    device = "cuda" if args.gpu and args.device is None else (args.device or "cpu")
    if args.gpu and args.device is not None and not args.device.startswith(("cuda", "auto")):
        p.error(f"--gpu runs the GPU part, but --device {args.device}; drop one of them")
    try:
        dev = resolve_device(device)  # a CUDA device this machine lacks stops here, in one line
    except ValueError as exc:
        p.error(str(exc))
    args.gpu = dev.type == "cuda"
    if args.gpu:
        torch.cuda.set_device(dev)

    cmd = "python benchmarks/kernels.py " + " ".join(sys.argv[1:])
    when = _dt.datetime.now().isoformat(timespec="seconds")
    if args.smoke:
        if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
            raise SystemExit("--smoke runs the GPU code on CPU under the Triton interpreter: set TRITON_INTERPRET=1.")
        args.repeats = 1
        res = gpu_bench(args, device="cpu", shapes=SMOKE_SHAPES)
        res.update(command=cmd, date=when, torch=torch.__version__)
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out / "kernels_gpu_smoke.json", res)
        atomic_write_text(args.out / "kernels_gpu_smoke.md", gpu_markdown(res))
        print(gpu_markdown(res))
        return
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu needs CUDA; run the CPU part without --gpu.")
        if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
            raise SystemExit("unset TRITON_INTERPRET for the GPU benchmark (the interpreter is for tests).")
        res = gpu_bench(args, device=str(dev))
        res.update(command=cmd, date=when, torch=torch.__version__)
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out / "kernels_gpu.json", res)
        atomic_write_text(args.out / "kernels_gpu.md", gpu_markdown(res))
        print(gpu_markdown(res))
        return
    res = cpu_bench(args)
    res.update(command=cmd, date=when, threads=args.threads, torch=torch.__version__,
               machine=f"{platform.machine()} {platform.processor() or ''}".strip())
    atomic_write_json(args.out / "kernels_cpu.json", res)
    atomic_write_text(args.out / "kernels_cpu.md", cpu_markdown(res, cmd, when))
    print(cpu_markdown(res, cmd, when))


if __name__ == "__main__":
    main()
