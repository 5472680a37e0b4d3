import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def fake_adapter(folder: Path, r: int = 8) -> Path:
    """A PEFT-shaped folder (config + weights file) for tests that never load the weights."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(
        json.dumps({"r": r, "lora_alpha": 2 * r, "target_modules": ["q_proj", "v_proj"], "peft_type": "LORA"})
    )
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    return folder


@pytest.fixture
def fake_adapters(tmp_path):
    return {name: fake_adapter(tmp_path / "src" / name) for name in ("math", "geo", "sentiment")}
