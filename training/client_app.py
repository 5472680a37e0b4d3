"""The Flower ClientApp: a data owner's side of every strategy. Its data never leaves it.

Two messages:
- "query": embed the training prompts, cluster them locally, reply with the local centroids and
  their sample counts (FedRouter; other strategies ask for one cluster, or one per task label).
- "train": the units of this round (training/schedule.py: by default one local cluster, round-robin,
  as the FedRouter reference does), each from the adapter the server sends for its global cluster,
  on this client's samples of it; reply with the LoRA tensors, the example counts and the optimizer
  steps and samples actually run (`counted/steps`, `counted/samples`).
Only LoRA tensors, centroids, counts and training losses travel.

The client's settings arrive in each message ("config"); its partition comes from the node config
(`partition-id`, and optionally `data-path`: its own JSONL file under the deployment engine).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrouter.training.clustering import local_clusters
from fedrouter.training.config import TrainConfig
from fedrouter.training.data.scenarios import ClientData, load_client_file, scenario_from_config

app = ClientApp()


@lru_cache(maxsize=1)
def _embedder(kind: str, name: str):
    from fedrouter.router.embed import make_embedder

    return make_embedder(kind, name)


@lru_cache(maxsize=1)
def _model(base: str, r: int, alpha: int, targets: str, dtype: str = "float32"):
    """The base model with one LoRA slot, loaded once per process (Ray actors live across rounds); its
    frozen weights held in bf16, as the autocast of every training step uses them."""
    from fedrouter.training.model import hold_linear_in_bf16, load_base, load_tokenizer, with_lora

    model = hold_linear_in_bf16(with_lora(load_base(base, dtype), r, alpha, targets.split(",")))
    return model, load_tokenizer(base)


def client_data(cfg: TrainConfig, context: Context) -> tuple[int, ClientData]:
    pid = int(context.node_config.get("partition-id", 0))
    path = context.node_config.get("data-path")
    if path:  # deployment: this node's own file
        return pid, load_client_file(str(path))
    scenario = scenario_from_config(cfg)
    if pid >= len(scenario.clients):
        raise ValueError(f"partition-id {pid} but the scenario has {len(scenario.clients)} clients")
    return pid, scenario.clients[pid]


def task_labels(train: list[dict]) -> tuple[np.ndarray, list[str]]:
    """Oracle's local clusters: the client's task names, sorted, and each sample's index among them."""
    names = sorted({s["task"] for s in train})
    return np.array([names.index(s["task"]) for s in train]), names


def _embed_train(cfg: TrainConfig, data: ClientData) -> np.ndarray:
    return _embedder(cfg.embedder_kind, cfg.embedder).embed([s["prompt"] for s in data.train])  # [N, dim]


@app.query()
def query(msg: Message, context: Context) -> Message:
    cfg = TrainConfig.from_record(dict(msg.content["config"]))
    mode = str(msg.content["plan"]["mode"])
    pid, data = client_data(cfg, context)
    emb = _embed_train(cfg, data)
    if mode == "kmeans":
        centroids, labels, counts = local_clusters(emb, cfg.k_local, cfg.seed + pid)
        names = [f"local{i}" for i in range(len(centroids))]
    elif mode == "task":  # oracle: the true task labels are the clusters
        labels, names = task_labels(data.train)
        counts = np.bincount(labels, minlength=len(names))
        centroids = np.stack([emb[labels == i].mean(0) for i in range(len(names))])
    else:  # "one": the whole client is one cluster
        labels = np.zeros(len(emb), np.int64)
        counts, centroids, names = np.array([len(emb)]), emb.mean(0, keepdims=True), ["all"]
    from fedrouter.router.vectors import l2_normalize

    centroids = l2_normalize(centroids)
    # Remembered for the train rounds: which local cluster each sample belongs to.
    context.state["local"] = ArrayRecord({"labels": Array(labels.astype(np.int64))})
    content = RecordDict(
        {
            "local": ArrayRecord(
                {"centroids": Array(centroids.astype(np.float32)), "counts": Array(counts.astype(np.int64))}
            ),
            "info": ConfigRecord({"partition": pid, "names": names, "train_size": len(data.train)}),
        }
    )
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = TrainConfig.from_record(dict(msg.content["config"]))
    plan = msg.content["plan"]
    pid, data = client_data(cfg, context)
    labels = context.state["local"]["labels"].numpy()
    local_to_global = dict(zip(plan["local_ids"], plan["global_ids"]))
    factor = int(plan["rank_factor"])  # K for floral (K adaptors held as one rank-K·r LoRA) and fedavg-matched
    model, tok = _model(cfg.base_model, cfg.lora_r * factor, cfg.lora_alpha * factor, cfg.lora_targets, cfg.base_dtype)
    if str(plan["mode"]) == "floral":
        from fedrouter.training.floral import floral_client_round

        return floral_client_round(msg, context, cfg, data, model, tok, pid)

    from fedrouter.training.model import lora_state, set_lora_state, train_steps
    from fedrouter.training.schedule import round_lr, round_units

    rnd = int(plan["round"])
    lr = round_lr(cfg.lr_schedule, rnd, cfg.rounds, cfg.lr)
    sizes = {int(l): int((labels == l).sum()) for l in local_to_global}
    records, metrics = {}, {}
    steps_run = samples_run = 0
    for unit in round_units(cfg.schedule, rnd, cfg.local_steps, local_to_global, sizes):
        samples = [s for s, l in zip(data.train, labels) if int(l) in unit.local_ids]
        set_lora_state(model, msg.content[f"lora/{unit.gid}"].to_torch_state_dict())
        seed = cfg.seed * 1000 + rnd * 100 + pid * 10 + unit.gid
        done = train_steps(model, tok, samples, unit.steps, cfg.batch_size, lr, seed)
        records[f"lora/{unit.gid}"] = ArrayRecord(lora_state(model))
        metrics[f"n/{unit.gid}"] = len(samples)
        metrics[f"loss/{unit.gid}"] = done.loss
        steps_run, samples_run = steps_run + done.steps, samples_run + done.samples
    metrics["counted/steps"], metrics["counted/samples"] = steps_run, samples_run  # what ran, not what was asked
    content = RecordDict({**records, "metrics": MetricRecord(metrics), "info": ConfigRecord({"partition": pid})})
    return Message(content=content, reply_to=msg)
