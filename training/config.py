"""Run settings of a federated training run: one dataclass, read once.

Under `flwr run .` the values come from pyproject's `[tool.flwr.app.config]` (Flower's
`context.run_config`, keys with dashes); `fedrouter train` builds the same object from its flags.
The server sends the settings to the clients inside every message, so a ClientApp never needs
its own copy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

STRATEGIES = ("fedrouter", "fedavg", "local", "clustered", "floral", "oracle")


@dataclass
class TrainConfig:
    strategy: str = "fedrouter"  # one of STRATEGIES
    out: str = "runs/demo"  # run folder; releases go to <out>/releases/v<N>
    # Data
    scenario: str = "dual"  # single | dual | iid | generalization
    tasks: str = "add,sentiment,capital,parity"  # comma-separated task names (training/data)
    held_out: str = ""  # tasks nobody trains on (evaluated in `generalization`)
    data_dir: str = ""  # bring your own: one JSONL per client, used instead of the generator
    num_clients: int = 4
    train_per_task: int = 96  # training samples per (client, task)
    test_per_task: int = 24  # evaluation samples per task
    seed: int = 0
    # Model
    base_model: str = ""  # HF folder or name; empty: the prepared SmolLM2-135M-Instruct
    base_name: str = ""  # public name in the release; empty: the folder's name
    embedder: str = "all-MiniLM-L6-v2"  # model used to embed samples (and prompts when serving)
    embedder_kind: str = "sentence-transformers"  # sentence-transformers | base-llm | hash
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: str = "q_proj,v_proj"
    # Federation
    rounds: int = 3
    local_steps: int = 25  # optimizer steps per client and round (shared by its clusters by sample count)
    batch_size: int = 4  # 4 x ~46 tokens: ~0.6 s a step for SmolLM2-135M on 2 cores
    lr: float = 1e-3
    k_local: int = 2  # k-means clusters per client (FedRouter)
    k_global: int = 4  # global task clusters K (FedRouter, clustered, FLoRAL adaptors)
    # Release
    threshold: float = 0.0  # routing threshold written into the release
    fallback: str = "nearest"  # below the threshold: "base" or "nearest"
    resume: str = ""  # a release to start from (adapters and centroids); empty: fresh LoRAs

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r} is not one of {STRATEGIES}")
        if self.resume and self.strategy == "floral":  # its release keeps per-client mixtures only
            raise ValueError("--resume is not supported for floral: its release does not keep the shared adaptors")
        if self.rounds < 1 or self.local_steps < 1 or self.num_clients < 1:
            raise ValueError("rounds, local_steps and num_clients must be at least 1")

    @property
    def task_list(self) -> list[str]:
        return [t for t in self.tasks.split(",") if t]

    @property
    def held_out_list(self) -> list[str]:
        return [t for t in self.held_out.split(",") if t]

    @property
    def target_modules(self) -> list[str]:
        return [t for t in self.lora_targets.split(",") if t]

    def to_record(self) -> dict[str, Any]:
        """Flat values for a Flower ConfigRecord."""
        return asdict(self)

    @classmethod
    def from_record(cls, values: dict[str, Any]) -> TrainConfig:
        """From a ConfigRecord or Flower's run_config (dashes or underscores); unknown keys are an error."""
        known = {f.name: f.type for f in fields(cls)}
        kwargs = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown training setting {key!r}")
            kwargs[name] = value
        return cls(**kwargs)
