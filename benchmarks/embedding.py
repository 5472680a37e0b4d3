"""Embedding backends: PyTorch (the reference) against ONNX Runtime fp32 and int8, on one thread.

For each backend, on the held-out routing prompts of every task (benchmarks/routing.py):
- agreement with PyTorch: the same nearest centroid (centroids computed with PyTorch, as a release's
  are) and the cosine between the two vectors of each prompt (min, 1st percentile, mean);
- one route (embed + search) per prompt, p50 / p99, one thread (the gateway's setting);
- micro-batching under 32 concurrent callers against the backend's own batched ceiling.
Run as part of `python -m benchmarks.routing`; rendered by `render` into benchmarks/README.md.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

BACKENDS = ("torch", "onnx-fp32", "onnx-int8", "onnx-int8-all")
GOALS = {"p50_ms": 2.0, "same_adapter": 0.995, "min_cosine": 0.99, "micro_batching_vs_ceiling": 0.9}


def compare_backends(train: dict, test: dict, threads: int = 1) -> dict:
    from benchmarks.gateway_overhead import percentile
    from benchmarks.routing import embedding_throughput
    from fedrouter.router.embed import DEFAULT_EMBEDDER, load_embedder
    from fedrouter.router.index import CentroidIndex
    from fedrouter.router.release import EmbedderInfo
    from fedrouter.router.vectors import centroid

    info = EmbedderInfo("sentence-transformers", DEFAULT_EMBEDDER, 384)
    names = list(train)
    prompts = [p for n in names for p in test[n]]
    truth = np.repeat(np.arange(len(names)), [len(test[n]) for n in names])
    reference = load_embedder(info, backend="torch", threads=threads)
    index = CentroidIndex(np.stack([centroid(reference.embed(train[n])) for n in names]))  # [T, 384]
    ref_vecs = reference.embed(prompts)  # [N, 384]
    _, ref_ids = index.search(ref_vecs, k=1)
    rows = {}
    static = EmbedderInfo("static", DEFAULT_EMBEDDER, 256)
    for backend in (*BACKENDS, "static"):
        if backend == "static":  # its own space: its own centroids of the same tasks, no cosine to torch
            emb = load_embedder(static, threads=threads)
            idx = CentroidIndex(np.stack([centroid(emb.embed(train[n])) for n in names]))
        else:
            emb = reference if backend == "torch" else load_embedder(info, backend=backend, threads=threads)
            idx = index
        vecs = emb.embed(prompts)
        _, ids = idx.search(vecs, k=1)
        cos = (vecs * ref_vecs).sum(1) if backend != "static" else None
        for p in prompts[:20]:  # warm-up
            emb.embed([p])
        single = []
        for p in prompts[::3]:
            t = time.perf_counter()
            idx.search(emb.embed([p]), k=2)
            single.append((time.perf_counter() - t) * 1000)
        thr = embedding_throughput(emb, prompts)
        rows[backend] = {
            "same_adapter_as_torch": round(float((ids[:, 0] == ref_ids[:, 0]).mean()), 4),
            "accuracy": round(float((ids[:, 0] == truth).mean()), 4),
            "cosine_min": None if cos is None else round(float(cos.min()), 4),
            "cosine_p1": None if cos is None else round(float(np.percentile(cos, 1)), 4),
            "cosine_mean": None if cos is None else round(float(cos.mean()), 5),
            "route_p50_ms": round(statistics.median(single), 2),
            "route_p99_ms": round(percentile(single, 99), 2),
            "micro_batched_prompts_per_s": thr["micro_batched_prompts_per_s"],
            "one_at_a_time_prompts_per_s": thr["one_at_a_time_prompts_per_s"],
            "batched_ceiling_prompts_per_s": thr["embedder_batched_ceiling_prompts_per_s"],
            "micro_batching_vs_ceiling": round(
                thr["micro_batched_prompts_per_s"] / thr["embedder_batched_ceiling_prompts_per_s"], 3
            ),
        }
        print(backend, rows[backend], flush=True)
    return {"threads": threads, "prompts": len(prompts), "goals": GOALS, "rows": rows}


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = r["rows"]
    names = list(rows)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
    a1.bar(
        names,
        [rows[n]["route_p50_ms"] for n in names],
        color=["grey", "tab:blue", "tab:green", "tab:olive", "tab:purple"][: len(names)],
    )
    a1.axhline(r["goals"]["p50_ms"], color="red", ls="--", label=f"goal {r['goals']['p50_ms']} ms")
    a1.set_ylabel("one route, p50 ms")
    a1.set_title(f"latency, {r['threads']} thread", fontsize=9)
    a1.legend(fontsize=8)
    x = np.arange(len(names))
    a2.bar(
        x - 0.2, [rows[n]["cosine_min"] or 0 for n in names], 0.4, label="min cosine vs torch (static: another space)"
    )
    a2.bar(x + 0.2, [rows[n]["same_adapter_as_torch"] for n in names], 0.4, label="same adapter as torch")
    a2.axhline(r["goals"]["min_cosine"], color="red", ls="--", lw=0.8)
    a2.set_xticks(x, names)
    a2.set_ylim(0.95, 1.002)
    a2.set_title(f"agreement with PyTorch on {r['prompts']} held-out prompts", fontsize=9)
    a2.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(r: dict) -> str:
    """The backends table for benchmarks/README.md (hooked into report.routing)."""
    g = r["goals"]
    out = [
        "",
        f"Embedding backends, {r['threads']} thread, {r['prompts']} held-out prompts; goals: p50 ≤ {g['p50_ms']} ms, "
        f"same adapter as PyTorch ≥ {g['same_adapter']:.1%}, cosine ≥ {g['min_cosine']} for every prompt, "
        f"micro-batching ≥ {g['micro_batching_vs_ceiling']:.0%} of the ceiling. "
        "![backends](results/routing_backends.png)",
        "",
        "| backend | route p50 / p99 ms | same adapter as torch | cosine min / p1 / mean | accuracy | "
        "micro-batched / ceiling prompts/s (ratio) |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in r["rows"].items():
        cosines = (
            "another space" if v["cosine_min"] is None else f"{v['cosine_min']} / {v['cosine_p1']} / {v['cosine_mean']}"
        )
        out.append(
            f"| {name} | {v['route_p50_ms']} / {v['route_p99_ms']} | {v['same_adapter_as_torch']} | "
            f"{cosines} | {v['accuracy']} | "
            f"{v['micro_batched_prompts_per_s']} / {v['batched_ceiling_prompts_per_s']} "
            f"({v['micro_batching_vs_ceiling']}) |"
        )
    out += [
        "",
        "Reading it: `int8` is the gateway's default (`auto`) where it meets the agreement goals; `int8-all` "
        "quantises the FFN down-projections too (faster, further from PyTorch). `static` is not a backend but "
        "another embedder (`--embedder-kind static`, the default; router/static_embed.py): a token table distilled "
        "from MiniLM, "
        "so a release trained with it has its own centroids (here: its own centroids of the same tasks, and "
        "'same adapter' means the same task as PyTorch's MiniLM picks). The ceiling is the backend's "
        "own batches of 64 on one thread; the micro-batcher also runs one batch at a time on one thread (the "
        "gateway's setting, leaving the other core to vLLM). `one_at_a_time_prompts_per_s` in the JSON runs one "
        "pass per request on a thread each: with ONNX Runtime (which releases the GIL) two run at once on the "
        "two cores and none is padded, so it can exceed both.",
    ]
    return "\n".join(out)
