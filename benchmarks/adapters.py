"""Releases with many adapters for the serving benchmarks: tiny random LoRAs on the default base model.

One PEFT model is built once and its LoRA weights re-drawn per adapter, so 64 adapters take seconds,
not minutes. Each adapter gets a made-up topic (its centroid is the mean of three prompts about it),
so `model="auto"` routes too. What is measured with them is serving, never quality.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

TOPICS = (
    "volcanoes glaciers deserts rainforests coral tides comets nebulae bees ants wolves owls sharks "
    "orchids cacti mushrooms bread cheese coffee tea chess poker jazz opera ballet sculpture pottery "
    "origami knitting sailing rowing skiing surfing cycling marathons archery fencing judo yoga "
    "bridges tunnels railways canals lighthouses castles pyramids cathedrals gardens vineyards "
    "satellites telescopes microscopes batteries magnets lasers robots compilers databases "
    "encryption taxes mortgages pensions lanterns kites"
).split()


def adapter_names(n: int) -> list[str]:
    return [f"t{i:02d}" for i in range(n)]


def make_adapters(base: Path, folder: Path, names: list[str], r: int = 8, salt: str = "") -> dict[str, Path]:
    """Random rank-`r` LoRAs on q/v (cached on disk by name); another `salt` draws other weights."""
    missing = [n for n in names if not (folder / n / "adapter_model.safetensors").exists()]
    if missing:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"]))
        for name in missing:
            torch.manual_seed(
                sum(map(ord, name)) if not salt else int(hashlib.sha256(f"{salt}/{name}".encode()).hexdigest()[:8], 16)
            )
            with torch.no_grad():
                for pname, p in peft_model.named_parameters():
                    if "lora_A" in pname:
                        p.normal_(0, 0.02)
                    elif "lora_B" in pname:
                        p.normal_(0, 0.01)
            peft_model.save_pretrained(folder / name)
    return {n: folder / n for n in names}


def prompts_for(i: int) -> list[str]:
    topic = TOPICS[i % len(TOPICS)]
    return [f"Tell me about {topic}.", f"What do you know about {topic}?", f"Explain {topic} briefly."]


def many_adapter_release(work: Path, n: int, release_id: str = "v1", r: int = 8) -> Path:
    """A release of the default base model with `n` random adapters (built once under `work`). Each
    release id other than v1 draws its own weights, so a reload from v1 to it registers every adapter."""
    from fedrouter.router.build import build_release
    from fedrouter.router.embed import SentenceTransformerEmbedder
    from fedrouter.training.base_model import prepare_base_model

    release = work / f"release-{n}" / release_id
    if release.exists():
        return release
    base = prepare_base_model()
    names = adapter_names(n)
    if release_id == "v1":
        adapters = make_adapters(base, work / "adapters", names, r)
    else:
        adapters = make_adapters(base, work / f"adapters-{release_id}", names, r, salt=release_id)
    examples = work / "examples"
    examples.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (examples / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts_for(i)))
    build_release(
        release,
        base_model=str(base),
        adapters=adapters,
        examples={name: examples / f"{name}.jsonl" for name in names},
        embedder=SentenceTransformerEmbedder(),
        release_id=release_id,
    )
    return release
