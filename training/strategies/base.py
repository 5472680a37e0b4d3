"""What a strategy is: one object that decides the query, the plan, the aggregation and the export.

Every strategy runs in the same harness (server_app.py):

1. `query_mode`: what each client reports after embedding its samples ("kmeans": local k-means
   centroids, FedRouter; "task": one centroid per true task label, oracle; "one": the client's
   mean embedding);
2. `plan`: from those reports, the global clusters (routing centroids, adapter names) and, per
   client, the global cluster of each of its local clusters;
3. each round clients train the adapters of their clusters (`train_mode` "lora", or "floral":
   a mixture over K adaptors) and `aggregate` folds their updates into the cluster adapters (it
   may also change the plan: clustered FL regroups clients);
4. `export`: the adapters and centroids a release serves.

Adding a strategy means adding one subclass and registering it in `strategies/__init__.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fedrouter.router.vectors import centroid, nearest_ids

State = dict[str, Any]  # LoRA tensors by name (torch tensors)


@dataclass
class LocalClusters:
    """What a client reported in the query round."""

    centroids: np.ndarray  # [k, dim]
    counts: np.ndarray  # [k]
    names: list[str]  # local cluster names (task names for oracle)


@dataclass
class Update:
    """One client's trained copy of one cluster's adapter."""

    pid: int  # partition (client) id
    cluster: int  # global cluster id
    state: State
    n: int  # training samples behind it
    mixture: np.ndarray | None = None  # FLoRAL: the client's mixture logits [K]


@dataclass
class Plan:
    train_mode: str  # "lora" or "floral"
    centroids: np.ndarray  # [K, dim] routing centroids of the release
    names: list[str]  # adapter name of each global cluster
    assign: dict[int, dict[int, int]]  # partition -> {local cluster -> global cluster}

    def sizes(self, local: dict[int, LocalClusters]) -> list[int]:
        sizes = [0] * len(self.names)
        for pid, mapping in self.assign.items():
            for l, g in mapping.items():
                sizes[g] += int(local[pid].counts[l])
        return sizes

    def client_clusters(self, local: dict[int, LocalClusters]) -> dict[str, dict[int, int]]:
        """Per client, the clusters it trained and its samples in each (the manifest's record)."""
        out: dict[str, dict[int, int]] = {}
        for pid, mapping in sorted(self.assign.items()):
            counts: dict[int, int] = {}
            for l, g in mapping.items():
                counts[g] = counts.get(g, 0) + int(local[pid].counts[l])
            out[str(pid)] = dict(sorted(counts.items()))
        return out


@dataclass
class Export:
    """What a release gets from a strategy's final state."""

    adapters: dict[str, State]  # adapter name -> LoRA tensors
    ranks: dict[str, int]  # adapter name -> rank
    centroids: np.ndarray  # [K, dim]
    cluster_adapters: list[str]  # adapter of each cluster (row of centroids)
    sizes: list[int]
    client_clusters: dict[str, dict[int, int]]  # client -> {cluster id: samples}
    training: dict[str, Any] = field(default_factory=dict)  # extra manifest.training entries


def weighted_mean(vectors: list[np.ndarray], weights: list[float]) -> np.ndarray:
    return centroid(np.stack(vectors), weights)


def one_shared_cluster(local: dict[int, LocalClusters], train_mode: str = "lora") -> Plan:
    """Every client in one cluster, routed by the mean of all clients' embeddings."""
    pids = sorted(local)
    c = weighted_mean([local[p].centroids[0] for p in pids], [local[p].counts[0] for p in pids])
    return Plan(train_mode, c[None, :], ["shared"], {p: {0: 0} for p in pids})


class Strategy:
    """The base: plain LoRA training, cluster-wise FedAvg, one adapter per global cluster."""

    name: ClassVar[str]
    query_mode: ClassVar[str] = "one"  # "kmeans" | "task" | "one"
    train_mode: ClassVar[str] = "lora"  # "lora" | "floral"
    client_centric: ClassVar[bool] = False  # one adapter per client: evaluated through the client's own
    resumable: ClassVar[bool] = True

    def rank_factor(self, cfg) -> int:
        """Adapters have rank cfg.lora_r times this."""
        return 1

    def plan(self, local: dict[int, LocalClusters], cfg) -> Plan:
        raise NotImplementedError

    def resume_plan(self, local: dict[int, LocalClusters], centroids: np.ndarray, names: list[str]) -> Plan:
        """Resuming from a release: clients join its clusters (nearest centroid) instead of new ones."""
        assign = {p: {l: int(g) for l, g in enumerate(nearest_ids(local[p].centroids, centroids))} for p in local}
        return Plan(self.train_mode, centroids, list(names), assign)

    def aggregate(
        self, rnd: int, plan: Plan, adapters: dict[int, State], updates: list[Update], local, cfg
    ) -> tuple[Plan, dict[int, State]]:
        """Cluster-wise FedAvg weighted by examples; clusters nobody trained keep their adapter."""
        from fedrouter.training.aggregate import aggregate_by_cluster

        return plan, {**adapters, **aggregate_by_cluster([(u.cluster, u.state, u.n) for u in updates])}

    def export(self, plan: Plan, local, adapters: dict[int, State], updates: list[Update], cfg) -> Export:
        r = cfg.lora_r * self.rank_factor(cfg)
        named = {plan.names[g]: adapters[g] for g in range(len(plan.names))}
        training = {}
        if self.client_centric:
            training["client_adapters"] = {str(p): plan.names[m[0]] for p, m in plan.assign.items()}
        return Export(
            named,
            {n: r for n in named},
            plan.centroids,
            list(plan.names),
            plan.sizes(local),
            plan.client_clusters(local),
            training,
        )
