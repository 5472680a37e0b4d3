"""Task-centric strategies: one adapter per task cluster, found by FedRouter or given (oracle)."""

from __future__ import annotations

import numpy as np

from fedrouter.training.clustering import global_clusters
from fedrouter.training.strategies.base import LocalClusters, Plan, Strategy, weighted_mean


class FedRouter(Strategy):
    """Local k-means per client, weighted k-means over all local centroids on the server (K =
    `k_global` task clusters); each local cluster trains the adapter of its global cluster."""

    name = "fedrouter"
    query_mode = "kmeans"

    def plan(self, local: dict[int, LocalClusters], cfg) -> Plan:
        pids = sorted(local)
        centroids, labels = global_clusters(
            [local[p].centroids for p in pids], [local[p].counts for p in pids], cfg.k_global, cfg.seed
        )
        assign = {p: {l: int(g) for l, g in enumerate(lab)} for p, lab in zip(pids, labels)}
        return Plan("lora", centroids, [f"cluster{g}" for g in range(len(centroids))], assign)


class Oracle(Strategy):
    """The true task labels are the clusters: one adapter per task (an upper bound on clustering)."""

    name = "oracle"
    query_mode = "task"

    def plan(self, local: dict[int, LocalClusters], cfg) -> Plan:
        pids = sorted(local)
        tasks = sorted({n for p in pids for n in local[p].names})
        assign = {p: {l: tasks.index(n) for l, n in enumerate(local[p].names)} for p in pids}
        centroids = []
        for t in tasks:
            parts = [
                (local[p].centroids[l], local[p].counts[l])
                for p in pids
                for l, n in enumerate(local[p].names)
                if n == t
            ]
            centroids.append(weighted_mean([c for c, _ in parts], [n for _, n in parts]))
        return Plan("lora", np.stack(centroids), tasks, assign)
