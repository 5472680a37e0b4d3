import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")  # see fedrouter/cli/__init__.py


def fake_adapter(folder: Path, r: int = 8, seed: int = 0, hidden: int = 16) -> Path:
    """A PEFT LoRA folder (config + a valid safetensors file) for tests that never run the weights."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(
        json.dumps({"r": r, "lora_alpha": 2 * r, "target_modules": ["q_proj", "v_proj"], "peft_type": "LORA"})
    )
    rng = np.random.default_rng(seed)
    tensors = {}
    for module in ("q_proj", "v_proj"):
        prefix = f"base_model.model.model.layers.0.self_attn.{module}"
        tensors[f"{prefix}.lora_A.weight"] = rng.normal(size=(r, hidden)).astype(np.float32)
        tensors[f"{prefix}.lora_B.weight"] = rng.normal(size=(hidden, r)).astype(np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


@pytest.fixture
def fake_adapters(tmp_path):
    return {name: fake_adapter(tmp_path / "src" / name, seed=i) for i, name in enumerate(("math", "geo", "sentiment"))}
