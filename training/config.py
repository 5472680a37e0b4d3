"""Run settings of a federated training run: one dataclass, read once.

The defaults are defined here only: pyproject's `[tool.flwr.app.config]` repeats them for `flwr
run .` (Flower's `context.run_config`, keys with dashes) and a unit test checks that the two agree.
`fedrouter train` builds the same object from its flags.
The server sends the settings to the clients inside every message, so a ClientApp never needs
its own copy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from fedrouter.router.embed import DEFAULT_EMBEDDER, DEFAULT_KIND

SCHEDULES = ("round-robin", "shared", "full")


@dataclass
class TrainConfig:
    strategy: str = "fedrouter"  # a name of training/strategies (REGISTRY)
    out: str = "runs/flwr"  # run folder; releases go to <out>/releases/v<N>
    # Data
    scenario: str = "dual"  # single | dual | iid | generalization
    tasks: str = "add,sentiment,capital,parity"  # comma-separated task names (training/data)
    held_out: str = ""  # tasks nobody trains on (evaluated in `generalization`)
    data_dir: str = ""  # bring your own: one JSONL per client, used instead of the generator
    num_clients: int = 4
    train_per_task: int = 96  # training samples per (client, task)
    test_per_task: int = 24  # evaluation samples per task
    seed: int = 0
    # Tuning: train on each client's training samples minus a validation part (every 5th) and
    # evaluate on that part (the benchmark's lr sweep; training/data/scenarios.py carve_validation)
    validation: bool = False
    # Model
    base_model: str = ""  # HF folder or name; empty: the prepared SmolLM2-135M-Instruct
    base_name: str = ""  # public name in the release; empty: the folder's name
    embedder: str = DEFAULT_EMBEDDER  # model used to embed samples (and prompts when serving)
    # static (a table distilled from `embedder`, the default: `auto` within 1 ms of naming the adapter)
    # | sentence-transformers (MiniLM itself) | base-llm | hash
    embedder_kind: str = DEFAULT_KIND
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: str = "q_proj,v_proj"
    # The base model's weights while clients train and while releases are evaluated: "float32"
    # (default) or "bfloat16" (the same stored values; LoRA weights and AdamW stay float32). Either
    # way the frozen Linear weights are held in bf16, as autocast uses them (training/model.py
    # hold_linear_in_bf16); "bfloat16" also holds embeddings, norms and the residual stream in bf16.
    base_dtype: str = "float32"
    # Federation
    rounds: int = 3
    local_steps: int = 25  # optimizer steps per client and round (see `schedule`)
    # Which of a client's local clusters train in a round (training/schedule.py):
    # "round-robin" (default): one local cluster per client and round, local cluster `round % k`
    #   for `local_steps` steps, starting from its global cluster's adapter: the FedRouter
    #   reference's Flower launcher (GabrielTalasso/FedRouter server.py:98 `cluster_id = server_round
    #   % self.fed_args.n_clusters`; client.py:146-152 filters the client's data to that cluster and
    #   trains it for `max_steps`): the per-client compute of a one-adapter strategy;
    # "shared": every cluster each round, the client's `local_steps` split by sample count;
    # "full": every cluster `local_steps` each round (the older main_sft_fedrouter.py:228-272):
    #   k times the compute of a one-adapter strategy; the report compares it only with records
    #   whose counted steps match.
    schedule: str = "round-robin"
    lr_schedule: str = "cosine"  # "cosine": the reference's per-round cosine (utils/utils.py:12-24); "constant"
    batch_size: int = 4  # 4 x ~46 tokens: ~0.6 s a step for SmolLM2-135M on 2 cores
    lr: float = 1e-3
    k_local: int = 2  # k-means clusters per client (FedRouter)
    k_global: int = 4  # global task clusters K (FedRouter; FLoRAL adaptors; fedavg-matched's rank K·r)
    k_clients: int = 2  # clustered FL: client groups (the reference's n_clusters), independent of K
    cluster_round: int = 2  # clustered FL: FedAvg before this round, clients grouped by their updates in it
    # FLoRAL: the mixture logits' learning rate as a multiple of the adaptors' (it follows the same
    # cosine). The reference (zeligism/FLoRAL at 33ab810) ties the two under SGD by default:
    # conf/method/_method_with_router.yaml:6 `router_lr: ${lr}`; 5 of its 8 task configs set lr 0.1
    # and router_lr 0.1 (cifar10, synthetic_mlp: lr 0.03; cifar100: lr 0.001, router_lr 0.1).
    # Under the harness's AdamW a step moves each parameter by about its lr whatever the gradient's
    # scale, so the same ratio keeps the router's pace relative to the adaptors'; an absolute 0.1
    # beside lr 1e-3 made it move 100x faster than they do.
    router_lr_scale: float = 1.0
    router_noise: float = 1.0  # FLoRAL: U[0, this) noise on the logits while training (its router_noise_std)
    # Release
    release_every_round: bool = False  # also write a release after every round (per-round score curves)
    threshold: float = 0.0  # routing threshold written into the release
    fallback: str = "nearest"  # below the threshold: "base" or "nearest"
    resume: str = ""  # a release to start from (adapters and centroids); empty: fresh LoRAs

    def __post_init__(self) -> None:
        from fedrouter.training.strategies import get_strategy

        strategy = get_strategy(self.strategy)  # raises on an unknown name
        if self.resume and not strategy.resumable:
            raise ValueError(f"--resume is not supported for {self.strategy}: its release does not keep what it trains")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.base_dtype not in ("bfloat16", "float32"):
            raise ValueError(f"base_dtype must be 'bfloat16' or 'float32', got {self.base_dtype!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.rounds < 1 or self.local_steps < 1 or self.num_clients < 1:
            raise ValueError("rounds, local_steps and num_clients must be at least 1")
        if self.k_global < 1 or self.k_clients < 1 or self.cluster_round < 1:
            raise ValueError("k_global, k_clients and cluster_round must be at least 1")

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

    @staticmethod
    def upgrade(values: dict[str, Any]) -> dict[str, Any]:
        """A release's recorded settings in today's names: a release written before `router_lr_scale`
        recorded FLoRAL's router lr as an absolute `router_lr` beside `lr`; its ratio keeps that run's
        meaning (resume, eval)."""
        values = dict(values)
        if "router_lr" in values:
            old = values.pop("router_lr")
            values.setdefault("router_lr_scale", old / values.get("lr", TrainConfig.lr))
        return values
