"""Build a release from adapters a user already has, plus example prompts for each.

Each adapter gets one cluster whose centroid is the normalised mean embedding of its examples.
Example files are JSONL, one object per line with a `prompt` field (the training data format,
where `response` and `task` may also appear).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedrouter.router.embed import Embedder
from fedrouter.router.release import (
    ADAPTER_CONFIG,
    ADAPTERS_DIR,
    BaseModelInfo,
    Cluster,
    LoraInfo,
    Manifest,
    Release,
    RoutingInfo,
    is_safe_name,
    write_release,
)
from fedrouter.router.vectors import centroid


def read_jsonl(path: str | Path, required: tuple[str, ...] = ("prompt",)) -> list[dict[str, Any]]:
    """Rows of a JSONL file; names the file and line of the first bad row."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object")
            for key in required:
                if not isinstance(row.get(key), str) or not row[key].strip():
                    raise ValueError(f"{path}:{n}: missing a non-empty string field {key!r}")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def lora_info(adapter_dirs: list[Path]) -> LoraInfo:
    """The serving limits a set of PEFT adapters needs: largest rank, union of target modules."""
    ranks, alphas, targets = [], [], set()
    for d in adapter_dirs:
        config_file = Path(d) / ADAPTER_CONFIG
        if not config_file.is_file():
            raise FileNotFoundError(f"{d} is not a PEFT adapter folder: no {ADAPTER_CONFIG}")
        cfg = json.loads(config_file.read_text())
        ranks.append(int(cfg["r"]))
        alphas.append(float(cfg.get("lora_alpha", cfg["r"])))
        t = cfg.get("target_modules") or []
        targets.update([t] if isinstance(t, str) else t)
    return LoraInfo(r=max(ranks), alpha=max(alphas), targets=sorted(targets))


def build_release(
    out: str | Path,
    *,
    base_model: str,
    adapters: dict[str, str | Path],
    examples: dict[str, str | Path],
    embedder: Embedder,
    base_name: str | None = None,
    threshold: float = 0.0,
    fallback: str = "base",
    release_id: str | None = None,
) -> Release:
    out = Path(out)
    bad = [n for n in adapters if not is_safe_name(n)]
    if bad:
        raise ValueError(f"adapter names must be letters, digits, _ . - (and not 'auto'): {bad}")
    if set(adapters) != set(examples):
        raise ValueError(
            f"every adapter needs examples and vice versa: adapters {sorted(adapters)}, examples {sorted(examples)}"
        )
    names = list(adapters)
    centroids, clusters = [], []
    for i, name in enumerate(names):
        prompts = [row["prompt"] for row in read_jsonl(examples[name])]
        centroids.append(centroid(embedder.embed(prompts)))  # [dim]
        clusters.append(Cluster(id=i, adapter=name, path=f"{ADAPTERS_DIR}/{name}", size=len(prompts)))
    manifest = Manifest(
        release_id=release_id or out.name,
        base_model=BaseModelInfo(
            name=base_name or Path(base_model).name,
            path=str(Path(base_model).absolute()) if Path(base_model).exists() else base_model,
        ),
        embedder=embedder.info,
        clusters=clusters,
        lora=lora_info([Path(adapters[n]) for n in names]),
        routing=RoutingInfo(threshold=threshold, fallback=fallback),
        training={"strategy": "manual", "rounds": 0, "metrics": {}},
    )
    return write_release(out, manifest, np.stack(centroids), {n: Path(adapters[n]) for n in names})
