"""Client-centric strategies: each client (or group of clients) gets its own adapter.

- `local`: every client trains alone; nothing is shared.
- `clustered`: clustered FL as the FedRouter paper's baseline (GabrielTalasso/FedRouter,
  federated_learning/fed_global.py + fed_clustered.py): FedAvg until round `cluster_round`
  (the reference's `sim_round`); in that round every client trains from the global adapter, the
  clients are grouped by their LoRA-B updates (cosine similarity matrix, Ward linkage, cut into
  `k_clients` groups: the reference's `n_clusters`) and each group's adapter is the plain mean
  of its members' (as the reference averages); later rounds are FedAvg within each group.
  The reference compares one layer's B update (`layer=-1`); we concatenate all B updates.
"""

from __future__ import annotations

import numpy as np

from fedrouter.training.clustering import hierarchical_clusters
from fedrouter.training.strategies.base import (
    LocalClusters,
    Plan,
    State,
    Strategy,
    Update,
    one_shared_cluster,
    weighted_mean,
)


class Local(Strategy):
    """One adapter per client, trained on its own data only."""

    name = "local"
    client_centric = True

    def plan(self, local: dict[int, LocalClusters], cfg) -> Plan:
        pids = sorted(local)
        centroids = np.stack([local[p].centroids[0] for p in pids])
        return Plan("lora", centroids, [f"client{p}" for p in pids], {p: {0: i} for i, p in enumerate(pids)})


def flat_b(state: State) -> np.ndarray:
    """All lora_B tensors of a LoRA state, flattened in name order -> [P]."""
    import torch

    return torch.cat([state[k].float().flatten() for k in sorted(state) if "lora_B" in k]).numpy()


def regroup_clients(
    local: dict[int, LocalClusters], updates: list[Update], start: State, k: int
) -> tuple[Plan, dict[int, State]]:
    """Group clients by their updates from the common adapter `start`; one adapter per group,
    the plain mean of its members' trained adapters. Returns the new plan and adapters."""
    from fedrouter.training.aggregate import weighted_average

    updates = sorted(updates, key=lambda u: u.pid)
    base = flat_b(start)
    labels = hierarchical_clusters([flat_b(u.state) - base for u in updates], k)
    groups = sorted(set(labels.tolist()))
    members = {g: [u for u, lab in zip(updates, labels) if lab == g] for g in groups}
    centroids = np.stack(
        [
            weighted_mean([local[u.pid].centroids[0] for u in members[g]], [local[u.pid].counts[0] for u in members[g]])
            for g in groups
        ]
    )
    assign = {u.pid: {0: int(lab)} for u, lab in zip(updates, labels)}
    adapters = {g: weighted_average([u.state for u in members[g]], [1.0] * len(members[g])) for g in groups}
    return Plan("lora", centroids, [f"group{g}" for g in groups], assign), adapters


class Clustered(Strategy):
    name = "clustered"
    client_centric = True

    def plan(self, local: dict[int, LocalClusters], cfg) -> Plan:
        return one_shared_cluster(local)  # the FedAvg warm-up

    def aggregate(self, rnd, plan, adapters, updates, local, cfg):
        warming_up = plan.names == ["shared"]  # a resumed run keeps its release's groups
        if warming_up and rnd == min(cfg.cluster_round, cfg.rounds):
            return regroup_clients(local, updates, adapters[0], cfg.k_clients)
        return super().aggregate(rnd, plan, adapters, updates, local, cfg)
