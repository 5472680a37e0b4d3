"""Routing: how right, how fast, how it scales, and what micro-batching buys.

- accuracy of the router on held-out prompts of every task fedrouter ships (one centroid per task,
  the mean embedding of 32 training prompts), against the true task; random routing beside it;
- latency of one route (embedding + search) and per prompt in batches;
- the centroid index from 8 to 4,096 centroids: exact (IndexFlatIP) and approximate (IVF), with
  the approximate index's agreement with the exact one;
- embedding throughput under concurrency: the gateway's micro-batcher against one forward pass
  per request, and the embedder's own batched throughput (the ceiling);
- the embedding backends (PyTorch, ONNX Runtime fp32 / int8): agreement, latency, micro-batching
  (benchmarks/embedding.py).

    python -m benchmarks.routing

Writes benchmarks/results/routing.json, routing_accuracy.png, routing_map.png, routing_backends.png.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.gateway_overhead import percentile
from benchmarks.stack import RESULTS, machine


def task_data(per_task_train: int = 32, per_task_test: int = 50):
    from fedrouter.training.data.scenarios import all_tasks

    train, test = {}, {}
    for name, task in sorted(all_tasks().items()):
        rng = random.Random(f"routing/{name}")
        train[name] = [task.sample(rng, "train")[0] for _ in range(per_task_train)]
        test[name] = [task.sample(rng, "test")[0] for _ in range(per_task_test)]
    return train, test


def accuracy(embedder, train: dict, test: dict) -> dict:
    from fedrouter.router.index import CentroidIndex
    from fedrouter.router.vectors import centroid

    names = list(train)
    centroids = np.stack([centroid(embedder.embed(train[n])) for n in names])  # [T, dim]
    index = CentroidIndex(centroids)
    per_task, all_hits = {}, []
    for i, n in enumerate(names):
        _, ids = index.search(embedder.embed(test[n]), k=1)
        hits = ids[:, 0] == i
        per_task[n] = float(hits.mean())
        all_hits += hits.tolist()
    return {
        "tasks": len(names),
        "accuracy": float(np.mean(all_hits)),
        "random": 1 / len(names),
        "oracle": 1.0,
        "per_task": per_task,
        "centroids": centroids,
        "names": names,
    }


def latency(embedder, prompts: list[str], centroids: np.ndarray) -> dict:
    from fedrouter.router.index import CentroidIndex

    index = CentroidIndex(centroids)
    single = []
    for p in prompts[:200]:
        t = time.perf_counter()
        index.search(embedder.embed([p]), k=2)
        single.append((time.perf_counter() - t) * 1000)
    batched = {}
    for b in (8, 64):
        t = time.perf_counter()
        n = 0
        for i in range(0, 256, b):
            index.search(embedder.embed(prompts[i : i + b]), k=2)
            n += len(prompts[i : i + b])
        batched[str(b)] = round((time.perf_counter() - t) * 1000 / n, 3)
    return {
        "single_p50_ms": round(statistics.median(single), 2),
        "single_p99_ms": round(percentile(single, 99), 2),
        "per_prompt_ms_in_batches": batched,
    }


def index_scaling(dim: int) -> list[dict]:
    from fedrouter.router.index import CentroidIndex
    from fedrouter.router.vectors import l2_normalize

    rng = np.random.default_rng(0)
    out = []
    for k in (8, 64, 512, 4096):
        centroids = l2_normalize(rng.normal(size=(k, dim)))
        # queries near a centroid (noise of norm ~0.3), as real prompts sit near their task centroid
        queries = l2_normalize(centroids[rng.integers(0, k, 256)] + 0.3 / np.sqrt(dim) * rng.normal(size=(256, dim)))
        row = {"centroids": k}
        exact = CentroidIndex(centroids)
        for name, index in [("exact", exact)] + (
            [("ivf", CentroidIndex(centroids, nlist=int(np.sqrt(k)) * 2, nprobe=8))] if k >= 512 else []
        ):
            t = time.perf_counter()
            for q in queries:
                index.search(q[None, :], k=1)
            row[f"{name}_single_us"] = round((time.perf_counter() - t) * 1e6 / len(queries), 1)
            t = time.perf_counter()
            _, ids = index.search(queries, k=1)
            row[f"{name}_batch256_us_per_query"] = round((time.perf_counter() - t) * 1e6 / len(queries), 2)
            if name == "ivf":
                _, exact_ids = exact.search(queries, k=1)
                row["ivf_agrees_with_exact"] = float((ids[:, 0] == exact_ids[:, 0]).mean())
        out.append(row)
    return out


def embedding_throughput(embedder, prompts: list[str], concurrency: int = 32, n: int = 512) -> dict:
    from fedrouter.router.batcher import MicroBatcher

    t = time.perf_counter()
    for i in range(0, n, 64):
        embedder.embed(prompts[i % len(prompts) : i % len(prompts) + 64])
    ceiling = n / (time.perf_counter() - t)

    async def run(batched: bool) -> float:
        batcher = MicroBatcher(embedder.embed, max_batch=64, inline=getattr(embedder, "inline", False))
        queue = list(range(n))

        async def client() -> None:
            while queue:
                p = prompts[queue.pop() % len(prompts)]
                if batched:
                    await batcher.submit(p)
                else:
                    await asyncio.to_thread(embedder.embed, [p])

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        await batcher.close()
        return n / (time.perf_counter() - start)

    return {
        "concurrency": concurrency,
        "micro_batched_prompts_per_s": round(asyncio.run(run(True)), 1),
        "one_at_a_time_prompts_per_s": round(asyncio.run(run(False)), 1),
        "embedder_batched_ceiling_prompts_per_s": round(ceiling, 1),
    }


def plots(acc: dict, test: dict, embedder, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = acc["names"]
    fig, ax = plt.subplots(figsize=(10, 3.4))
    ax.bar(names, [acc["per_task"][n] for n in names])
    ax.axhline(acc["random"], color="grey", ls="--", label=f"random ({acc['random']:.2f})")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("routed to its own task")
    ax.set_title(
        f"Routing accuracy per task on held-out prompts (all-MiniLM-L6-v2, {len(names)} centroids): "
        f"{acc['accuracy']:.3f} overall",
        fontsize=9,
    )
    ax.tick_params(axis="x", rotation=35)
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "routing_accuracy.png", dpi=110)
    plt.close(fig)

    vecs = np.concatenate([embedder.embed(test[n][:25]) for n in names])
    both = np.concatenate([vecs, acc["centroids"]])
    mean = both.mean(0)
    _, _, vt = np.linalg.svd(both - mean, full_matrices=False)
    xy = (both - mean) @ vt[:2].T  # PCA to 2-D
    fig, ax = plt.subplots(figsize=(7.5, 6))
    cmap = plt.get_cmap("tab20")
    for i, n in enumerate(names):
        pts = xy[i * 25 : (i + 1) * 25]
        ax.scatter(pts[:, 0], pts[:, 1], s=8, color=cmap(i % 20), alpha=0.6)
        c = xy[len(vecs) + i]
        ax.scatter([c[0]], [c[1]], s=120, marker="*", color=cmap(i % 20), edgecolor="black", label=n)
    ax.set_title("Prompts (dots) and task centroids (stars), PCA of MiniLM embeddings", fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(folder / "routing_map.png", dpi=110)
    plt.close(fig)


def main() -> None:
    from benchmarks import embedding
    from fedrouter.router.embed import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    train, test = task_data()
    acc = accuracy(embedder, train, test)
    prompts = [p for ps in test.values() for p in ps]
    random.Random(0).shuffle(prompts)
    result = {
        "benchmark": "routing",
        "machine": machine(),
        "settings": {"embedder": "all-MiniLM-L6-v2", "train_prompts_per_task": 32, "test_prompts_per_task": 50},
        "accuracy": {k: v for k, v in acc.items() if k not in ("centroids", "names")},
        "latency": latency(embedder, prompts, acc["centroids"]),
        "index_scaling": index_scaling(embedder.info.dim),
        "embedding_throughput": embedding_throughput(embedder, prompts),
        "backends": embedding.compare_backends(train, test, threads=1),  # last: it sets torch to one thread
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "routing.json").write_text(json.dumps(result, indent=2) + "\n")
    plots(acc, test, embedder, RESULTS)
    embedding.plot(result["backends"], RESULTS / "routing_backends.png")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
