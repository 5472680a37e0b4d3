"""The GPU path of training end to end on a tiny random model, before the reference run spends
the device's time (scripts/device_reference.sh runs it once the wheels are there): a real Flower
simulation on Ray with the clients sharing the GPU, a release written, evaluated on the GPU."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from fedrouter.training.config import TrainConfig
from fedrouter.training.data.scenarios import scenario_from_config
from fedrouter.training.evaluate import evaluate_release
from fedrouter.training.model import device
from fedrouter.training.run import ray_backend, train
from tests.tiny import make_tiny_llama


def main() -> None:
    print(f"device {device()} ({torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}); "
          f"Ray backend {ray_backend(4)}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        base = make_tiny_llama(Path(tmp) / "base")
        for strategy in sys.argv[1:] or ["fedrouter"]:
            cfg = TrainConfig(
                strategy=strategy, out=f"{tmp}/{strategy}", scenario="dual", tasks="add,capital", num_clients=4,
                base_model=str(base), base_name="tiny", embedder_kind="hash", embedder="hash-64", rounds=2,
                local_steps=3, batch_size=4, train_per_task=12, test_per_task=3, k_local=2, k_global=2, lora_r=4,
                lora_alpha=8,
            )  # fmt: skip
            t0 = time.monotonic()
            release = train(cfg, quiet=True)
            t1 = time.monotonic()
            scenario = scenario_from_config(cfg)
            picks = [x for c in scenario.clients for x in c.train]
            mode = "global" if strategy == "fedrouter" else "client"
            result = evaluate_release(release.path, scenario, modes=(mode,), validation=picks)
            steps = [h["steps"] for h in release.manifest.training["history"]]
            print(f"{strategy}: trained {t1 - t0:.1f} s, evaluated {time.monotonic() - t1:.1f} s, "
                  f"steps per client and round {steps}, scores {result['modes']}")  # fmt: skip


if __name__ == "__main__":
    main()
