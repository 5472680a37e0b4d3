"""What a client trains in a round, and at which learning rate: pure functions of the settings.

The FedRouter reference (GabrielTalasso/FedRouter, the Flower launcher its README names,
`training_scripts/run_flower_simulation_router.sh` -> `simulation.py`) trains one local cluster per
client per round, round-robin:

    server.py:98     cluster_id = server_round % self.fed_args.n_clusters
    server.py:107-9  params_to_client = self.global_dict[get_most_similar_adapter(..., centers[cid][cluster_id])]
    client.py:146    self.cluster_dataset = self.local_dataset.filter(lambda x: x['cluster_label'] == cluster_id)...
    client.py:152    updated_training_args.max_steps = self.script_args.max_steps

so a client spends `max_steps` per round whatever its number of clusters: the compute of a
one-adapter strategy. Only the older script `main_sft_fedrouter.py` (lines 228-272: `for c in
range(fed_args.n_clusters)`, `max_steps` each) trains every (client, cluster) pair each round.
`round-robin` is the first (the default), `full` the second, `shared` splits one budget.

The learning rate follows the reference's per-round cosine (utils/utils.py:12-24,
`cosine_learning_rate(current_round, total_rounds, initial_lr, min_lr)`, called with min_lr 1e-5 in
client.py:133 and main_sft_fedrouter.py:247); rounds count from 0 as that function's docstring
and main_sft_fedrouter.py do (the Flower client passes its 1-based round, which makes the last
round's rate the minimum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_LR = 1e-5  # the reference's min_lr


@dataclass(frozen=True)
class Unit:
    """One training job of a client in a round: its samples of `local_ids`, on global cluster `gid`'s adapter."""

    gid: int
    local_ids: tuple[int, ...]
    steps: int


def cosine_lr(rnd: int, rounds: int, lr: float, min_lr: float = MIN_LR) -> float:
    """The learning rate of round `rnd` (1-based) of `rounds`: `lr` in the first round, decaying by a half cosine."""
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (rnd - 1) / rounds))


def round_lr(schedule: str, rnd: int, rounds: int, lr: float) -> float:
    return cosine_lr(rnd, rounds, lr) if schedule == "cosine" else lr


def round_units(
    schedule: str, rnd: int, local_steps: int, local_to_global: dict[int, int], sizes: dict[int, int]
) -> list[Unit]:
    """The units a client trains in round `rnd` (1-based).

    `local_to_global`: the client's local cluster -> global cluster; `sizes`: local cluster -> its
    training samples. "round-robin": local cluster number `rnd % k` of the k sorted ones (the
    reference's `server_round % n_clusters`), `local_steps` steps; "full": each global cluster the
    client holds, `local_steps` each; "shared": each global cluster, `local_steps` split by sample
    count (at least one step each). Units without samples are left out."""
    if schedule == "round-robin":
        ids = sorted(local_to_global)
        chosen = ids[rnd % len(ids)]
        return [Unit(local_to_global[chosen], (chosen,), local_steps)] if sizes.get(chosen, 0) else []
    groups: dict[int, list[int]] = {}
    for l, g in sorted(local_to_global.items()):
        groups.setdefault(g, []).append(l)
    counts = {g: sum(sizes.get(l, 0) for l in ls) for g, ls in groups.items()}
    total = sum(counts.values()) or 1
    units = []
    for g, ls in sorted(groups.items()):
        if not counts[g]:
            continue
        steps = local_steps if schedule == "full" else max(1, round(local_steps * counts[g] / total))
        units.append(Unit(g, tuple(ls), steps))
    return units
