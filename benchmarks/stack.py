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


def metric_samples(text: str, name: str) -> list[tuple[str, float]]:
    """(labels as written, `{...}`, value) of every sample of metric `name` in Prometheus text."""
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            out.append((labels[len(name) :], float(value)))
    return out


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
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d"),
    }


# Example prompts per adapter (their mean embedding is the adapter's centroid) and held-out probes.
TASKS = {
    "math": ["What is 12 plus 30?", "Compute 7 times 8.", "What is 45 minus 17?", "Add 19 and 23."],
    "geo": ["What is the capital of France?", "Which city is the capital of Japan?", "Name the capital of Canada."],
    "sentiment": ["Review: I loved this movie. Sentiment?", "Review: Boring and far too long. Sentiment?"],
}
PROBES = ["What is 14 plus 27?", "What is the capital of Germany?", "Review: An amazing film. Sentiment?"]


def bench_releases(work: Path, ids: list[str], embedder_kind: str = "sentence-transformers") -> list[Path]:
    """Releases of the default base model with random adapters for TASKS (built once, reused),
    routed with MiniLM (or `embedder_kind`, e.g. "static"). The first id gets the adapters in
    `work/adapters`; every later one draws its own weights, so a reload to it registers new adapters."""
    from benchmarks.adapters import make_adapters
    from fedrouter.router.build import build_release
    from fedrouter.router.embed import make_embedder
    from fedrouter.training.base_model import prepare_base_model

    base = prepare_base_model()
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
            first = rid == ids[0]
            build_release(
                release,
                base_model=str(base),
                adapters=make_adapters(
                    base, work / ("adapters" if first else f"adapters-{rid}"), list(TASKS), salt="" if first else rid
                ),
                examples={t: examples / f"{t}.jsonl" for t in TASKS},
                embedder=embedder,
            )
        out.append(release)
    return out


def vllm_names(release: Path) -> dict[str, str]:
    """Adapter -> the name the gateway registers it under in vLLM (derived from content)."""
    from fedrouter.router.release import load_release
    from fedrouter.serving.registry import backend_adapter_name

    return {a: backend_adapter_name(a, d) for a, d in load_release(release).manifest.digests.items()}


def vllm_name(release: Path, adapter: str) -> str:
    return vllm_names(release)[adapter]
