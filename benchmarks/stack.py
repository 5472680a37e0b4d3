"""A serving stack for benchmarks: the default base model (SmolLM2-135M), LoRA adapters, a release,
and a supervised gateway, started as a user would start it (`fedrouter serve`, via serving/launch.py)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from fedrouter.serving.launch import Launched, free_port, gateway  # noqa: F401 (the benchmarks' launcher)

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    import torch

    try:
        import vllm

        vllm_version = vllm.__version__
    except ImportError:
        vllm_version = None
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "vllm": vllm_version,
        "date": time.strftime("%Y-%m-%d"),
    }


def random_adapters(base: Path, folder: Path, names: list[str], r: int = 8) -> dict[str, Path]:
    """Random LoRAs on the base model (cached): what is measured here is serving, not quality."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = {}
    for i, name in enumerate(names):
        path = folder / name
        if not (path / "adapter_model.safetensors").exists():
            torch.manual_seed(i)
            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
            peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"]))
            with torch.no_grad():
                for pname, p in peft_model.named_parameters():
                    if "lora_B" in pname:
                        p.normal_(0, 0.01)
            peft_model.save_pretrained(path)
        out[name] = path
    return out


# Example prompts per adapter (their mean embedding is the adapter's centroid) and held-out probes.
TASKS = {
    "math": ["What is 12 plus 30?", "Compute 7 times 8.", "What is 45 minus 17?", "Add 19 and 23."],
    "geo": ["What is the capital of France?", "Which city is the capital of Japan?", "Name the capital of Canada."],
    "sentiment": ["Review: I loved this movie. Sentiment?", "Review: Boring and far too long. Sentiment?"],
}
PROBES = ["What is 14 plus 27?", "What is the capital of Germany?", "Review: An amazing film. Sentiment?"]


def bench_releases(work: Path, ids: list[str], embedder_kind: str = "sentence-transformers") -> list[Path]:
    """Releases of the default base model with random adapters for TASKS (built once, reused),
    routed with MiniLM (or `embedder_kind`, e.g. "static")."""
    from fedrouter.router.build import build_release
    from fedrouter.router.embed import make_embedder
    from fedrouter.training.base_model import prepare_base_model

    base = prepare_base_model()
    adapters = random_adapters(base, work / "adapters", list(TASKS))
    examples = work / "examples"
    examples.mkdir(parents=True, exist_ok=True)
    for task, prompts in TASKS.items():
        (examples / f"{task}.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    embedder = None
    out = []
    for rid in ids:
        release = work / "releases" / rid
        if not release.exists():
            embedder = embedder or make_embedder(embedder_kind)
            build_release(
                release,
                base_model=str(base),
                adapters=adapters,
                examples={t: examples / f"{t}.jsonl" for t in TASKS},
                embedder=embedder,
            )
        out.append(release)
    return out


def vllm_name(release: Path, adapter: str) -> str:
    """The name the gateway registers `adapter` of `release` under in vLLM (derived from content)."""
    from fedrouter.router.release import load_release
    from fedrouter.serving.registry import backend_adapter_name

    return backend_adapter_name(adapter, load_release(release).manifest.digests[adapter])
