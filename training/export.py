"""Turn the server's final state into a release (written by router.release, atomically)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from fedrouter.router.release import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    ADAPTERS_DIR,
    BaseModelInfo,
    Cluster,
    EmbedderInfo,
    Manifest,
    Release,
    RoutingInfo,
    next_release_dir,
    write_release,
)
from fedrouter.training.config import TrainConfig
from fedrouter.training.strategies import Export


def save_adapter(
    folder: Path, state: dict[str, torch.Tensor], r: int, alpha: float, targets: list[str], base: str
) -> Path:
    """A PEFT adapter folder from LoRA tensors named as get_peft_model_state_dict names them."""
    from peft import LoraConfig

    folder.mkdir(parents=True, exist_ok=True)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=targets,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
        base_model_name_or_path=base,
    )
    config.save_pretrained(folder)
    save_file({k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}, folder / ADAPTER_WEIGHTS)
    assert (folder / ADAPTER_CONFIG).is_file()
    return folder


def export_release(cfg: TrainConfig, embedder: EmbedderInfo, base_path: str, parts: Export, training: dict) -> Release:
    """Write the next release of the run `cfg.out` from a strategy's `Export`; `embedder`: what the
    clients embedded their samples with (router.embed.embedder_info)."""
    out = next_release_dir(Path(cfg.out) / "releases")
    with tempfile.TemporaryDirectory(prefix="fedrouter-export-") as tmp:
        dirs = {}
        for name, state in parts.adapters.items():
            r = parts.ranks[name]
            alpha = cfg.lora_alpha * r / cfg.lora_r  # keeps alpha / r, the LoRA scaling, of the training run
            dirs[name] = save_adapter(Path(tmp) / name, state, r, alpha, cfg.target_modules, base_path)
        from fedrouter.router.build import lora_info

        manifest = Manifest(
            release_id=out.name,
            base_model=BaseModelInfo(name=cfg.base_name or Path(base_path).name, path=base_path),
            embedder=embedder,
            clusters=[
                Cluster(id=i, adapter=a, path=f"{ADAPTERS_DIR}/{a}", size=int(s))
                for i, (a, s) in enumerate(zip(parts.cluster_adapters, parts.sizes))
            ],
            lora=lora_info(list(dirs.values())),
            routing=RoutingInfo(threshold=cfg.threshold, fallback=cfg.fallback),
            training=json.loads(json.dumps(training, default=float)),
            client_clusters=parts.client_clusters,
        )
        return write_release(out, manifest, parts.centroids, dirs)
