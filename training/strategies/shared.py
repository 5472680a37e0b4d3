"""FedAvg: one adapter shared by every client, at rank r or at FedRouter's capacity (rank K·r)."""

from __future__ import annotations

from fedrouter.training.strategies.base import LocalClusters, Plan, Strategy, one_shared_cluster


class FedAvg(Strategy):
    """One LoRA of rank r averaged over all clients, weighted by examples (McMahan et al.)."""

    name = "fedavg"
    client_centric = True  # every client's own adapter is the shared one

    def plan(self, local: dict[int, LocalClusters], cfg) -> Plan:
        return one_shared_cluster(local)


class FedAvgMatched(FedAvg):
    """FedAvg at matched capacity: one adapter of rank K·r (alpha K·alpha, the same scaling
    alpha/r), as many LoRA parameters as FedRouter's K rank-r adapters together."""

    name = "fedavg-matched"

    def rank_factor(self, cfg) -> int:
        return cfg.k_global
