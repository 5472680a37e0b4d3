"""Cluster-wise FedAvg: LoRA tensors averaged within each cluster, weighted by examples."""

from __future__ import annotations

import torch

State = dict[str, torch.Tensor]


def weighted_average(states: list[State], weights: list[float]) -> State:
    """sum_i w_i * state_i / sum_i w_i, tensor by tensor; the keys of all states must agree."""
    if not states:
        raise ValueError("nothing to average")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights must sum to a positive number, got {weights}")
    keys = states[0].keys()
    for s in states[1:]:
        if s.keys() != keys:
            raise ValueError("LoRA states with different tensors cannot be averaged")
    return {k: sum(s[k].float() * (w / total) for s, w in zip(states, weights)) for k in keys}


def aggregate_by_cluster(updates: list[tuple[int, State, int]]) -> dict[int, State]:
    """[(cluster id, LoRA state, examples)] from all clients -> one averaged state per cluster."""
    by_cluster: dict[int, list[tuple[State, int]]] = {}
    for cid, state, n in updates:
        by_cluster.setdefault(cid, []).append((state, n))
    return {cid: weighted_average([s for s, _ in items], [n for _, n in items]) for cid, items in by_cluster.items()}
