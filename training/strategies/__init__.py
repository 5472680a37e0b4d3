"""The strategies, one object each, in one registry (see base.py for what a strategy decides).

| strategy       | clients cluster by | global clusters                               | release adapters          |
|----------------|--------------------|-----------------------------------------------|---------------------------|
| fedrouter      | local k-means      | weighted k-means over local centroids (K)     | one per task cluster      |
| oracle         | true task labels   | one per task                                  | one per task              |
| fedavg         | one cluster        | one                                           | one shared, rank r        |
| fedavg-matched | one cluster        | one                                           | one shared, rank K·r      |
| local          | one cluster        | one per client, never shared                  | one per client            |
| clustered      | one cluster        | FedAvg warm-up, then Ward groups of updates   | one per client group      |
| floral         | one cluster        | K shared adaptors, a mixture per client       | one mixture per client    |
"""

from __future__ import annotations

from fedrouter.training.strategies.base import Export, LocalClusters, Plan, Strategy, Update
from fedrouter.training.strategies.client_centric import Clustered, Local, regroup_clients
from fedrouter.training.strategies.floral import Floral
from fedrouter.training.strategies.shared import FedAvg, FedAvgMatched
from fedrouter.training.strategies.task_centric import FedRouter, Oracle

REGISTRY: dict[str, Strategy] = {
    s.name: s for s in (FedRouter(), Oracle(), FedAvg(), FedAvgMatched(), Local(), Clustered(), Floral())
}
NAMES = tuple(REGISTRY)


def get_strategy(name: str) -> Strategy:
    if name not in REGISTRY:
        raise ValueError(f"strategy {name!r} is not one of {NAMES}")
    return REGISTRY[name]


__all__ = [
    "Export",
    "LocalClusters",
    "Plan",
    "Strategy",
    "Update",
    "REGISTRY",
    "NAMES",
    "get_strategy",
    "regroup_clients",
]
