"""FLoRAL (arXiv 2410.03497; reference code zeligism/FLoRAL): K shared LoRA adaptors and a
private softmax mixture per client, served as one rank-K·r adapter per client.

Values from the reference (zeligism/FLoRAL, floral/conf and floral/model/router.py):
- the router (mixture logits, initialised to zeros) has its own parameter group without weight
  decay (training/utils.py `get_param_groups`), at `router_lr: ${lr}` by default
  (conf/method/_method_with_router.yaml:6): the adaptors' lr, as here (`router_lr_scale` = 1);
- while training, noise U[0, noise_std) with noise_std = 1.0 (conf/method/_method_with_router.yaml,
  `torch.rand_like` in Router.moe) is added to the logits before the softmax; none at evaluation;
- aggregation (server/strategy/floralavg.py, FloralAvg): adaptor k is averaged over clients with
  weights n_c·pi_c[k] / sum_c' n_c'·pi_c'[k] (examples times the client's mixture weight).
The reference optimises with SGD (conf/base.yaml `optimizer: torch.optim.SGD`); here every
parameter uses AdamW (the harness's optimizer), whose step is about the lr whatever the gradient's
scale: the router keeps the reference's ratio to the adaptors' lr rather than its absolute value.
"""

from __future__ import annotations

import numpy as np

from fedrouter.training.strategies.base import Export, LocalClusters, Plan, Strategy, Update, one_shared_cluster


class Floral(Strategy):
    name = "floral"
    train_mode = "floral"
    client_centric = True
    resumable = False  # its release keeps per-client mixtures, not the shared adaptors

    def rank_factor(self, cfg) -> int:
        return cfg.k_global

    def plan(self, local: dict[int, LocalClusters], cfg) -> Plan:
        return one_shared_cluster(local, "floral")

    def aggregate(self, rnd, plan, adapters, updates, local, cfg):
        from fedrouter.training.floral import floral_average

        state = floral_average(
            [u.state for u in updates], [u.mixture for u in updates], [u.n for u in updates], cfg.lora_r
        )
        return plan, {0: state}

    def export(self, plan: Plan, local, adapters, updates: list[Update], cfg) -> Export:
        import torch

        from fedrouter.training.floral import export_mixture

        mixtures = {u.pid: u.mixture for u in updates}
        pids = sorted(mixtures)
        named = {f"client{p}": export_mixture(adapters[0], mixtures[p], cfg.lora_r) for p in pids}
        return Export(
            named,
            {n: cfg.lora_r * cfg.k_global for n in named},
            np.stack([local[p].centroids[0] for p in pids]),
            list(named),
            [int(local[p].counts.sum()) for p in pids],
            {str(p): {i: int(local[p].counts.sum())} for i, p in enumerate(pids)},
            {
                "client_adapters": {str(p): f"client{p}" for p in pids},
                "mixtures": {str(p): torch.softmax(torch.tensor(mixtures[p]), 0).tolist() for p in pids},
            },
        )
